"""Stages 3-6: GRPO (outcome reward), GRPO-PR (Rule-aware Reward Shaping), AGR-only and AGRL.

One dataset and one reward list per method, on TRL's GRPOTrainer (grpo, grpo_pr) or T2's
AGRLTrainer (agr_only, agrl: the same trainer plus Adaptive Guided Replay). Rollouts use plain
HF `generate` (no vLLM, no continuous batching) unless the config asks otherwise.
Departure from the TRL parent, dynamic sampling only (our reading of TaoSR1/DAPO): groups whose
rollouts all score the same are dropped from the loss, so the informative groups carry the full
weight; DAPO instead over-samples to refill the batch, which we do not.

    agrl train configs/grpo_pr.yaml --set max_steps=8
"""

from __future__ import annotations

import json
from typing import Any

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from agrl.data import Record
from agrl.prompt import prompt_messages
from agrl.rewards import REWARD_NAMES, reward_funcs
from agrl.rules import RulesEngine
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
    """Rows as the reward functions and AGRLTrainer read them: prompt, label, steps, record, id."""
    return [
        {
            "prompt": prompt_messages(record),
            "label": record.label,
            "steps": json.dumps(engine.gold_steps(record)),
            "record": json.dumps(record.to_dict()),
            "id": record.id or str(index),
        }
        for index, record in enumerate(records)
    ]


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that drops groups whose rollouts all score the same from the loss (one override)."""

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
        from agrl.train.agr import AGRLTrainer

        return AGRLTrainer(**common, rules_engine=engine, scheme=scheme)
    trainer_class = DynamicSamplingGRPOTrainer if run.dynamic_sampling else GRPOTrainer
    return trainer_class(**common)


def main(run: RunArgs, args: GRPOConfig, method: str) -> None:
    fit(build_trainer(run, args, method), run, args)
