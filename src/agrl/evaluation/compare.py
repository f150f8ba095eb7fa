"""`agrl compare`: judges and baselines side by side on the same labelled pairs, against references.

Each THING gives every pair of --data a label and an expected relevance: a model or adapter directory
(scored here with the prefill Scorer of score.py), a fitted baseline (`agrl baseline fit`'s file,
predicted through baselines.predict), or a file of rows by id (`agrl score`, `agrl baseline predict`
or `agrl eval`'s predictions). Two reference rows sit beside them: the class prior (labels drawn at
random with the prior's shares, expected relevance the prior's mean) and always-majority. Per row:
macro-F1, accuracy, Good-F1, where the records carry a grade RMSE and Spearman of expected relevance
against it, and NDCG@10 of expected relevance per query (as `agrl eval`), each with a 95% bootstrap interval; then each row minus a
reference row (a baseline by default) on the same resamples (paired), with its interval. A judge or
baseline that is not above both references on a metric gets a plain warning line.
Writes OUT/compare.md, OUT/compare.json and OUT/compare.png.

    result = compare(["runs/mine", "bm25=runs/bm25.joblib"], "hd/test.jsonl", "runs/cmp")
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agrl import __version__
from agrl.data.records import Record, grade_of
from agrl.errors import UserError
from agrl.files import atomic_write, empty_dir, read_jsonl_tolerant
from agrl.evaluation.metrics import (
    INVALID,
    accuracy,
    good_f1,
    macro_f1,
    ndcg_at_k,
    percentile_interval,
    resamples_of,
    rmse,
    spearman,
)
from agrl.data.schemes import Scheme

LABEL_METRICS = ("macro_f1", "accuracy", "good_f1")
GRADED_METRICS = ("rmse", "spearman")
LOWER_IS_BETTER = {"rmse"}
NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy", "good_f1": "Good-F1", "rmse": "RMSE",
         "spearman": "Spearman", "ndcg@10": "NDCG@10"}
PRIOR, MAJORITY = "class prior", "always majority"


@dataclass
class Row:
    """One compared row: a label (INVALID: none) and an expected relevance (NaN: none) per pair."""

    name: str
    kind: str  # judge, baseline, scores (a file of rows), reference
    source: str
    pred: np.ndarray
    score: np.ndarray


# ---------------------------------------------------------------------------- what is compared


def parse_thing(spec: str) -> tuple[str, str]:
    """NAME=PATH names a row; a bare PATH is named by its file or folder name."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        if not name or not path:
            raise UserError(f"{spec}: give PATH or NAME=PATH")
        return name, path
    return Path(spec).stem if Path(spec).is_file() else Path(spec).name, spec


def judge_row(name: str, path: str, records: list[Record], scheme: Scheme, batch_size: int,
              device: str | None) -> Row:
    """A model or adapter directory, scored here with the prefill Scorer (one forward pass per pair)."""
    from agrl.evaluation.evaluate import label_posteriors
    from agrl.files import model_dir
    from agrl.evaluation.metrics import expected_relevance, top_label
    from agrl.model.score import Scorer, check_model_scheme

    model_dir(path, name)
    check_model_scheme(path, scheme)
    posteriors = label_posteriors(Scorer(path, scheme=scheme, batch_size=batch_size, device=device), records)
    return Row(name, "judge", path, np.array([top_label(p)[0] for p in posteriors]),
               np.array([expected_relevance(p) for p in posteriors]))


def baseline_row(name: str, path: str, records: list[Record], scheme: Scheme) -> Row:
    from agrl.evaluation import baselines
    from agrl.data.records import same_scheme

    fitted = baselines.load(path)
    if not same_scheme(fitted["scheme"], scheme.name):
        raise UserError(f"{path}: fitted on scheme {fitted['scheme']!r}, but the pairs are in scheme "
                        f"{scheme.name!r}; fit a baseline on this scheme")
    rows = baselines.predict(fitted, records)
    return Row(name, "baseline", path, np.array([r["label"] for r in rows]), np.array([r["score"] for r in rows]))


def file_row(name: str, path: str, records: list[Record], scheme: Scheme) -> Row:
    """Rows by id: `agrl score` / `agrl baseline predict` (label, score) or `agrl eval` predictions (pred,
    expected_relevance when it read the posterior). Every pair of the data must have its row."""
    rows = {row.get("id"): row for row in read_jsonl_tolerant(path) if isinstance(row, dict)}
    missing = [r.id for r in records if r.id not in rows]
    if missing:
        raise UserError(f"{path}: no row for {len(missing)} of the {len(records)} pairs compared (e.g. id "
                        f"{missing[0]!r}); score every pair of --data (`agrl score --input DATA`)")
    pred, score = [], []
    for record in records:
        row = rows[record.id]
        label = row["label"] if "label" in row else row.get("pred")
        if label is not None and label not in scheme.codes:
            raise UserError(f"{path}: id {record.id!r}: label {label!r} is not a level of scheme {scheme.name!r}")
        pred.append(INVALID if label is None else int(label))
        value = row.get("score", row.get("expected_relevance"))
        score.append(float(value) if isinstance(value, (int, float)) else np.nan)
    return Row(name, "scores", path, np.array(pred), np.array(score))


def load_row(spec: str, records: list[Record], scheme: Scheme, batch_size: int = 32,
             device: str | None = None) -> Row:
    name, path = parse_thing(spec)
    target = Path(path)
    if target.is_dir():
        return judge_row(name, path, records, scheme, batch_size, device)
    if not target.is_file():
        raise UserError(f"{path}: no such model directory, baseline model or scores file")
    with target.open("rb") as handle:
        head = handle.read(1).lstrip()
    if head and head in b"{[":
        return file_row(name, path, records, scheme)
    return baseline_row(name, path, records, scheme)  # joblib: anything else is refused by baselines.load


def reference_rows(records: list[Record], prior_records: list[Record], scheme: Scheme, seed: int) -> list[Row]:
    """The class prior of `prior_records` (random labels with its shares; its mean as expected relevance)
    and always its majority label: what any judge must beat."""
    counts = Counter(r.label for r in prior_records)
    codes = list(scheme.codes)
    shares = np.array([counts[c] for c in codes], dtype=float) / sum(counts.values())
    majority = max(codes, key=lambda c: (counts[c], c))
    n = len(records)
    drawn = np.random.default_rng(seed).choice(codes, size=n, p=shares)
    mean = float(np.dot(codes, shares))
    return [Row(PRIOR, "reference", "", drawn, np.full(n, mean)),
            Row(f"always {scheme.name_of(majority)}", "reference", "", np.full(n, majority), np.full(n, float(majority)))]


# ---------------------------------------------------------------------------- metrics, paired


class Table:
    """The pairs' gold, grades and query groups once; every row's metrics over the same resamples."""

    def __init__(self, records: list[Record], scheme: Scheme, resamples: int, seed: int):
        self.scheme = scheme
        self.gold = np.array([r.label for r in records])
        grades = [grade_of(r) for r in records]
        self.grade = np.array(grades, dtype=float) if grades and None not in grades else None
        queries: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            queries.setdefault(record.query, []).append(index)
        self.groups = [np.array(v) for v in queries.values() if len(v) > 1]
        self.record_draws = list(resamples_of(len(records), resamples, seed))
        self.query_draws = list(resamples_of(len(self.groups), resamples, seed + 1))
        self.metrics = LABEL_METRICS + (GRADED_METRICS if self.grade is not None else ()) + ("ndcg@10",)

    def record_metrics(self, row: Row, index) -> dict[str, float | None]:
        gold, pred = self.gold[index], row.pred[index]
        out = {"macro_f1": macro_f1(gold, pred, self.scheme.codes), "accuracy": accuracy(gold, pred),
               "good_f1": good_f1(gold, pred, self.scheme.good)}
        if self.grade is not None:
            score, grade = row.score[index], self.grade[index]
            ok = ~np.isnan(score)
            out |= {"rmse": rmse(score[ok], grade[ok]) if ok.all() else None,
                    "spearman": spearman(score[ok], grade[ok]) if ok.all() else None}
        return out

    def query_ndcg(self, row: Row) -> np.ndarray:
        """NDCG@10 of each query with 2+ pairs, ranked by expected relevance, gain = gold code - the lowest
        (as `agrl eval` computes it); NaN where the ideal DCG is 0 or a score is missing."""
        gains = self.gold - min(self.scheme.codes)
        values = []
        for group in self.groups:
            score = row.score[group]
            value = None if np.isnan(score).any() else ndcg_at_k(gains[group], score, 10)
            values.append(np.nan if value is None else value)
        return np.array(values)

    def evaluate(self, rows: list[Row]) -> dict[str, dict]:
        """name -> {metric: {"value", "interval"}} and the per-resample values kept for the differences."""
        out = {}
        for row in rows:
            point = self.record_metrics(row, slice(None))
            draws = [self.record_metrics(row, i) for i in self.record_draws]
            ndcg = self.query_ndcg(row)
            point["ndcg@10"] = _mean(ndcg)
            ndcg_draws = [_mean(ndcg[i]) for i in self.query_draws]
            cells = {}
            for metric in self.metrics:
                values = ndcg_draws if metric == "ndcg@10" else [d.get(metric) for d in draws]
                interval = percentile_interval([v for v in values if v is not None])
                cells[metric] = {"value": point.get(metric), "interval": list(interval) if interval else None,
                                 "_draws": values}
            out[row.name] = cells
        return out


def _mean(values: np.ndarray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if len(kept) else None


def differences(cells: dict[str, dict], reference: str, metrics: tuple[str, ...]) -> dict[str, dict]:
    """Each row minus the reference, per metric, with the interval of the paired resample differences."""
    out = {}
    for name, row in cells.items():
        if name == reference:
            continue
        out[name] = {}
        for metric in metrics:
            a, b = row[metric], cells[reference][metric]
            if a["value"] is None or b["value"] is None:
                out[name][metric] = {"delta": None, "interval": None}
                continue
            deltas = [x - y for x, y in zip(a["_draws"], b["_draws"]) if x is not None and y is not None]
            interval = percentile_interval(deltas)
            out[name][metric] = {"delta": a["value"] - b["value"], "interval": list(interval) if interval else None}
    return out


def warnings(rows: list[Row], cells: dict[str, dict], metrics: tuple[str, ...]) -> dict[str, list[dict]]:
    """name -> the metrics on which a judge or baseline is not above the best reference row (metric,
    value, reference, reference_value)."""
    references = [r.name for r in rows if r.kind == "reference"]
    out = {}
    for row in rows:
        if row.kind == "reference":
            continue
        notes = []
        for metric in metrics:
            value = cells[row.name][metric]["value"]
            known = [(cells[r][metric]["value"], r) for r in references if cells[r][metric]["value"] is not None]
            if value is None or not known:
                continue
            lower = metric in LOWER_IS_BETTER
            best, by = min(known) if lower else max(known)
            if (value >= best) if lower else (value <= best):
                notes.append({"metric": metric, "value": value, "reference": by, "reference_value": best})
        if notes:
            out[row.name] = notes
    return out


# ---------------------------------------------------------------------------- the command


def prepare(things: list[str], data: str, out: str, scheme: str | None, prior: str | None, limit: int | None,
            resamples: int, batch_size: int, device: str | None, force: bool
            ) -> tuple[Scheme, list[Record], list[Record] | None]:
    """`agrl compare`'s checks (the counts, the data, OUT distinct from every input and empty, the device),
    then --data's labelled records in its scheme (data.resolve_scheme) and --prior's labelled ones."""
    from agrl.data.records import check_source, load_records, resolve_scheme
    from agrl.data.schemes import load_scheme
    from agrl.evaluation.evaluate import load_eval_records
    from agrl.files import distinct, positive
    from agrl.model.load import check_device

    positive(limit, "--limit")
    positive(batch_size, "--batch-size")
    positive(resamples, "--resamples")
    check_source(data, probe=True)
    distinct({"--out": out}, {"--data": data, "--prior": prior} | {f"THING {t}": t for t in things})
    empty_dir(out, "compare", force)
    check_device(device)
    label_scheme = load_scheme(resolve_scheme(data, scheme))
    records = load_eval_records(data, label_scheme, limit)
    prior_records = None
    if prior is not None:
        check_source(prior, probe=True)
        prior_records = [r for r in load_records(prior, load_scheme(resolve_scheme(prior, label_scheme.name)))
                         if r.label is not None]
        if not prior_records:
            raise UserError(f"--prior {prior}: no labelled records")
    return label_scheme, records, prior_records


def compare(things: list[str], data: str | Path, out: str | Path, scheme: Scheme, records: list[Record],
            prior_records: list[Record] | None = None, reference: str | None = None, resamples: int = 1000,
            seed: int = 0, batch_size: int = 32, device: str | None = None, force: bool = False,
            command: str = "") -> dict:
    """Evaluate every THING and the reference rows on `records`; write OUT/compare.{md,json,png}."""
    empty_dir(out, "compare", force)
    rows = [load_row(spec, records, scheme, batch_size, device) for spec in things]
    names = Counter(r.name for r in rows)
    if dupes := [n for n, c in names.items() if c > 1]:
        raise UserError(f"{dupes[0]!r} names two of the compared things; name them apart with NAME=PATH")
    rows += reference_rows(records, prior_records or records, scheme, seed)
    reference = reference or next((r.name for r in rows if r.kind == "baseline"), PRIOR)
    if reference not in {r.name for r in rows}:
        raise UserError(f"--reference {reference}: not a compared row; one of {[r.name for r in rows]}")
    table = Table(records, scheme, resamples, seed)
    cells = table.evaluate(rows)
    result = {
        "data": str(data), "n": len(records), "scheme": scheme.name, "queries_ranked": len(table.groups),
        "graded": table.grade is not None, "prior_from": "train" if prior_records else "data",
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "agrl_version": __version__,
        "command": command, "resamples": resamples, "seed": seed, "reference": reference,
        "metrics": list(table.metrics),
        "rows": [{"name": r.name, "kind": r.kind, "source": r.source,
                  "label_share": {str(c): round(float(np.mean(r.pred == c)), 4) for c in scheme.codes},
                  "metrics": {m: {k: v for k, v in cell.items() if k != "_draws"} for m, cell in cells[r.name].items()}}
                 for r in rows],
        "differences": differences(cells, reference, table.metrics),
        "warnings": warnings(rows, cells, table.metrics),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write(out / "compare.md", to_markdown(result))
    plot(result, out / "compare.png")
    return result


def _cell(cell: dict, signed: bool = False) -> str:
    value, interval = cell.get("value", cell.get("delta")), cell["interval"]
    if value is None:
        return "–"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    text = fmt.format(value)
    return text + (f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]" if interval else "")


def to_markdown(result: dict) -> str:
    metrics = result["metrics"]
    header = " | ".join(NAMES[m] + (" (lower is better)" if m in LOWER_IS_BETTER else "") for m in metrics)
    lines = [f"# Compared on {result['data']} ({result['n']:,} pairs, scheme {result['scheme']})", "",
             f"Cells: value [95% bootstrap interval, {result['resamples']} resamples: pairs; NDCG@10: queries, "
             f"{result['queries_ranked']:,} with 2+ pairs]."
             + (" RMSE and Spearman: expected relevance against the records' grade." if result["graded"] else ""),
             "", f"| row | kind | {header} |", "|---|---|" + "---|" * len(metrics)]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | {row['kind']} | "
                     + " | ".join(_cell(row["metrics"][m]) for m in metrics) + " |")
    lines += ["", f"Paired differences, row minus {result['reference']} (same resamples):", "",
              f"| row | {' | '.join(NAMES[m] for m in metrics)} |", "|---|" + "---|" * len(metrics)]
    for name, diff in result["differences"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(diff[m], signed=True) for m in metrics) + " |")
    prior = "the training pairs" if result["prior_from"] == "train" else "these pairs (pass --prior TRAIN for the training pairs')"
    lines += ["", (f"References: the class prior of {prior} (labels drawn at random in its shares, its mean as "
              "expected relevance) and always its majority label; Spearman of a constant score is 0.")]
    if result["warnings"]:
        lines += ["", "Warnings:", ""]
        lines += [f"- **{name} is not above the references** on " + "; ".join(
            f"{NAMES[n['metric']]} {n['value']:.3f} vs {n['reference']} {n['reference_value']:.3f}" for n in notes)
            for name, notes in result["warnings"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """One panel per metric: each row's value with its interval; references grey, warnings red."""
    from matplotlib.figure import Figure  # the OO API: no pyplot state, renders with Agg

    metrics, rows = result["metrics"], result["rows"]
    figure = Figure(figsize=(4.2 * min(3, len(metrics)), 0.45 * len(rows) * ((len(metrics) + 2) // 3) + 1.6))
    axes = figure.subplots((len(metrics) + 2) // 3, min(3, len(metrics)), squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for y, row in enumerate(rows):
            cell = row["metrics"][metric]
            if cell["value"] is None:
                continue
            flagged = any(n["metric"] == metric for n in result["warnings"].get(row["name"], ()))
            color = "0.6" if row["kind"] == "reference" else "tab:red" if flagged else "tab:blue"
            lo, hi = cell["interval"] or (cell["value"], cell["value"])
            ax.errorbar(cell["value"], y, xerr=[[cell["value"] - lo], [hi - cell["value"]]], fmt="o", color=color, capsize=3)
        ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
        ax.invert_yaxis()
        ax.set_title(NAMES[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    figure.suptitle(f"{Path(result['data']).name}: {result['n']:,} pairs (95% intervals; red: not above the references)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
