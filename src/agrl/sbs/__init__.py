"""Side-by-side (SBS) evaluation of two judges by people: a study file, a rating page, and its statistics.

    agrl sbs create --a runs/demo/sft/eval/eval_balanced.json --b runs/demo/agrl/eval/eval_balanced.json \
        --pairs runs/demo/data/eval_balanced.jsonl --out study.sqlite --sample 50 --agreed skip
    agrl sbs serve study.sqlite --port 8080      # raters open http://127.0.0.1:8080
    agrl sbs report study.sqlite --out study_report

study.py creates the SQLite study; store.py is its schema and every later read and write; stats.py the results
(win rate of B over A with a bootstrap interval, rater agreement, judge accuracy against raters), report.py
renders them in `agrl report`'s Markdown/HTML; app.py is the FastAPI rating page (page.html).
"""
