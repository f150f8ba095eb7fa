"""bench/study.py's decisions: the learning-rate choice, what a rerun skips, the paired bootstrap."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location("study", Path(__file__).parent.parent / "bench" / "study.py")
study = sys.modules.setdefault("study", importlib.util.module_from_spec(SPEC))
SPEC.loader.exec_module(study)


def _result(results: Path, run, final: float, eval_cols: dict | None = None) -> None:
    body = {"name": run.name, "phase": run.phase, "method": run.method, "seed": run.seed, "lr": run.lr,
            "sets": dict(run.sets), "curve": {"20": {"macro_f1": 0.0}, "100": {"macro_f1": final}}}
    if eval_cols is not None:
        body["eval"] = {split: {"metrics": {}, "columns": eval_cols} for split in study.SPLITS}
    (results / f"{run.name}.json").write_text(json.dumps(body))


def test_choose_takes_the_best_final_validation_score_and_the_lower_rate_on_a_tie(tmp_path):
    s = study.Settings()
    finals = {"grpo": (0.5, 0.7, 0.6), "agrl": (0.6, 0.6, 0.4)}
    for method in study.METHODS:
        for lr, final in zip(s.lrs, finals.get(method, (0.1, 0.2, 0.3))):
            _result(tmp_path, study.Run("sweep", method, 0, lr), final)
    choices = study.choose(tmp_path, s)
    assert choices["grpo"] == s.lrs[1] and choices["agrl"] == s.lrs[0] and choices["dpo"] == s.lrs[2]
    assert json.loads((tmp_path / "choices.json").read_text()) == choices


def test_choose_refuses_an_unfinished_sweep(tmp_path):
    _result(tmp_path, study.Run("sweep", "grpo", 0, 2e-5), 0.5)
    with pytest.raises(SystemExit, match="not finished"):
        study.choose(tmp_path, study.Settings())


def test_a_sweep_result_without_eval_sets_is_redone_only_where_a_table_needs_it(tmp_path):
    run = study.Run("sweep", "grpo", 0, 6e-5)
    _result(tmp_path, run, 0.5)
    assert study.done(run, tmp_path, eval_sets=False) and not study.done(run, tmp_path, eval_sets=True)
    assert not study.eval_sets(run, [run]) and study.eval_sets(run, [run, study.Run("main", "grpo", 1, 6e-5)])
    variant = study.Run("variant", "agrl", 0, 6e-5, sft=(("sft_guided_share", 0.3),))
    assert not study.eval_sets(variant, [variant]) and study.eval_sets(variant, [variant, study.Run("vseeds", "agrl", 1, 6e-5)])
    assert variant.start.name == "sft-sft_guided_share=0.3-s0"


def _cols(pred: list[int]) -> dict:
    gold = [1, 2, 3, 4] * (len(pred) // 4)
    return {"gold": gold, "pred": pred, "family": ["brand"] * len(pred), "adheres": [1] * len(pred),
            "step_accuracy": [1.0] * len(pred)}


def test_paired_difference_is_zero_for_identical_runs_and_covers_a_real_gap():
    gold = [1, 2, 3, 4] * 50
    rng = np.random.default_rng(0)
    good = [{"eval": {"eval_wild": {"columns": _cols([g if rng.random() < 0.9 else 1 for g in gold])}}}
            for _ in range(3)]
    bad = [{"eval": {"eval_wild": {"columns": _cols([g if rng.random() < 0.5 else 1 for g in gold])}}}
           for _ in range(3)]
    same = study.difference(good, good, "eval_wild", "macro_f1", 200)
    assert same["delta"] == 0 and same["interval"] == [0.0, 0.0]
    gap = study.difference(good, bad, "eval_wild", "macro_f1", 200)
    assert gap["interval"][0] > 0.1 and gap["interval"][0] <= gap["delta"] <= gap["interval"][1]
