"""The training methods: each a preset of a TRL config class, a trainer and a reward list, in one table.

The one place a method name becomes a trainer: `agrl train` reads a config's keys into the method's
config class (config.py) and `train_stage` builds and runs its trainer. A new method of an existing
trainer is one line in METHODS; a new reward term is one entry in agrl.core.rewards.REWARDS.

    grpo          GRPO (outcome reward behind the format gate)
    grpo_dynamic  GRPO dropping groups whose rollouts all score the same (TaoSR1/DAPO)
    grpo_pr       GRPO with Rule-aware Reward Shaping (+ step, adherence)
    agr_only      Adaptive Guided Replay with the outcome reward
    agrl          AGR + Rule-aware Reward Shaping
    grpo_anchored GRPO + the SFT anchor: each step also takes SFT's loss, weighted `sft_anchor` (train/anchor.py)
    agrl_anchored AGRL + the SFT anchor

An anchored method requires `sft_anchor` > 0 (no default weight: it is chosen on validation, as a
learning rate is), and only an anchored method takes one, so a run's method names what it trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import TrainerState
from trl import DPOConfig, GRPOConfig, GRPOTrainer, SFTConfig

from agrl.core.rewards import probe_rewards, reward_funcs
from agrl.train import dpo, sft
from agrl.train.agr import AGRLConfig, AGRLTrainer
from agrl.train.agr_immediate import ImmediateAGRLTrainer
from agrl.train.args import RunArgs
from agrl.train.common import fit, setup
from agrl.train.grpo import CountingGRPOTrainer, DynamicSamplingGRPOTrainer, grpo_rows
from agrl.train.lora import starting_model

OUTCOME = ("format_gate", "outcome")
SHAPED = (*OUTCOME, "step", "adherence")  # Rule-aware Reward Shaping (spec section 5)


@dataclass(frozen=True)
class Method:
    config: type  # the TRL config class the run's keys are read into
    trainer: type | None = None  # GRPO family; sft and dpo build TRL's own trainer in their module
    rewards: tuple[str, ...] = ()  # the reward_funcs a config does not name its own
    anchored: bool = False  # takes SFT's loss too, weighted by the required key sft_anchor


METHODS: dict[str, Method] = {
    "sft": Method(SFTConfig),
    "dpo": Method(DPOConfig),
    "grpo": Method(GRPOConfig, CountingGRPOTrainer, OUTCOME),
    "grpo_dynamic": Method(GRPOConfig, DynamicSamplingGRPOTrainer, OUTCOME),
    "grpo_pr": Method(GRPOConfig, CountingGRPOTrainer, SHAPED),
    "agr_only": Method(AGRLConfig, AGRLTrainer, OUTCOME),
    "agrl": Method(AGRLConfig, AGRLTrainer, SHAPED),
    "grpo_anchored": Method(GRPOConfig, CountingGRPOTrainer, OUTCOME, anchored=True),
    "agrl_anchored": Method(AGRLConfig, AGRLTrainer, SHAPED, anchored=True),
}


def trainer_class(method: str, args: Any) -> type:
    """The method's trainer class; AGR's immediate mode (agr_mode=immediate) is a subclass of its own."""
    trainer = METHODS[method].trainer
    if trainer is AGRLTrainer and args.agr_mode == "immediate":
        return ImmediateAGRLTrainer
    return trainer


def build_trainer(method: str, run: RunArgs, args: Any) -> GRPOTrainer:
    """The GRPO-family trainer of `method` with the run's rows and reward callables (no training yet);
    their weights are args.reward_weights already, in the order of run.reward_funcs (config.py)."""
    scheme, records, engine = setup(run)
    funcs, _ = reward_funcs(run.reward_funcs, scheme, table=engine.table, **run.reward_settings())
    rows = grpo_rows(records, engine, anchored=METHODS[method].anchored)
    # every reward once on two rows before the model loads: a broken one fails in seconds, by name
    probe_rewards(funcs, rows[:2], trainer_state=TrainerState(), log_extra=_ignore, log_metric=_ignore)
    model, peft_config = starting_model(run, args)
    trainer = trainer_class(method, args)
    extra = {"rules_engine": engine, "scheme": scheme} if issubclass(trainer, AGRLTrainer) else {}
    if METHODS[method].anchored:
        extra |= {"sft_anchor": run.sft_anchor, "sft_label_weight": run.sft_label_weight}
    dataset = Dataset.from_list(rows)
    return trainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, peft_config=peft_config, **extra)


def _ignore(*args: Any, **kwargs: Any) -> None:
    """The probe's stand-in for TRL's log_extra / log_metric keywords."""


def train_stage(method: str, run: RunArgs, args: Any, callbacks: tuple = ()) -> None:
    """Build the method's trainer on the run's data and train it (output_dir gets the model)."""
    if method == "sft":
        sft.main(run, args, callbacks)
    elif method == "dpo":
        dpo.main(run, args, callbacks)
    else:
        fit(build_trainer(method, run, args), run, args, callbacks)
