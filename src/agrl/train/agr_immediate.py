"""AGRL in immediate mode (agr_mode=immediate): flagged groups get k guided rollouts in the same step.

A second generation pass (the parent's `_generate` and `_calculate_rewards`) writes k guided
rollouts per flagged group; they replace the group's k lowest-reward rollouts and the advantages
are recomputed (`advantages`, the parent's sum_then_normalize). It costs a second pass a step;
deferred mode (train/agr.py, the default) meets the step-time target. No TRL hook beyond
AGRLTrainer's: it overrides AGRLTrainer._guide only, and calls `_generate` / `_calculate_rewards`.

    trainer = ImmediateAGRLTrainer(model, reward_funcs, args=args, train_dataset=ds, rules_engine=engine)  # agr_mode: immediate
"""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd

from agrl.core.replay import lowest
from agrl.train.agr import AGRLTrainer


def advantages(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int, scale_rewards: str
) -> torch.Tensor:
    """The parent's sum_then_normalize group advantages, for the whole (gathered) batch."""
    G = group_size
    rewards = (rewards_per_func * weights.to(rewards_per_func.device)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)
    out = rewards - mean
    if scale_rewards == "group":
        out = out / (nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G) + 1e-4)
    elif scale_rewards == "batch":
        out = out / (nanstd(rewards) + 1e-4)
    return torch.nan_to_num(out, nan=0.0)


class ImmediateAGRLTrainer(AGRLTrainer):
    """AGRLTrainer whose flagged groups are guided in the same step (a second generation pass)."""

    mode = "immediate"

    def _guide(self, output, rows, slots, guided, flagged, accs, start):
        if not flagged:
            return super()._guide(output, rows, slots, guided, flagged, accs, start)
        output, accs, replaced = self._replay_now(rows, output, flagged, self._first_pass_rewards(len(accs)), accs, start)
        return output, flagged, accs, [accs[r] for r in replaced]

    def _first_pass_rewards(self, n: int) -> torch.Tensor:
        """The first pass's gathered rewards per function (n rows), as TRL logged them."""
        columns = [self.logged_rewards(name, n) for name in self.reward_func_names]
        return torch.tensor(columns, dtype=torch.float32, device=self.accelerator.device).T.contiguous()

    def _replay_now(self, rows, output, flagged: dict[int, int], rewards: torch.Tensor, accs: list[float], start: int):
        """Generate k guided rollouts per flagged group (every process the same number, padded with
        discarded copies, since generation and reward gathering are collective), put them in place
        of the k lowest-reward rollouts and recompute the advantages. Returns the output, the
        accuracies and the replaced (global) rows."""
        G, n_local, world = self.num_generations, len(rows), self.accelerator.num_processes
        total = (rewards * self.reward_weights.to(rewards.device)).nansum(dim=1).tolist()
        replaced = {
            g * G + j: level
            for g, level in flagged.items()
            for j in lowest(total[g * G : (g + 1) * G], self.args.agr_k)
        }
        per_rank = [sorted(r for r in replaced if p * n_local <= r < (p + 1) * n_local) for p in range(world)]
        width = max(len(part) for part in per_rank)
        mine = [r - start for r in per_rank[self.accelerator.process_index]]
        gen_rows = [rows[i] for i in mine] + [rows[0]] * (width - len(mine))
        prompts = [self.guided_prompt(rows[i], replaced[start + i]) for i in mine] + [rows[0]["prompt"]] * (
            width - len(mine)
        )
        prompt_ids, completion_ids, _, completions, *_ = self._generate(prompts)
        new_rewards = self._calculate_rewards(gen_rows, prompts, completions, completion_ids)
        self._pending_extra_logs.clear()  # the completions table logs the first pass only
        new_accs = (new_rewards[:, self.reward_func_names.index("outcome")] == 1.0).float().tolist()
        rewards, accs = rewards.clone(), list(accs)
        for p, part in enumerate(per_rank):
            for j, r in enumerate(part):
                rewards[r], accs[r] = new_rewards[p * width + j], new_accs[p * width + j]
        output["advantages"] = advantages(rewards, self.reward_weights, G, self.scale_rewards)[start : start + n_local]

        comp = self._unpad(output["completion_ids"], output["completion_mask"])
        for j, i in enumerate(mine):
            comp[i] = completion_ids[j]
        output["completion_ids"], output["completion_mask"] = self._pad(comp, left=False)
        if self.mask_truncated_completions:
            ends = [*self.eos_token_ids, self._tokenizer.pad_token_id]
            kept = torch.tensor([bool(c) and c[-1] in ends for c in comp], device=self.accelerator.device)
            output["completion_mask"] = output["completion_mask"] * kept.unsqueeze(1).int()
        output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
        if not mine:
            return output, accs, sorted(replaced)
        if "old_per_token_logps" in output:  # off-policy setups: stale once rows (and width) changed
            output["old_per_token_logps"] = self._logps(
                output["prompt_ids"],
                output["prompt_mask"],
                output["completion_ids"],
                output["completion_mask"],
            )
        output = self._train_as_unguided(output, rows, {i: list(prompt_ids[j]) for j, i in enumerate(mine)})
        return output, accs, sorted(replaced)
