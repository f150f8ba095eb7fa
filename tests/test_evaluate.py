"""Evaluation wiring: parsing, rules and metrics on fixed completions, then `agrl eval` on the tiny model."""

import json
import math

import pytest
from typer.testing import CliRunner

from agrl.cli import app
from agrl.data.records import Product, Record, write_jsonl
from agrl.evaluation.evaluate import judge_outputs, rejection_counts
from agrl.evaluation.metrics import summarize
from agrl.core.output import Step, render
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme

SCHEME = load_scheme("default")
NIKE = Product("Nike Pegasus 40 Running Shoe, Red", "Shoes > Running", "nike", {"color": "red"}, 89.0)
ADIDAS = Product("Adidas Ultraboost Running Shoe", "Shoes > Running", "adidas", {"color": "black"}, 120.0)
RACK = Product("Wooden Shoe Rack, 3 Tiers", "Home > Storage", "ikea", {"material": "wood"}, 35.5)
SHOES = "red nike running shoes"


def _records():
    return [
        Record(SHOES, NIKE, "r1", 4, {"category": "match", "brand": "match", "attribute.color": "match"}, "attribute"),
        Record(SHOES, ADIDAS, "r2", 2, {"category": "match", "brand": "mismatch", "attribute.color": "mismatch"},
               "brand"),
        Record("shoe rack", RACK, "r3", 4, None, "plain"),  # no steps: gold steps come from the rules engine
        Record("shoe rack", NIKE, "r4", 1, {"category": "mismatch"}, "accessory"),
    ]


def test_fixed_completions_through_parser_rules_and_metrics():
    records = _records()
    engine = RulesEngine.from_records(records, scheme=SCHEME)
    completions = [
        engine.teacher_reasoning(records[0]),  # right label, gold steps, adherent
        # the gold verdicts of r2 (a violation) but label 4: wrong, steps right, not adherent
        render(4, [Step("category", "match"), Step("brand", "mismatch"), Step("attribute.color", "mismatch")]),
        "the product is fine",  # rejected: no label
        render(1, [Step("category", "mismatch")]),  # right, adherent
    ]
    posteriors = [
        {4: 0.9, 3: 0.05, 2: 0.03, 1: 0.02},  # shoes: r1 (gold 4) above r2 (gold 2) -> NDCG 1
        {4: 0.1, 3: 0.1, 2: 0.7, 1: 0.1},
        {4: 0.1, 3: 0.1, 2: 0.1, 1: 0.7},  # rack: r3 (gold 4) below r4 (gold 1) -> reversed
        {4: 0.7, 3: 0.1, 2: 0.1, 1: 0.1},
    ]
    preds, rows = judge_outputs(records, completions, posteriors, SCHEME, engine)
    assert [p.pred for p in preds] == [4, 4, None, 1]
    assert [p.adheres for p in preds] == [True, False, None, True]
    assert [p.step_accuracy for p in preds] == [1.0, 1.0, None, 1.0]
    assert [row["correct"] for row in rows] == [True, False, False, True]
    assert rows[2]["reject_reason"] == "no label" and rows[2]["completion"] == "the product is fine"
    assert rejection_counts(rows) == {"no label": 1}
    assert rows[0]["expected_relevance"] == pytest.approx(4 * 0.9 + 3 * 0.05 + 2 * 0.03 + 0.02)

    metrics = summarize(preds, SCHEME, resamples=20)["metrics"]
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["format_valid"] == pytest.approx(0.75)
    assert metrics["adherence"] == pytest.approx(2 / 3)
    assert metrics["step_accuracy"] == pytest.approx(1.0)
    # gains (gold - 1): shoes 3,1 in order -> 1; rack: gain 0 first, gain 3 second -> 3/log2(3) / 3
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_wrong_step_verdict_lowers_step_accuracy():
    records = _records()[:1]
    engine = RulesEngine.from_records(records, scheme=SCHEME)
    # brand wrong, color missing: one of the three gold steps reproduced
    text = render(4, [Step("category", "match"), Step("brand", "mismatch")])
    preds, _ = judge_outputs(records, [text], None, SCHEME, engine)
    assert preds[0].step_accuracy == pytest.approx(1 / 3)
    assert preds[0].posterior is None


def test_agrl_eval_on_tiny_model(tiny_model_dir, tmp_path):
    data = tmp_path / "eval.jsonl"
    write_jsonl(_records(), data)
    out = tmp_path / "eval" / "balanced.json"
    predictions = tmp_path / "preds.jsonl"
    result = CliRunner().invoke(app, [
        "eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
        "--predictions", str(predictions), "--batch-size", "3", "--max-new-tokens", "12", "--resamples", "20",
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 4 and metrics["model"] == str(tiny_model_dir) and metrics["data"] == str(data)
    assert metrics["date"] and metrics["settings"]["max_new_tokens"] == 12
    expected = {"accuracy", "macro_f1", "good_f1", "format_valid", "adherence", "step_accuracy",
                "posterior_accuracy", "ece", "ndcg@10"}
    assert set(metrics["metrics"]) == expected == set(metrics["intervals"])
    assert metrics["metrics"]["ece"] is not None and metrics["metrics"]["ndcg@10"] is not None
    assert metrics["counts"]["with_posterior"] == 4  # the prefill posterior ran for every record
    assert set(metrics["slices"]) == {"attribute", "brand", "plain", "accessory"}
    assert len(metrics["confusion"]["matrix"]) == 4
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["r1", "r2", "r3", "r4"]  # one row per input record, in order
    assert all(abs(sum(row["posterior"].values()) - 1) < 1e-4 for row in rows)


def test_eval_limit_and_unlabelled_records(tmp_path):
    from agrl.evaluation.evaluate import load_eval_records

    data = tmp_path / "eval.jsonl"
    records = _records()
    records[1].label = None
    write_jsonl(records, data)
    assert len(load_eval_records(data, SCHEME, limit=1)) == 1  # the unlabelled row is past the limit
    with pytest.raises(ValueError, match="record 2 .id r2.: label: is required"):
        load_eval_records(data, SCHEME)


def test_eval_takes_the_rules_the_run_trained_with(tmp_path):
    # adherence at evaluation must be scored under the training rules: config.yaml's rules_config
    from agrl.evaluation.evaluate import trained_rules

    assert trained_rules(tmp_path) is None  # not an agrl run: the default rules
    (tmp_path / "config.yaml").write_text("method: grpo\nrules_config: my_rules.yaml\n")
    assert trained_rules(tmp_path) == "my_rules.yaml"


def test_agrl_eval_reports_rmse_and_spearman_when_records_carry_a_grade(tiny_model_dir, tmp_path):
    """The importers keep the human mean grade; eval measures expected relevance against it."""
    import numpy as np

    data = tmp_path / "graded.jsonl"
    grades = [3.67, 2.0, 3.33, 1.0]
    write_jsonl([r.to_dict() | {"grade": g} for r, g in zip(_records(), grades)], data)
    out = tmp_path / "graded.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                                      "--batch-size", "4", "--max-new-tokens", "8", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    rows = [json.loads(line) for line in out.with_suffix(".predictions.jsonl").read_text().splitlines()]
    score = np.array([row["expected_relevance"] for row in rows])
    assert metrics["metrics"]["rmse"] == pytest.approx(float(np.sqrt(np.mean((score - grades) ** 2))))
    assert metrics["metrics"]["spearman"] is not None and metrics["intervals"]["rmse"] is not None
    assert "rmse" in result.output and "spearman" in result.output
