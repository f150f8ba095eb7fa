"""Create an SBS study: two judges' outputs on the same pairs, sampled into items, in one SQLite file.

`create` reads the pairs and each judge's outputs (an `agrl eval` JSON or its predictions JSONL, an
`agrl score` JSONL, or a model directory, which is scored here in one pass: label and score, no
reasoning), samples items with a seed (stratified by a field when asked; pairs where the judges give
the same label kept, skipped, or kept with probability w and counted 1/w), randomises which judge is
shown on the left, mixes in gold items (pairs with a known answer) at a set share, records the
provenance, and writes the file (store.py: its schema and later use).

    create("a.json", "b.json", "pairs.jsonl", "study.sqlite", sample=50, agreed="skip")
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import platform
import random
import sqlite3
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agrl import __version__
from agrl.data.records import (
    BadRow,
    BadRowsError,
    Record,
    RowError,
    check_data_scheme,
    iter_rows,
    parse_record,
    resolve_scheme,
)
from agrl.errors import UserError
from agrl.files import input_file
from agrl.sbs.store import FORMAT, SCHEMA, VERDICTS
from agrl.data.schemes import Scheme, load_scheme

STRATA = ("family", "query", "disagreement")
AGREED = ("keep", "skip", "down-weight")


@dataclass(frozen=True)
class Output:
    """One judge's output on one pair: the label (None when its completion was rejected), its name,
    the reasoning where there is one, and the expected relevance where there is one."""

    label: int | None
    label_name: str
    reasoning: str | None = None
    score: float | None = None


# ---------------------------------------------------------------------------- reading the inputs


def read_pairs(path: str | Path, scheme: Scheme) -> dict[str, Record]:
    """Pair id -> record, in file order. Ids are the rows' own, else `agrl score`'s content hash."""
    from agrl.model.score import row_id  # lazily: agrl.model.score imports torch

    path = input_file(path, "--pairs")
    check_data_scheme(path, scheme)
    pairs: dict[str, Record] = {}
    bad: list[BadRow] = []
    for line, raw in iter_rows(path):
        try:
            if isinstance(raw, RowError):
                raise raw
            record = parse_record(raw, scheme)
        except RowError as err:
            bad.append(BadRow(str(path), line, err.field, err.message))
            continue
        pid = row_id(raw, line)
        if pid in pairs:
            bad.append(BadRow(str(path), line, "id", f"{pid!r} repeats an earlier row's id"))
        pairs[pid] = record
    if bad:
        raise BadRowsError(bad)
    if not pairs:
        raise UserError(f"{path}: no pairs")
    return pairs


def _reasoning(completion: str) -> str:
    """The think block of a completion, else the whole completion (what the judge wrote, trimmed)."""
    start, end = completion.find("<think>"), completion.rfind("</think>")
    text = completion[start + len("<think>") : end] if 0 <= start < end else completion
    return text.strip()


def _row_output(row: dict, scheme: Scheme, where: str) -> Output:
    """An `agrl eval` prediction row (pred + completion) or an `agrl score` row (label + score)."""
    if "completion" in row or "pred" in row:
        label, reason = row.get("pred"), row.get("reject_reason")
        text, score = row.get("completion"), row.get("expected_relevance")
    elif "label" in row:
        label, reason, text, score = row["label"], None, None, row.get("score")
    else:
        raise UserError(f"{where}: neither an `agrl eval` prediction (pred) nor an `agrl score` result (label)")
    if label is not None and (isinstance(label, bool) or label not in scheme.codes):
        raise UserError(f"{where}: label: {label!r} is not a code of scheme {scheme.name} {list(scheme.codes)}")
    if text is not None and not isinstance(text, str):
        raise UserError(f"{where}: completion: must be a string")
    field = "expected_relevance" if "completion" in row or "pred" in row else "score"
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise UserError(f"{where}: {field}: must be a number, got {score!r}")
    if score is not None and not math.isfinite(score):  # JSON NaN / 1e400: shown as "null" otherwise
        raise UserError(f"{where}: {field}: {score!r} is not a finite number")
    name = scheme.name_of(label) if label is not None else f"invalid output ({reason or 'rejected'})"
    return Output(label, name, _reasoning(text) if text else None, None if score is None else float(score))


def _rows_file(path: Path) -> Path:
    """An `agrl eval` JSON names its predictions JSONL: as written, else beside the JSON."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: not JSON; give an `agrl eval` JSON, its predictions JSONL or a score JSONL") from None
    named = result.get("predictions") if isinstance(result, dict) else None
    if not isinstance(named, str):
        raise UserError(f"{path}: names no predictions file; is it an `agrl eval` output?")
    for candidate in (Path(named), path.with_suffix(".predictions.jsonl"), path.parent / Path(named).name):
        if candidate.is_file():
            return candidate
    raise UserError(f"{path}: its predictions file {named} is missing (also not beside it)")


def read_judge(source: str | Path, pairs: dict[str, Record], scheme: Scheme, option: str) -> tuple[dict, dict]:
    """(pair id -> Output, provenance) for one judge; UserError naming the file and the ids that differ."""
    path = Path(source)
    if path.is_dir():
        return _score_model(path, pairs, scheme, option)
    path = input_file(path, option)
    rows_path = _rows_file(path) if path.suffix == ".json" else path
    _judged_in(path, scheme, option)
    outputs: dict[str, Output] = {}
    for line, raw in iter_rows(rows_path):
        where = f"{rows_path}:{line}"
        if isinstance(raw, RowError) or not isinstance(raw, dict):
            raise UserError(f"{where}: not a JSON object")
        pid = raw.get("id")
        if pid is None or isinstance(pid, bool) or not isinstance(pid, (str, int)):
            raise UserError(f"{where}: id: missing; the judge's rows must carry the pairs' ids")
        pid = str(pid)
        if pid in outputs:
            raise UserError(f"{where}: id: {pid!r} repeats an earlier row")
        if pid in pairs and isinstance(raw.get("query"), str) and raw["query"] != pairs[pid].query:
            raise UserError(f"{where}: query: {raw['query']!r} is not the query of pair {pid!r} in the pairs file")
        outputs[pid] = _row_output(raw, scheme, where)
    same_pairs(rows_path, outputs, pairs)
    kind = "eval" if any(o.reasoning is not None for o in outputs.values()) else "score"
    files = [path] + ([rows_path] if rows_path != path else [])
    return outputs, {"path": str(path), "kind": kind, "sha256": {str(f): sha256(f) for f in files}}


def _judged_in(path: Path, scheme: Scheme, option: str) -> None:
    """Refuse a judge's file made under a scheme with other codes than the pairs' (what `agrl eval` writes in
    its JSON, `agrl score` beside its output): its labels would be read as another scheme's."""
    from agrl.model.score import made_by_path

    record = path if path.suffix == ".json" else made_by_path(path)
    try:
        said = json.loads(record.read_text()).get("scheme") if record.is_file() else None
    except (OSError, ValueError, AttributeError):
        said = None
    if isinstance(said, str) and said != scheme.name and _codes(said) not in (None, scheme.codes):
        raise UserError(f"{option} {path}: judged in scheme {said!r} ({record.name} says so), the pairs are in "
                        f"scheme {scheme.name!r}; run a judge trained on {scheme.name!r} on the pairs")


def _codes(name: str):
    try:
        return load_scheme(name).codes
    except UserError:
        return None


def same_pairs(path: Path, outputs: dict, pairs: dict) -> None:
    missing = [pid for pid in pairs if pid not in outputs]
    extra = [pid for pid in outputs if pid not in pairs]
    if missing:
        raise UserError(f"{path}: lacks {len(missing)} of the {len(pairs)} pairs (ids {_few(missing)}); "
                        "run both judges on the --pairs file")
    if extra:
        raise UserError(f"{path}: holds {len(extra)} ids that are not in the pairs file (ids {_few(extra)}); "
                        "both judges must be run on the same pairs")


def _few(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _score_model(path: Path, pairs: dict[str, Record], scheme: Scheme, option: str) -> tuple[dict, dict]:
    """Produce a judge's outputs by running it: the one-pass prefill posterior (label and score)."""
    from agrl.files import model_dir
    from agrl.model.score import Scorer

    model_dir(path, option)
    scorer = Scorer(path, scheme)
    results = scorer.score(list(pairs.values()))
    outputs = {pid: Output(r.label, scheme.name_of(r.label), None, r.score) for pid, r in zip(pairs, results)}
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".json", ".bin"))
    return outputs, {"path": str(path), "kind": "model", "sha256": {str(f): sha256(f) for f in weights}}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_gold(path: str | Path, records: dict[str, Record], outputs: tuple[dict, dict], scheme: Scheme) -> dict:
    """Pair id -> {"better": a|b|both_good|both_bad, "label": code or None} from a gold file: rows with
    the `id` of a pair in --pairs and `better` (the judge known to be right, in judge terms), `label`
    (the right label; the better side then follows from the judges' labels), or both."""
    path = input_file(path, "--gold")
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        raise UserError(f"--gold {path}: give a JSONL file (labels as numbers, which CSV cannot say)")
    gold: dict[str, dict] = {}
    for line, raw in iter_rows(path):
        where = f"{path}:{line}"
        if isinstance(raw, RowError) or not isinstance(raw, dict):
            raise UserError(f"{where}: not a JSON object")
        pid = raw.get("id")
        pid = None if pid is None or isinstance(pid, bool) else str(pid)
        if pid not in records:
            raise UserError(f"{where}: id: {raw.get('id')!r} is not a pair of the --pairs file")
        if pid in gold:
            raise UserError(f"{where}: id: {pid!r} repeats an earlier row")
        label, better = raw.get("label"), raw.get("better")
        if label is not None and (isinstance(label, bool) or label not in scheme.codes):
            raise UserError(f"{where}: label: {label!r} is not a code of scheme {scheme.name} {list(scheme.codes)}")
        if better is not None and better not in VERDICTS:
            raise UserError(f"{where}: better: {better!r} is not one of {', '.join(VERDICTS)}")
        if better is None and label is None:
            raise UserError(f"{where}: better, label: give the known better side, the right label, or both")
        if better is None:
            a_right, b_right = outputs[0][pid].label == label, outputs[1][pid].label == label
            better = ("both_good" if a_right else "both_bad") if a_right == b_right else ("a" if a_right else "b")
        gold[pid] = {"better": better, "label": label}
    if not gold:
        raise UserError(f"{path}: no gold rows")
    return gold


def check_show(show: list[str] | None, products: list[dict]) -> list[str] | None:
    """--show: fields that some product has, in the order given."""
    if not show:
        return None
    known = {key for product in products for key in product}
    for name in show:
        if name not in known:
            raise UserError(f"--show {','.join(show)}: no product has a field {name!r}; "
                            f"they have {', '.join(sorted(known))}")
    return show


# ---------------------------------------------------------------------------- sampling


def stratum_of(record: Record, agree: bool, by: str | None) -> str | None:
    if by == "family":
        return record.family or "(none)"
    if by == "query":
        return record.query
    if by == "disagreement":
        return "same label" if agree else "different labels"
    return None


def sample_ids(strata: dict[str, str | None], sample: int | None, rng: random.Random) -> list[str]:
    """`sample` ids drawn without replacement, allocated to strata in proportion (largest remainder)."""
    ids = list(strata)
    if sample is None or sample >= len(ids):
        return ids
    groups: dict[str | None, list[str]] = defaultdict(list)
    for pid in ids:
        groups[strata[pid]].append(pid)
    quotas = {key: sample * len(members) / len(ids) for key, members in groups.items()}
    counts = {key: int(q) for key, q in quotas.items()}
    by_remainder = sorted(groups, key=lambda key: (-(quotas[key] - counts[key]), str(key)))
    for key in by_remainder[: sample - sum(counts.values())]:
        counts[key] += 1
    return [pid for key, members in groups.items() for pid in rng.sample(members, counts[key])]


def create(
    a: str | Path,
    b: str | Path,
    pairs: str | Path,
    out: str | Path,
    sample: int | None = None,
    seed: int = 0,
    stratify: str | None = None,
    agreed: str = "keep",
    agreed_weight: float = 0.25,
    raters_per_item: int = 1,
    scheme: str | None = None,
    force: bool = False,
    gold: str | Path | None = None,
    gold_share: float = 0.1,
    show: list[str] | None = None,
) -> dict:
    """Write a study file; return its summary (items, agreed pairs, gold items). Nothing is written on error.

    `gold`: a file of pairs with a known answer (read_gold), mixed in unmarked at `gold_share` of the
    items and open to every rater; `show`: the product fields raters see (default: all but identifiers)."""
    if stratify not in (None, *STRATA):
        raise UserError(f"--stratify {stratify}: must be one of {', '.join(STRATA)}")
    if agreed not in AGREED:
        raise UserError(f"--agreed {agreed}: must be one of {', '.join(AGREED)}")
    if not 0 < agreed_weight <= 1:
        raise UserError(f"--agreed-weight {agreed_weight}: must be in (0, 1]")
    if sample is not None and sample < 1 or raters_per_item < 1:
        raise UserError("--sample and --raters-per-item must be >= 1")
    if not 0 < gold_share < 1:
        raise UserError(f"--gold-share {gold_share}: must be in (0, 1)")
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"--out {out}: exists; pass --force to replace it, or choose another")
    for option, path in (("--a", a), ("--b", b), ("--pairs", pairs)):
        if Path(path).exists() and out.exists() and out.resolve() == Path(path).resolve():
            raise UserError(f"--out {out} is also {option}: it would be overwritten; choose another path")
    label_scheme = load_scheme(resolve_scheme(pairs, scheme))  # the pairs' manifest.json, else --scheme
    records = read_pairs(pairs, label_scheme)
    out_a, prov_a = read_judge(a, records, label_scheme, "--a")
    out_b, prov_b = read_judge(b, records, label_scheme, "--b")
    known = read_gold(gold, records, (out_a, out_b), label_scheme) if gold else {}
    rng = random.Random(seed)
    agree = {pid: out_a[pid].label == out_b[pid].label for pid in records}
    kept = {pid: 1.0 for pid in records if not agree[pid]}
    for pid in records:  # in file order, so the draws depend on the seed only
        if agree[pid] and (agreed == "keep" or agreed == "down-weight" and rng.random() < agreed_weight):
            kept[pid] = 1.0 if agreed == "keep" else 1 / agreed_weight
    kept = {pid: kept[pid] for pid in records if pid in kept}
    # Gold items first, from the gold file: gold_share of what raters see (g / (n + g)), at least one. The
    # gold file's other pairs stay ordinary candidates (a labelled set may serve as both).
    n_regular = min(sample, len(kept)) if sample else len(kept)
    n_gold = min(len(known), max(1, round(gold_share * n_regular / (1 - gold_share)))) if known else 0
    gold_ids = rng.sample(list(known), n_gold)
    kept = {pid: weight for pid, weight in kept.items() if pid not in set(gold_ids)}
    if not kept:
        raise UserError(f"the two judges agree on all {len(records)} pairs (gold items aside): nothing to "
                        "compare (--agreed keep)")
    strata = {pid: stratum_of(records[pid], agree[pid], stratify) for pid in kept}
    chosen = sample_ids(strata, sample, rng) + gold_ids
    rng.shuffle(chosen)  # raters see the items in a random order, gold ones among them, unmarked
    rows = []
    for pid in chosen:
        record, flipped = records[pid], rng.random() < 0.5
        product = record.to_dict()["product"]
        rows.append((pid, record.query, json.dumps(product, ensure_ascii=False), strata.get(pid),
                     kept.get(pid, 1.0), int(agree[pid]), int(flipped), _dump(out_a[pid]), _dump(out_b[pid]),
                     json.dumps(known[pid]) if pid in gold_ids else None))
    show = check_show(show, [json.loads(row[2]) for row in rows])
    pairs_path = input_file(pairs, "--pairs")
    provenance = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "created_by": f"{getpass.getuser()}@{platform.node()}",
        "agrl_version": __version__,
        "command": sys.argv,
        "cwd": os.getcwd(),
        "inputs": {"a": prov_a, "b": prov_b, "pairs": {"path": str(pairs), "sha256": sha256(pairs_path)}},
        "settings": {"sample": sample, "seed": seed, "stratify": stratify, "agreed": agreed,
                     "agreed_weight": agreed_weight if agreed == "down-weight" else None,
                     "raters_per_item": raters_per_item, "scheme": label_scheme.name,
                     "gold_share": gold_share if gold else None, "show": show},
        "counts": {"pairs": len(records), "agreed": sum(agree.values()), "items": len(rows), "gold": n_gold},
    }
    if gold:
        provenance["inputs"]["gold"] = {"path": str(gold), "sha256": sha256(input_file(gold, "--gold"))}
    meta = {
        "format": FORMAT,
        "provenance": provenance,
        "judges": {"a": str(a), "b": str(b)},
        "raters_per_item": raters_per_item,
        "scheme": {"name": label_scheme.name, "levels": [[lv.code, lv.name] for lv in label_scheme.levels]},
        "show": show,
    }
    _write(out, meta, rows)
    return provenance["counts"]


def _dump(output: Output) -> str:
    return json.dumps(output.__dict__, ensure_ascii=False)


def _write(out: Path, meta: dict, rows: list[tuple]) -> None:
    """Build the study in a temporary file beside OUT and rename it over OUT: all or nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(tmp)
        with db:
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            db.executemany("INSERT INTO items (pair_id, query, product, stratum, weight, agree, flipped, a, b, gold) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection is in WAL mode
        db.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
