"""Stages 3-6, the GRPO family: the rows every method trains on and the GRPO trainers.

Every method (train/methods.py: grpo, grpo_dynamic, grpo_pr, agr_only, agrl) gets the same rows
(`grpo_rows`) and its reward list, on CountingGRPOTrainer, DynamicSamplingGRPOTrainer (below) or
AGRLTrainer (train/agr.py). Rollouts use plain HF `generate` (no vLLM, no continuous batching)
unless the config asks otherwise.
Departures from the TRL parent: every GRPO-family trainer logs the mechanism counters
(`groups/all_wrong`, `groups/all_wrong_hard`, `groups/all_wrong_common`, `groups/all_right`) from
the outcome reward column TRL keeps (CountingGRPOTrainer, one override). Dynamic
sampling (our reading of TaoSR1/DAPO): groups whose rollouts all score the same are dropped from
the loss, so the informative groups carry the full weight; DAPO instead over-samples to refill the
batch, which we do not.
SFT anchor (`sft_anchor` > 0, methods grpo_anchored / agrl_anchored; train/anchor.py): the rows carry
SFT's target (`sft_target`), the batch its tokens, and `compute_loss` (TRL's public entry to its loss)
adds the weighted SFT loss; with 0 (the default) nothing of it runs.

    agrl train grpo_pr --set max_steps=8
"""

from __future__ import annotations

import json
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from agrl.data.records import HARD, Record
from agrl.errors import UserError
from agrl.core.output import LABEL_OPEN
from agrl.core.prompt import prompt_messages
from agrl.core.replay import group_counters
from agrl.core.rules import RulesEngine
from agrl.train import anchor
from agrl.train.sft import sft_target


def grpo_rows(records: list[Record], engine: RulesEngine, anchored: bool = False) -> list[dict[str, Any]]:
    """Rows as the reward functions and AGRLTrainer read them: prompt, label, steps, record, id, family;
    with `anchored`, also SFT's target text (`sft_target`, for the anchor)."""
    return [
        {
            "prompt": prompt_messages(record),
            "label": record.label,
            "steps": json.dumps(engine.gold_steps(record)),
            "record": json.dumps(record.to_dict()),
            "id": record.id or str(index),
            "family": record.family or "",
        }
        | ({"sft_target": sft_target(record, engine)} if anchored else {})
        for index, record in enumerate(records)
    ]


class CountingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that logs the groups/* counters from the outcome reward column (one override).

    The column is the one TRL already computed and keeps for its completions table (`_logs`), for the
    whole (gathered) batch. A rollout is right when its outcome reward is 1 (accepted, the gold label;
    ordinal credit too only at the exact label); `outcome_right` keeps the batch's for AGR."""

    outcome_right: list[bool] | None = None

    def __init__(self, *args, sft_anchor: float = 0.0, sft_label_weight: float = 1.0, **kwargs):
        """`sft_anchor`: the weight of SFT's loss added to every step's (0: none, TRL's loss as is);
        `sft_label_weight`: its label token's weight, as in SFT. The rows need `sft_target` (grpo_rows)."""
        super().__init__(*args, **kwargs)
        if sft_anchor < 0:
            raise ValueError(f"sft_anchor must be >= 0, got {sft_anchor}")
        self.sft_anchor, self.sft_label_weight = float(sft_anchor), float(sft_label_weight)
        if self.sft_anchor and "sft_target" not in self.train_dataset.column_names:
            raise ValueError("sft_anchor > 0: the training rows need `sft_target` (grpo_rows(..., anchored=True))")
        self.label_open = self.processing_class.encode(LABEL_OPEN, add_special_tokens=False)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if "outcome" in self.reward_func_names:
            self.log_group_counters(inputs)
        if self.sft_anchor and self.model.training:
            # one target per prompt: a group's first row (its global index a multiple of G)
            start = self.accelerator.process_index * len(inputs)
            first = [(start + i) % self.num_generations == 0 for i in range(len(inputs))]
            output |= anchor.anchor_batch(self.processing_class, inputs, first, self.accelerator.device)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss, plus `sft_anchor` x SFT's loss on the micro-batch's prompts (scaled for gradient
        accumulation as TRL's is: a mean per micro-batch, over the accumulation steps)."""
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.sft_anchor or "anchor_labels" not in inputs:
            return loss
        nll = anchor.anchor_nll(model, inputs, self.label_open, self.sft_label_weight)
        if nll is None:
            return loss
        weighted = self.sft_anchor * nll / self.current_gradient_accumulation_steps
        self._metrics["train"]["anchor/nll"].append(nll.item())
        share = weighted.abs() / (loss.detach().abs() + weighted.detach().abs()).clamp(min=1e-12)
        self._metrics["train"]["anchor/share"].append(share.item())
        return loss + weighted

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Each function's values are checked as it answers (rewards.CheckedReward); None is TRL's "skip
        # this completion", but a step where every function skipped every completion has nothing to learn.
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if rewards.numel() and torch.isnan(rewards).all():
            raise UserError(f"step {self.state.global_step + 1}: every reward function ({', '.join(self.reward_func_names)})"
                            f" returned None for all {rewards.shape[0]} completions: nothing to train on")
        return rewards

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
