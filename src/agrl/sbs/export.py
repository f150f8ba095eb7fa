"""Every answer of an SBS study as JSONL or CSV, one row per rater and item, for analysis elsewhere.

Fields: study, item_id, pair_id, rater, shown_left (the judge shown on the left: a or b), choice (as the
rater saw it: left, right, both_good, both_bad), verdict (in the judges' terms: a, b, both_good, both_bad),
label, comment, latency_ms (from the item shown to the answer, measured by the page; empty when sent
without), gold (a gold item or not), gold_better (its known answer, judge terms), at (UTC).

    agrl sbs export study.sqlite --out answers.csv
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from agrl.errors import UserError
from agrl.files import atomic_write
from agrl.sbs.store import Study

FIELDS = ("study", "item_id", "pair_id", "rater", "shown_left", "choice", "verdict", "label", "comment",
          "latency_ms", "gold", "gold_better", "at")
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def answer_rows(study: Study) -> list[dict]:
    items, answers = study.rows()
    by_id = {item["id"]: item for item in items}
    name = Path(study.path).name
    out = []
    for answer in answers:
        item = by_id[answer["item_id"]]
        out.append({"study": name, "item_id": item["id"], "pair_id": item["pair_id"], "rater": answer["rater"],
                    "shown_left": "b" if item["flipped"] else "a", "choice": answer["choice"],
                    "verdict": answer["verdict"], "label": answer["label"], "comment": answer["comment"],
                    "latency_ms": answer["latency_ms"], "gold": item["gold"] is not None,
                    "gold_better": item["gold"]["better"] if item["gold"] else None, "at": answer["at"]})
    return out


def render(study: Study, fmt: str, rows: list[dict] | None = None) -> str:
    rows = answer_rows(study) if rows is None else rows
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_export(study_path: str | Path, out: str | Path, fmt: str | None = None) -> int:
    """Write OUT (format from --format, else OUT's suffix); return the number of answers."""
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"--out {out}: format {fmt!r} is not one of {', '.join(FORMATS)}; "
                        "name the file .jsonl or .csv, or pass --format")
    study = Study(study_path)
    rows = answer_rows(study)
    atomic_write(out, render(study, fmt, rows))
    return len(rows)
