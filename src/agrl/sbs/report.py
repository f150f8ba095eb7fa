"""An SBS study's results as `agrl report` blocks: Markdown, self-contained HTML (the results page), JSON.

Written as sbs.md / sbs.html / sbs.json, so OUT may be a run's report folder: the study then sits beside
report.md, which gains one link to it.

    agrl sbs report study.sqlite --out runs/demo/report
"""

from __future__ import annotations

import json
from pathlib import Path

from agrl.files import atomic_write
from agrl.report import to_html, to_markdown
from agrl.sbs.stats import summarize
from agrl.sbs.store import Study

LINK = "\n## Side-by-side study\n\nPeople compared two judges: [sbs.md](sbs.md) ([HTML](sbs.html)).\n"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _interval(stat: dict) -> str:
    lo_hi = stat["interval"]
    return "–" if lo_hi is None else f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"


def _row(name: str, block: dict) -> list[str]:
    c = block["counts"]
    return [name, str(block["items"]), str(block["answers"]), _num(block["win_rate"]["value"]),
            _interval(block["win_rate"]), str(c["b"]), str(c["a"]), str(c["both_good"]), str(c["both_bad"])]


HEADER = ["", "items", "answers", "win rate of B", "95% interval", "B better", "A better", "both good", "both bad"]


def blocks(study: Study, summary: dict) -> list[tuple]:
    meta, prov = study.meta, study.meta["provenance"]
    settings = prov["settings"]
    out: list[tuple] = [
        ("h1", "Side-by-side study: judge B against judge A"),
        ("p", (f"A = {meta['judges']['a']}; B = {meta['judges']['b']}. {summary['answered_items']} of "
              f"{summary['items']} items answered, by {len(summary['raters'])} rater(s) "
              f"({', '.join(summary['raters']) or 'none yet'}); each item is asked of {study.k} rater(s).")),
        ("p", ("Win rate of B over A: B better counts 1, A better 0, both good / both bad 1/2 (a tie); "
              "0.5 is a draw. 95% percentile bootstrap interval over items "
              f"({summary['resamples']} resamples, seed {summary['seed']}).")),
        ("table", HEADER, [_row("all", summary["overall"])]),
    ]
    if summary["strata"]:
        out += [("h2", f"By {settings['stratify']}"),
                ("table", HEADER, [_row(key, block) for key, block in summary["strata"].items()])]
    agreement = summary["agreement"]
    out += [("h2", "Rater agreement"),
            ("p", (f"Fleiss' kappa over the {agreement['items']} item(s) with two or more raters: "
                  f"{_num(agreement['fleiss_kappa'])}."))]
    if agreement["cohen"]:
        out.append(("table", ["raters", "shared items", "agreement", "Cohen's kappa"],
                    [[" / ".join(p["raters"]), str(p["items"]), _num(p["agreement"]), _num(p["kappa"])]
                     for p in agreement["cohen"]]))
    accuracy = summary["accuracy"]
    out += [("h2", "Judges against the raters' labels"),
            ("p", (f"On the {accuracy['items']} item(s) where raters gave a label (the most common one; "
                  f"{accuracy['tied']} item(s) with a tie for first left out)."))]
    if accuracy["items"]:
        out.append(("table", ["judge", "accuracy", "95% interval"],
                    [[f"{side.upper()} ({meta['judges'][side]})", _num(accuracy[side]["value"]),
                      _interval(accuracy[side])] for side in ("a", "b")]))
    out += [("h2", "Provenance"),
            ("p", (f"Created {prov['created_at']} by {prov['created_by']} with agrl {prov['agrl_version']}; "
                  f"{prov['counts']['pairs']} pairs, {prov['counts']['agreed']} with the same label from both "
                  f"judges; settings {json.dumps(settings)}.")),
            ("table", ["input", "path", "sha256"],
             [[name, str(path), digest[:16]] for name, spec in prov["inputs"].items()
              for path, digest in (spec["sha256"].items() if isinstance(spec["sha256"], dict)
                                   else [(spec["path"], spec["sha256"])])])]
    return out


def results(study: Study, resamples: int = 1000, seed: int = 0) -> tuple[dict, list[tuple]]:
    summary = summarize(*study.rows(), resamples=resamples, seed=seed)
    return summary, blocks(study, summary)


def write_report(study_path: str | Path, out: str | Path, resamples: int = 1000, seed: int = 0) -> dict:
    """Write OUT/sbs.md, OUT/sbs.html, OUT/sbs.json (and a link in OUT/report.md if there is one)."""
    study = Study(study_path)
    summary, parts = results(study, resamples, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "sbs.md", "html": out / "sbs.html", "summary": out / "sbs.json"}
    atomic_write(paths["markdown"], to_markdown(parts, out))
    atomic_write(paths["html"], to_html(parts))
    atomic_write(paths["summary"], json.dumps({"study": str(study_path)} | summary, indent=2) + "\n")
    run_report = out / "report.md"
    if run_report.is_file() and LINK not in run_report.read_text(encoding="utf-8"):
        atomic_write(run_report, run_report.read_text(encoding="utf-8") + LINK)
    return {"paths": paths, "summary": summary, "markdown": paths["markdown"].read_text(encoding="utf-8")}
