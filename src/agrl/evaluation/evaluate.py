"""Evaluate a checkpoint on a labelled split: predictions JSONL + a metrics JSON (spec section 7).

Greedy generation of label + reasoning (prompt.prompt_text -> models.generate), parsed by the one
strict parser: a rejected completion is wrong and invalid. Rule adherence and step accuracy use the
rules engine (the same code as the dense rewards); ECE and NDCG@10 use the one-pass label posterior
of score.Scorer. Metrics come from metrics.summarize, with per-family slices and bootstrap intervals.
The JSON: model, data, scheme, n, date, agrl_version, predictions, settings, metrics, intervals,
per_class_f1, confusion, counts, slices, rejections (metrics.summarize documents the middle keys).

    agrl eval --model runs/agrl --data data/eval_balanced.jsonl --out runs/agrl/eval/balanced.json
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from agrl import __version__
from agrl.model import load as models
from agrl.data.records import Record, check_source, grade_of, load_records, resolve_scheme, write_jsonl
from agrl.errors import UserError
from agrl.files import atomic_write, distinct, model_dir, output_file, positive, trained_with
from agrl.evaluation.metrics import Prediction, expected_relevance, summarize
from agrl.core.output import LABEL_OPEN, Rejected
from agrl.progress import progress
from agrl.core.prompt import prompt_text
from agrl.core.rewards import grade
from agrl.core.rules import RulesEngine
from agrl.core.rules import load_config as load_rules
from agrl.data.schemes import DEFAULT, Scheme, load_scheme
from agrl.model.score import Scorer, check_model_scheme


def judge_outputs(
    records: list[Record],
    completions: list[str],
    posteriors: list[dict[int, float]] | None,
    scheme: Scheme,
    engine: RulesEngine,
) -> tuple[list[Prediction], list[dict]]:
    """Parse each completion and pair it with its record: (metric inputs, prediction rows for JSONL).

    Graded by rewards.grade (the dense rewards' own path) against `engine.gold_steps(record)` (the
    record's own steps when it has them) under the engine's decision table.
    """
    assert len(records) == len(completions), "one completion per record"
    preds: list[Prediction] = []
    rows: list[dict] = []
    for index, (record, text) in enumerate(zip(records, completions)):
        posterior = posteriors[index] if posteriors is not None else None
        graded = grade(text, record.label, scheme, engine.table, engine.gold_steps(record) or None)
        pred = Prediction(
            gold=record.label,
            pred=graded.parsed.label if graded.valid else None,
            id=record.id,
            query=record.query,
            family=record.family,
            adheres=graded.adheres,
            step_accuracy=graded.step_accuracy,
            posterior=posterior,
            grade=grade_of(record),
        )
        preds.append(pred)
        rows.append(_row(pred, text, None if graded.valid else graded.parsed))
    return preds, rows


def _row(pred: Prediction, completion: str, rejected: Rejected | None) -> dict:
    row = {
        "id": pred.id,
        "query": pred.query,
        "family": pred.family,
        "gold": pred.gold,
        "pred": pred.pred,
        "correct": pred.pred == pred.gold,
        "valid": pred.pred is not None,
        "reject_reason": rejected and rejected.reason,
        "reject_kind": rejected and rejected.kind,
        "adheres": pred.adheres,
        "step_accuracy": pred.step_accuracy,
    }
    if pred.posterior is not None:
        row["posterior"] = {str(code): p for code, p in pred.posterior.items()}
        row["expected_relevance"] = expected_relevance(pred.posterior)
    return row | {"completion": completion}


def rejection_counts(rows: list[dict]) -> dict[str, int]:
    """Rejections by the parser's kind ("unknown label '7'" counts as "unknown label")."""
    return dict(Counter(row["reject_kind"] for row in rows if row["reject_kind"]).most_common())


def generate_completions(
    model, tokenizer, records: list[Record], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy completions in input order (models.generate batches by prompt length) with progress (a bar, or log lines)."""
    prompts = [prompt_text(record, tokenizer) for record in records]
    with progress("generate", total=len(prompts)) as advance:
        texts = models.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                on_batch=advance)
    return [completions[0] for completions in texts]


def label_posteriors(scorer: Scorer, records: list[Record], show: bool = True) -> list[dict[int, float]]:
    """The one-pass prefill posterior of each record, batched, with progress (a bar, or log lines)."""
    out: list[dict[int, float]] = []
    with progress("score", total=len(records), enabled=show) as advance:
        for start in range(0, len(records), scorer.batch_size):
            chunk = records[start : start + scorer.batch_size]
            out.extend(scorer.posteriors(chunk))
            advance(len(chunk))
    return out


def load_eval_records(data: str | Path, scheme: Scheme, limit: int | None = None) -> list[Record]:
    """Labelled records of a split (first `limit`); UserError naming the first row without a label."""
    records = load_records(data, scheme)
    if limit is not None:
        records = records[:limit]
    for index, record in enumerate(records, start=1):
        if record.label is None:
            raise UserError(f"{data}: record {index} (id {record.id}): label: is required for evaluation; "
                            "label the file with `agrl data label`")
    if not records:
        raise UserError(f"{data}: no records to evaluate")
    return records


def check_lengths(model: str | Path, records: list[Record], data: str | Path) -> None:
    """Refuse, before the weights load and anything is generated, a record whose prompt (with the `<label>`
    the posterior is read after) does not fit the model's context; only the tokenizer and config are read."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(models.adapter_base(model) if models.is_adapter(model) else str(model))
    context = getattr(config, "max_position_embeddings", None)
    if not context:
        return
    tokenizer = models.load_tokenizer(model)
    texts = [prompt_text(r, tokenizer) + LABEL_OPEN for r in records]
    for index, (record, ids) in enumerate(zip(records, tokenizer(texts, add_special_tokens=False)["input_ids"]), 1):
        if len(ids) > context:
            raise UserError(f"{data}: record {index} (id {record.id}): prompt is {len(ids)} tokens, over the model's "
                            f"context of {context}; shorten its text or drop the record")


def predictions_path(out: str | Path, predictions: str | Path | None) -> Path:
    """Where the predictions JSONL goes: given, or OUT with the suffix `.predictions.jsonl`."""
    return Path(predictions) if predictions else Path(out).with_suffix(".predictions.jsonl")


def trained_rules(model_dir: str | Path) -> str | None:
    """The `rules_config` the model's run trained with (its config.yaml), None for the default rules."""
    return trained_with(model_dir, "rules_config")


def preflight(model: str, data: str, out: str, predictions: str | None, scheme: str | None, batch_size: int,
              max_new_tokens: int, limit: int | None, resamples: int, device: str | None, rules: str | None) -> str:
    """`agrl eval`'s checks, before the model loads: the counts, the data, the output paths, the scheme
    (data.resolve_scheme: --scheme, the data's manifest, the model's run), the model, the device and a
    rules file. Returns the scheme's name."""
    for value, name in ((batch_size, "--batch-size"), (max_new_tokens, "--max-new-tokens"), (limit, "--limit")):
        positive(value, name)
    positive(resamples, "--resamples", zero_ok=True)
    check_source(data, probe=True)
    distinct({"--out": out, "--predictions": predictions_path(out, predictions)}, {"--data": data, "--model": model})
    scheme = resolve_scheme(data, scheme, model)
    load_scheme(scheme)
    model_dir(model)
    models.check_device(device)
    if rules is not None:
        load_rules(rules)  # a bad file fails here, before the model loads
    return scheme


def evaluate(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    predictions: str | Path | None = None,
    scheme: str = DEFAULT,
    batch_size: int = 32,
    max_new_tokens: int = 160,
    limit: int | None = None,
    resamples: int = 1000,
    seed: int = 0,
    posterior: bool = True,
    device: str | None = None,
    rules_config: str | None = None,
) -> dict:
    """Run a checkpoint over a labelled file; write the metrics JSON (and predictions JSONL); return the JSON.

    `predictions` defaults to OUT with the suffix `.predictions.jsonl`; `rules_config` (adherence, step
    accuracy) defaults to the rules the model's run trained with, else the default rules.
    """
    rules_config = rules_config or trained_rules(model)
    label_scheme = load_scheme(scheme)
    out = Path(out)
    predictions = predictions_path(out, predictions)
    distinct({"out": out, "predictions": predictions}, {"data": data, "model": model})
    output_file(out, "--out")  # checked now, not after an hour of generation
    output_file(predictions, "--predictions")
    records = load_eval_records(data, label_scheme, limit)
    check_model_scheme(model, label_scheme)
    check_lengths(model, records, data)
    loaded = models.load(model, device=device)
    completions = generate_completions(*loaded, records, batch_size, max_new_tokens)
    posteriors = label_posteriors(Scorer(loaded, label_scheme, batch_size), records) if posterior else None
    engine = RulesEngine.from_records(records, scheme=label_scheme, config=rules_config)
    preds, rows = judge_outputs(records, completions, posteriors, label_scheme, engine)
    result = {
        "model": str(model),
        "data": str(data),
        "scheme": label_scheme.name,
        "n": len(records),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "agrl_version": __version__,
        "predictions": str(predictions),
        "settings": {
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "limit": limit,
            "resamples": resamples,
            "seed": seed,
            "decoding": "greedy",
            "posterior": posterior,
            "rules_config": rules_config,
        },
        **summarize(preds, label_scheme, resamples=resamples, seed=seed),
        "rejections": rejection_counts(rows),
    }
    write_jsonl(rows, predictions)
    atomic_write(out, json.dumps(result, indent=2) + "\n")
    return result


def summary_table(result: dict) -> Table:
    """The headline metrics of an eval JSON with their intervals, for the console."""
    table = Table(title=f"{result['model']} on {result['data']} (n={result['n']})")
    for column in ("metric", "value", "95% interval"):
        table.add_column(column)
    for name, value in result["metrics"].items():
        interval = result["intervals"].get(name)
        table.add_row(
            name,
            "–" if value is None else f"{value:.3f}",
            "–" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
        )
    return table
