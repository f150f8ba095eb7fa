"""An SBS study's results as `agrl report` blocks: Markdown, self-contained HTML (the results page), JSON.

Written as sbs.md / sbs.html / sbs.json, so OUT may be a run's report folder: the study then sits beside
report.md, which gains one link to it. Text that comes from outside (queries as strata, rater names, file
paths) is escaped for Markdown (`|` would shift a table's columns, `<b>` would render); to_html escapes
everything for HTML itself.

    agrl sbs report study.sqlite --out runs/demo/report
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

from agrl.files import atomic_write
from agrl.evaluation.report import to_html, to_markdown
from agrl.sbs.stats import MIN_ITEMS, summarize
from agrl.sbs.store import Study

LINK = "\n## Side-by-side study\n\nPeople compared two judges: [sbs.md](sbs.md) ([HTML](sbs.html)).\n"
# Markdown's marks that act inside a line; `_` only at a word's edge (snake_case paths stay readable)
MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]|~]|(?<!\w)_|_(?!\w)")


def md_escape(text: str) -> str:
    """Outside text as literal Markdown: HTML characters as entities, Markdown's marks backslashed, one line."""
    return MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), html.escape(" ".join(str(text).split()), quote=False))


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _interval(stat: dict, n: int, min_items: int) -> str:
    lo_hi = stat["interval"]
    if lo_hi is None:
        return f"– (under {min_items} items)" if 0 < n < min_items else "–"
    return f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


HEADER = ["", "items", "answers", "win rate of B", "95% interval", "GSB (G−B)", "G : S : B",
          "B better", "A better", "both good", "both bad", "adjudicated"]


def _row(name: str, block: dict, min_items: int) -> list[str]:
    c, gsb, n = block["counts"], block["gsb"], block["items"]
    return [name, str(n), str(block["answers"]), _num(block["win_rate"]["value"]),
            _interval(block["win_rate"], n, min_items), _signed(gsb["value"]),
            " : ".join(f"{gsb[k]:.2f}" for k in ("good", "same", "bad")) if n else "–",
            str(c["b"]), str(c["a"]), str(c["both_good"]), str(c["both_bad"]), str(block["adjudicated"])]


def blocks(study: Study, summary: dict, esc: Callable[[str], str] = str) -> list[tuple]:
    """The report; `esc` escapes outside text for the target (md_escape for Markdown, none for HTML)."""
    meta, prov = study.meta, study.meta["provenance"]
    settings, m = prov["settings"], summary["min_items"]
    out: list[tuple] = [
        ("h1", "Side-by-side study: judge B against judge A"),
        ("p", (f"A = {esc(meta['judges']['a'])}; B = {esc(meta['judges']['b'])}. {summary['answered_items']} of "
              f"{summary['items']} items answered, by {len(summary['raters'])} rater(s) "
              f"({', '.join(map(esc, summary['raters'])) or 'none'}); each item is asked of {study.k} "
              "rater(s).")),
        ("p", ("Win rate of B over A: B better counts 1, A better 0, both good / both bad 1/2 (a tie); "
              "0.5 is a draw. 95% percentile bootstrap interval over items "
              f"({summary['resamples']} resamples, seed {summary['seed']}); none is given for fewer than {m} "
              "items, where it would claim a certainty the data do not have. GSB: the shares of answers saying "
              "B better (Good), a tie (Same), A better (Bad), and Good − Bad (= 2 × win rate − 1). An item the "
              "lead adjudicated counts the lead's verdict instead of the raters'.")),
        ("table", HEADER, [_row("all", summary["overall"], m)]),
    ]
    if summary["strata"]:
        out += [("h2", f"By {settings['stratify']}"),
                ("table", HEADER, [_row(esc(key), block, m) for key, block in summary["strata"].items()])]
    if len(summary["judges_labels"]) > 1:
        out += [("h2", "By whether the judges' labels agree"),
                ("table", HEADER, [_row(key, block, m) for key, block in summary["judges_labels"].items()])]
    out += _gold(summary, esc)
    agreement = summary["agreement"]
    out += [("h2", "Rater agreement"),
            ("p", (f"Fleiss' kappa over the {agreement['items']} item(s) with two or more raters: "
                  f"{_num(agreement['fleiss_kappa'])}."))]
    if agreement["cohen"]:
        out.append(("table", ["raters", "shared items", "agreement", "Cohen's kappa"],
                    [[" / ".join(map(esc, p["raters"])), str(p["items"]), _num(p["agreement"]), _num(p["kappa"])]
                     for p in agreement["cohen"]]))
    accuracy = summary["accuracy"]
    out += [("h2", "Judges against the raters' labels"),
            ("p", (f"On the {accuracy['items']} item(s) where raters gave a label (the lead's adjudicated one, "
                  f"else the most common one; {accuracy['tied']} item(s) with a tie for first left out)."))]
    if accuracy["items"]:
        out.append(("table", ["judge", "accuracy", "95% interval"],
                    [[f"{side.upper()} ({esc(meta['judges'][side])})", _num(accuracy[side]["value"]),
                      _interval(accuracy[side], accuracy["items"], m)] for side in ("a", "b")]))
    out += [("h2", "Provenance"),
            ("p", (f"Created {prov['created_at']} by {esc(prov['created_by'])} with agrl {prov['agrl_version']}; "
                  f"{prov['counts']['pairs']} pairs, {prov['counts']['agreed']} with the same label from both "
                  f"judges; settings {esc(json.dumps(settings))}.")),
            ("table", ["input", "path", "sha256"],
             [[name, esc(str(path)), digest[:16]] for name, spec in prov["inputs"].items()
              for path, digest in (spec["sha256"].items() if isinstance(spec["sha256"], dict)
                                   else [(spec["path"], spec["sha256"])])])]
    return out


def _gold(summary: dict, esc: Callable[[str], str]) -> list[tuple]:
    gold = summary["gold"]
    if not gold["raters"]:
        return []
    rule = ("no threshold set (--min-gold-accuracy)" if gold["min_accuracy"] is None else
            f"raters below {gold['min_accuracy']:.2f} are left out of every number above and below: "
            f"{', '.join(map(esc, gold['left_out'])) or 'none'}")
    return [("h2", "Raters on the gold items"),
            ("p", ("Gold items have a known answer; raters see them unmarked among the others, and they count in "
                   f"no number but this one. Accuracy: the answer was the known better side; {rule}.")),
            ("table", ["rater", "gold items", "accuracy", "label accuracy", "left out"],
             [[esc(name), str(g["items"]), _num(g["accuracy"]), _num(g["label_accuracy"]),
               "yes" if name in gold["left_out"] else "no"] for name, g in gold["raters"].items()])]


def results(study: Study, resamples: int = 1000, seed: int = 0, min_items: int = MIN_ITEMS,
            min_gold_accuracy: float | None = None) -> tuple[dict, list[tuple]]:
    summary = summarize(*study.rows(), resamples=resamples, seed=seed, min_items=min_items,
                        min_gold_accuracy=min_gold_accuracy)
    return summary, blocks(study, summary)


def write_report(study_path: str | Path, out: str | Path, resamples: int = 1000, seed: int = 0,
                 min_items: int = MIN_ITEMS, min_gold_accuracy: float | None = None) -> dict:
    """Write OUT/sbs.md, OUT/sbs.html, OUT/sbs.json (and a link in OUT/report.md if there is one)."""
    study = Study(study_path)
    summary, parts = results(study, resamples, seed, min_items, min_gold_accuracy)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "sbs.md", "html": out / "sbs.html", "summary": out / "sbs.json"}
    atomic_write(paths["markdown"], to_markdown(blocks(study, summary, md_escape), out))
    atomic_write(paths["html"], to_html(parts))
    document = {"study": str(study_path)} | summary
    atomic_write(paths["summary"], json.dumps(document, indent=2) + "\n")
    run_report = out / "report.md"
    if run_report.is_file() and LINK not in run_report.read_text(encoding="utf-8"):
        atomic_write(run_report, run_report.read_text(encoding="utf-8") + LINK)
    return {"paths": paths, "summary": document, "markdown": paths["markdown"].read_text(encoding="utf-8")}
