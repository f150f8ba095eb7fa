"""Invariants in TRL's style (tests/invariant/): configurations that must train identically, step by step.

On the tiny SFT model (some samples well-formed, so every reward term moves), same seed and data, a
few real steps: AGRL with guided replay switched off (agr_replay_share=0) reproduces GRPO-PR's loss
trajectory exactly; GRPO-PR with the dense weights at zero reproduces GRPO. A brevity reward spreads
the groups further, so the losses are not trivially zero. The trainer's advantages equal TRL's:
tests/test_trl_contract.py. The groups/* counters on a known reward column: below.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_invariants.py
"""


import math

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from agrl.core import synth
from agrl.core.rewards import REWARD_NAMES, completion_text, reward_funcs
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme
from agrl.train.agr import AGRLConfig, AGRLTrainer
from agrl.train.grpo import CountingGRPOTrainer, grpo_rows

SCHEME = load_scheme("default")
KEYS = ("loss", "grad_norm", "reward", "reward_std", "groups/all_wrong")


def brevity(completions, **kwargs) -> list[float]:
    return [-len(completion_text(c)) / 100 for c in completions]


@pytest.fixture(scope="module")
def rl_rows():
    records = synth.generate(seed=0, sizes={"sft": 0, "rl": 16, "eval_balanced": 0, "eval_wild": 0})["rl"]
    engine = RulesEngine.from_records(records, SCHEME)
    return grpo_rows(records, engine), engine


def trajectory(model_dir, tmp_path, rows, names, weights: dict, engine=None, **agr) -> tuple[list, list]:
    """(the compared values per step, every logged entry)"""
    funcs, scales = reward_funcs(names, SCHEME, weights)
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 48,
        "max_steps": 3,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "reward_weights": [*scales, 1.0],
        "disable_tqdm": True,
    }
    common = {
        "model": AutoModelForCausalLM.from_pretrained(model_dir),
        "reward_funcs": [*funcs, brevity],
        "train_dataset": Dataset.from_list(rows),
        "processing_class": AutoTokenizer.from_pretrained(model_dir),
    }
    if agr:
        trainer = AGRLTrainer(args=AGRLConfig(**settings, **agr), rules_engine=engine, scheme=SCHEME, **common)
    else:
        trainer = CountingGRPOTrainer(args=GRPOConfig(**settings), **common)
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    steps = [{k: e[k] for k in KEYS} for e in logged]
    assert len(steps) == 3 and any(s["loss"] != 0 for s in steps)
    return steps, logged


@pytest.mark.slow
def test_agrl_without_guided_replay_is_grpo_pr(sft_model_dir, tmp_path, rl_rows):
    rows, engine = rl_rows
    grpo_pr, _ = trajectory(sft_model_dir, tmp_path / "pr", rows, REWARD_NAMES, {})
    agrl, logged = trajectory(
        sft_model_dir, tmp_path / "agrl", rows, REWARD_NAMES, {}, engine, agr_replay_share=0.0
    )
    assert all("agr/flagged_share" in e and e["agr/guided_group_share"] == 0.0 for e in logged)  # AGR ran, guided none
    assert agrl == grpo_pr


@pytest.mark.slow
def test_grpo_pr_with_dense_weights_at_zero_is_grpo(sft_model_dir, tmp_path, rl_rows):
    rows, _ = rl_rows
    grpo, _ = trajectory(sft_model_dir, tmp_path / "grpo", rows, ("format_gate", "outcome"), {})
    zero, logged = trajectory(sft_model_dir, tmp_path / "pr0", rows, REWARD_NAMES, {"step": 0.0, "adherence": 0.0})
    assert any(e["rewards/step/mean"] > 0 for e in logged)  # the dense terms were scored, then weighted 0
    assert zero == grpo


def test_group_counters_from_a_known_reward_column(tiny_model_dir, tmp_path):
    """CountingGRPOTrainer's groups/* from a known outcome column as TRL logs it: 3 groups of 2 rollouts."""
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2,
                      use_cpu=True, bf16=False, report_to="none")
    funcs, _ = reward_funcs(["format_gate", "outcome"], SCHEME)
    families = ["negation", "negation", "plain", "plain", "brand", "brand"]
    inputs = [{"prompt": "p", "family": f} for f in families]
    trainer = CountingGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(inputs),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    trainer.model.train()
    trainer._logs["rewards"]["outcome"].extend([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    trainer.log_group_counters(inputs)
    logged = {k: v for k, v in trainer._metrics["train"].items() if k.startswith("groups/")}
    assert logged == {
        "groups/all_wrong": [1 / 3],  # the negation group
        "groups/all_right": [1 / 3],  # the plain group
        "groups/all_wrong_hard": [1.0],
        "groups/all_wrong_common": [0.0],
    }
    assert trainer.outcome_right == [False, False, True, True, True, False]
    trainer._logs["rewards"]["outcome"].extend([1.0] * 6)  # the next batch: every rollout right
    trainer.log_group_counters(inputs)
    assert trainer._metrics["train"]["groups/all_wrong_hard"] == [1.0, 0.0]
    assert not any(math.isnan(x) for v in trainer._metrics["train"].values() for x in v)
