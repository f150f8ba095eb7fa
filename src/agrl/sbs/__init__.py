"""Side-by-side (SBS) evaluation of two judges by people: a study file, a rating page, and its statistics.

    agrl sbs create --a runs/demo/sft/eval/eval_balanced.json --b runs/demo/agrl/eval/eval_balanced.json \
        --pairs runs/demo/data/eval_balanced.jsonl --out study.sqlite --sample 50 --agreed skip --gold gold.jsonl
    agrl sbs serve study.sqlite --rater ana --rater bo --port 8080   # prints a link per rater and the lead's
    agrl sbs report study.sqlite --out study_report
    agrl sbs export study.sqlite --out answers.csv

study.py creates the SQLite study (gold items mixed in); store.py is its schema and every later read and
write (raters' tokens, answers, undo, adjudication, the event log); stats.py the results (win rate and GSB
of B over A with a bootstrap interval, rater agreement and gold accuracy, judge accuracy against raters),
report.py renders them in `agrl report`'s Markdown/HTML; export.py writes every answer as JSONL/CSV; app.py
is the FastAPI page (page.html: the rater's view and the lead's), with a token per person.
"""
