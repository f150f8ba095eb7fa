"""The method study's statistics (agrl.evaluation.metrics: pooled over seeds, the paired bootstrap) and its report
script (bench/study.py) reading both the committed result files and an `agrl run` results.json."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from agrl.evaluation.metrics import paired_difference, seed_table
from agrl.data.schemes import load_scheme

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("study", ROOT / "bench" / "study.py")
study = sys.modules.setdefault("study", importlib.util.module_from_spec(SPEC))
SPEC.loader.exec_module(study)
SCHEME = load_scheme("default")


def _cols(pred: list[int]) -> dict:
    gold = [1, 2, 3, 4] * (len(pred) // 4)
    return {"gold": gold, "pred": pred, "family": ["brand"] * len(pred), "adheres": [1] * len(pred),
            "step_accuracy": [1.0] * len(pred)}


def test_paired_difference_is_zero_for_identical_runs_and_covers_a_real_gap():
    gold = [1, 2, 3, 4] * 50
    rng = np.random.default_rng(0)
    good = [_cols([g if rng.random() < 0.9 else 1 for g in gold]) for _ in range(3)]
    bad = [_cols([g if rng.random() < 0.5 else 1 for g in gold]) for _ in range(3)]
    same = paired_difference(good, good, "macro_f1", SCHEME, 200)
    assert same["delta"] == 0 and same["interval"] == [0.0, 0.0]
    gap = paired_difference(good, bad, "macro_f1", SCHEME, 200)
    assert gap["interval"][0] > 0.1 and gap["interval"][0] <= gap["delta"] <= gap["interval"][1]


def test_the_committed_study_gives_the_readmes_cells():
    """The library's pooled cells over the committed per-run files are docs/results.md's (mean ±std; the
    interval needs the full bootstrap, which bench/study.py runs)."""
    runs, choices, _ = study.read_files(study.RESULTS)
    groups = study.by_method(runs, choices)
    assert set(groups) == {"sft", *study.METHODS} and all(len(rs) == 3 for rs in groups.values())
    row = study.table({"agrl": groups["agrl"]}, "eval_balanced", 0)["agrl"]["macro_f1"]
    assert (round(100 * row["mean"], 1), round(100 * row["std"], 1), row["interval"]) == (73.2, 1.1, None)
    pooled = seed_table({"grpo": [r["eval"]["eval_wild"]["columns"] for r in groups["grpo"]]}, SCHEME, 0)
    assert round(100 * pooled["grpo"]["macro_f1"]["mean"], 1) == 72.4


def test_an_agrl_run_results_file_reads_as_the_studys_runs(tmp_path):
    """read_results maps the recipe's stages onto the study's phases and methods."""
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": f"r{i}", "gold": g, "family": "brand", "pred": g, "adheres": True,
                                         "step_accuracy": 1.0}) + "\n" for i, g in enumerate([1, 2, 3, 4])))
    evals = {"eval_balanced": {"metrics": {"macro_f1": 1.0}, "predictions": str(preds)}}

    def row(name, stage, seed, method, model, sweep=False, **keys):
        return {"name": name, "stage": stage, "seed": seed, "sweep": sweep, "dir": f"out/{name}",
                "config": {"method": method, "model": model, "learning_rate": 2e-4, "max_steps": 100,
                           "num_generations": 4, "per_device_train_batch_size": 32, **keys},
                "evals": evals, "curve": {"20": {"macro_f1": 0.5}, "100": {"macro_f1": 0.6}},
                "cost": {f"train {name}": {"wall_s": 5.0, "cpu_s": 5.0}}, "counters": {}}

    body = {"choices": {"grpo": {"learning_rate": 2e-4}}, "resamples": 50, "runs": [
        row("sft-s0", "sft", 0, "sft", "out/model"),
        row("grpo-learning_rate=0.0002-s0", "grpo", 0, "grpo", "out/sft-s0"),
        row("grpo-learning_rate=2e-05-s0", "grpo", 0, "grpo", "out/sft-s0", sweep=True, learning_rate=2e-5),
        row("stability_grpo-s0", "stability_grpo", 0, "grpo", "out/sft-s0"),
        row("immediate_agrl-s0", "immediate_agrl", 0, "agrl", "out/sft-s0", agr_mode="immediate"),
        row("sft_guided-s0", "sft_guided", 0, "sft", "out/model", sft_guided_share=0.3),
        row("agrl_guided-s0", "agrl_guided", 0, "agrl", "out/sft_guided-s0")]}
    (tmp_path / "results.json").write_text(json.dumps(body))
    runs, choices, s = study.read_results(tmp_path / "results.json")
    phases = {r["name"]: (r["phase"], r["sets"], r["sft"]) for r in runs}
    assert phases["grpo-learning_rate=0.0002-s0"] == ("sweep", {}, {})
    assert phases["stability_grpo-s0"][0] == "stability"
    assert phases["immediate_agrl-s0"] == ("immediate", {"agr_mode": "immediate"}, {})
    assert phases["sft_guided-s0"] == ("main", {"sft_guided_share": 0.3}, {})
    assert phases["agrl_guided-s0"] == ("variant", {}, {"sft_guided_share": 0.3})
    assert choices == {"grpo": 2e-4} and s.steps == 100 and s.prompts == 8 and s.seeds == [0]
    assert next(r for r in runs if r["method"] == "sft" and not r["sets"])["curve"] == {"0": {
        "macro_f1": 0.6, "accuracy": None, "format_valid": None, "adherence": None}}
    assert study.by_method(runs, choices)["grpo"][0]["name"] == "grpo-learning_rate=0.0002-s0"
