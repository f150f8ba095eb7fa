"""Stages 3-6: GRPO (outcome reward), GRPO-PR (Rule-aware Reward Shaping), AGR-only and AGRL.

One dataset and one reward list per method, on TRL's GRPOTrainer (grpo, grpo_pr) or T2's
AGRLTrainer (agr_only, agrl: the same trainer plus Adaptive Guided Replay). Rollouts use plain
HF `generate` (no vLLM, no continuous batching) unless the config asks otherwise.
Departures from the TRL parent: every GRPO-family trainer logs the mechanism counters
(`groups/all_wrong`, `groups/all_wrong_hard`, `groups/all_wrong_common`, `groups/all_right`) from
the outcome reward column TRL keeps (CountingGRPOTrainer, one override). Dynamic
sampling (our reading of TaoSR1/DAPO): groups whose rollouts all score the same are dropped from
the loss, so the informative groups carry the full weight; DAPO instead over-samples to refill the
batch, which we do not.

    agrl train configs/grpo_pr.yaml --set max_steps=8
"""

from __future__ import annotations

import json
from typing import Any

from accelerate.utils import gather_object
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from agrl.data import Record
from agrl.prompt import prompt_messages
from agrl.replay import group_counters
from agrl.rewards import REWARD_NAMES, reward_funcs
from agrl.rules import RulesEngine
from agrl.synth import HARD
from agrl.train.common import fit, setup
from agrl.train.config import RunArgs
from agrl.train.lora import starting_model

METHOD_REWARDS = {
    "grpo": ("format_gate", "outcome"),
    "agr_only": ("format_gate", "outcome"),
    "grpo_pr": REWARD_NAMES,
    "agrl": REWARD_NAMES,
}


def grpo_rows(records: list[Record], engine: RulesEngine) -> list[dict[str, Any]]:
    """Rows as the reward functions and AGRLTrainer read them: prompt, label, steps, record, id, family."""
    return [
        {
            "prompt": prompt_messages(record),
            "label": record.label,
            "steps": json.dumps(engine.gold_steps(record)),
            "record": json.dumps(record.to_dict()),
            "id": record.id or str(index),
            "family": record.family or "",
        }
        for index, record in enumerate(records)
    ]


class CountingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that logs the groups/* counters from the outcome reward column (one override).

    The column is the one TRL already computed and keeps for its completions table (`_logs`), for the
    whole (gathered) batch. A rollout is right when its outcome reward is 1 (accepted, the gold label;
    ordinal credit too only at the exact label); `outcome_right` keeps the batch's for AGR."""

    outcome_right: list[bool] | None = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if "outcome" in self.reward_func_names:
            self.log_group_counters(inputs)
        return output

    def log_group_counters(self, inputs: list[dict[str, Any]]) -> None:
        """groups/* of the batch just scored (`inputs`: this process's rows, for their families)."""
        hard = gather_object([row.get("family") in HARD for row in inputs])
        self.outcome_right = [value == 1.0 for value in self.logged_rewards("outcome", len(hard))]
        mode = "train" if self.model.training else "eval"
        for name, value in group_counters(self.outcome_right, hard, self.num_generations).items():
            self._metrics[mode][name].append(value)

    def logged_rewards(self, name: str, n: int) -> list[float]:
        """The last batch's (gathered) values of reward function `name`, as TRL logged them."""
        return list(self._logs["rewards"][name])[-n:]


class DynamicSamplingGRPOTrainer(CountingGRPOTrainer):
    """CountingGRPOTrainer that drops groups whose rollouts all score the same from the loss (one more override)."""

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        # Groups may straddle ranks: decide on the gathered advantages, then keep this rank's slice.
        # A group has all-zero advantages exactly when its rewards are all equal (r - group mean).
        local = output["advantages"]
        everyone = self.accelerator.gather(local)
        flat = everyone.view(-1, self.num_generations).abs().amax(dim=1) > 0
        keep = flat.repeat_interleave(self.num_generations)
        start = self.accelerator.process_index * local.shape[0]
        keep = keep[start : start + local.shape[0]]
        output["completion_mask"] = output["completion_mask"] * keep.unsqueeze(1).to(
            output["completion_mask"].dtype
        )
        output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
        self._metrics[mode]["dynamic_sampling/dropped_groups"].append(1.0 - flat.float().mean().item())
        return output


def build_trainer(run: RunArgs, args: GRPOConfig, method: str) -> GRPOTrainer:
    """The trainer for a GRPO-family method, rewards and dataset included (no training yet)."""
    scheme, records, engine = setup(run)
    funcs, weights = reward_funcs(METHOD_REWARDS[method], scheme, run.reward_weights(), engine.table)
    args.reward_weights = weights
    dataset = Dataset.from_list(grpo_rows(records, engine))
    model, peft_config = starting_model(run, args)
    common = {
        "model": model,
        "reward_funcs": funcs,
        "args": args,
        "train_dataset": dataset,
        "peft_config": peft_config,
    }
    if method in ("agr_only", "agrl"):
        if run.dynamic_sampling:
            raise ValueError(
                f"{method}: dynamic_sampling is a GRPO-baseline option (AGR handles all-wrong groups)"
            )
        from agrl.train.agr import agrl_trainer_class

        return agrl_trainer_class(args)(**common, rules_engine=engine, scheme=scheme)
    trainer_class = DynamicSamplingGRPOTrainer if run.dynamic_sampling else CountingGRPOTrainer
    return trainer_class(**common)


def main(run: RunArgs, args: GRPOConfig, method: str, callbacks: tuple = ()) -> None:
    fit(build_trainer(run, args, method), run, args, callbacks)
