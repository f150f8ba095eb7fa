"""How often the rules' label agrees with human labels: per class, per kind of evidence, above the
confidence threshold that decides which verdicts serve as gold steps (rules config gold_step_confidence).

    agrl data agreement data/hd/train.jsonl --scheme three_level
    report = agreement(records, RulesEngine.from_records(records, scheme)); print(agreement_table(report))
"""

from __future__ import annotations

from collections import Counter, defaultdict

from agrl.data.records import Record
from agrl.core.rules import RulesEngine


def agreement(records: list[Record], engine: RulesEngine) -> dict:
    """Counts and shares (JSON-ready): per human class, per least-confident evidence kind, above the threshold."""
    labelled = [r for r in records if r.label is not None]
    threshold = engine.gold_step_confidence
    per_class: dict[int, Counter] = defaultdict(Counter)
    per_kind: dict[str, Counter] = defaultdict(Counter)
    confusion: Counter = Counter()
    above = Counter()
    scored: list[tuple[float, bool]] = []
    for record in labelled:
        verdict, confidence, kind = engine.assess(record)
        hit = verdict.label == record.label
        per_class[record.label].update(n=1, agree=hit)
        confusion[(record.label, verdict.label)] += 1
        per_kind[kind or "fields"].update(n=1, agree=hit)
        scored.append((confidence, hit))
        if confidence >= threshold:
            above.update(n=1, agree=hit)
    n = len(labelled)
    agree = sum(c["agree"] for c in per_class.values())
    codes = engine.scheme.codes
    return {
        "n": n,
        "agreement": agree / n if n else None,
        "per_class": {str(c): _share(per_class[c]) | {"name": engine.scheme.name_of(c)} for c in codes},
        "rules_label_share": {str(c): sum(v for (_, p), v in confusion.items() if p == c) / n if n else None
                              for c in codes},
        "confusion": {"rows_human_columns_rules": [[confusion[(g, p)] for p in codes] for g in codes],
                      "labels": list(codes)},
        "per_evidence": {kind: _share(count) for kind, count in sorted(per_kind.items())},
        "gold_step_confidence": threshold,
        "above_threshold": {"share": above["n"] / n if n else None, **_share(above)},
        "by_threshold": {f"{t:g}": _above(scored, t) for t in THRESHOLDS},
    }


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _above(scored: list[tuple[float, bool]], threshold: float) -> dict:
    hits = [hit for confidence, hit in scored if confidence >= threshold]
    return {"share": len(hits) / len(scored) if scored else None,
            "agreement": sum(hits) / len(hits) if hits else None}


def _share(count: Counter) -> dict:
    return {"n": count["n"], "agreement": count["agree"] / count["n"] if count["n"] else None}


def agreement_table(report: dict) -> str:
    """The report as plain text: one row per human class, then per evidence kind, then the threshold line."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    lines = [f"{'human label':<16}{'pairs':>8}{'agree':>8}{'rules say':>11}"]
    for code, row in reversed(list(report["per_class"].items())):
        lines.append(f"{code + ' ' + row['name']:<16}{row['n']:>8}{fmt(row['agreement']):>8}"
                     f"{fmt(report['rules_label_share'][code]):>11}")
    lines.append(f"{'all':<16}{report['n']:>8}{fmt(report['agreement']):>8}")
    lines.append("")
    lines.append(f"{'least confident evidence':<26}{'pairs':>8}{'agree':>8}")
    for kind, row in report["per_evidence"].items():
        lines.append(f"{kind:<26}{row['n']:>8}{fmt(row['agreement']):>8}")
    above = report["above_threshold"]
    lines.append("")
    lines.append("confidence >= " + ", ".join(f"{t}: {fmt(row['share'])} of pairs at {fmt(row['agreement'])}"
                                               for t, row in report["by_threshold"].items()))
    lines.append(f"confidence >= {report['gold_step_confidence']:g} (gold steps): {fmt(above['share'])} of pairs, "
                 f"agreement {fmt(above['agreement'])}")
    return "\n".join(lines)


def file_agreement(file: str, scheme: str | None, rules: str | None, out: str | None) -> dict:
    """`agrl data agreement`: FILE checked (readable, not empty, --out distinct and writable), read in its
    scheme (data.resolve_scheme); the agreement report of its labelled records, also written to `out`."""
    import json

    from agrl.data.records import check_not_empty, check_source, load_records, resolve_scheme
    from agrl.data.schemes import load_scheme
    from agrl.errors import UserError
    from agrl.files import atomic_write, distinct, output_file

    check_source(file, probe=True)
    check_not_empty(file)
    distinct({"--out": out}, {"FILE": file, "--rules": rules})
    if out:
        output_file(out, "--out")
    scheme = resolve_scheme(file, scheme)
    records = load_records(file, load_scheme(scheme))
    if not any(r.label is not None for r in records):
        raise UserError(f"{file}: no labelled records; agreement compares the rules' label with each record's label")
    report = agreement(records, RulesEngine.from_records(records, load_scheme(scheme), rules))
    if out:
        atomic_write(out, json.dumps(report, indent=2) + "\n")
    return report
