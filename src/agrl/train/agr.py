"""AGRL: GRPO with Adaptive Guided Replay (spec section 6) on top of TRL's GRPOTrainer.

AGR decisions live in agrl.replay (pure); this module moves tensors. Departures from the parent:
- `_generate_and_score_completions` is wrapped: before it, hard prompts take the last group slots
  of the batch (deferred mode: k rollouts of a flagged prompt sampled from its guided prompt in the
  same, single generation pass; buffer returns unguided); after it, groups are flagged on global
  r_out and, in immediate mode, k guided rollouts (a second generation pass through the parent's
  `_generate`/`_calculate_rewards`) replace the k lowest-reward rollouts and advantages are
  recomputed. Guided rows are trained on the UNGUIDED prompt ids; their old log-probs are the
  guided-prompt log-probs (Guide-GRPO), the ratio's value truncated per token to [1/c, c].
- `_calculate_rewards` keeps the decoded completions and gathered rewards for AGR.
- `_compute_loss` / `_get_per_token_logps_and_entropies`: guided rows carry `agr_guided_old`; the
  loss's own log-prob pass sets old_per_token_logps from it (others: as the parent; no extra pass).
- `_save_checkpoint` / `_load_optimizer_and_scheduler` also write/read `agr_state.json`.
Not supported (raises): vLLM rollouts, tools/environments/rollout_func, beta != 0, normalize_then_sum.

    trainer = AGRLTrainer(model, reward_funcs, args=AGRLConfig(...), train_dataset=ds, rules_engine=engine)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import nanstd, pad

from agrl.data import parse_record
from agrl.prompt import prompt_messages
from agrl.replay import ReplaySettings, ReplayState, flag_groups, group_accuracies, lowest, step_metrics
from agrl.rewards import outcome_accuracy
from agrl.schemes import Scheme, load_scheme

STATE_FILE = "agr_state.json"


@dataclass
class AGRLConfig(GRPOConfig):
    """GRPOConfig plus the Adaptive Guided Replay knobs (only what it adds is documented here)."""

    agr_mode: str = field(
        default="deferred",
        metadata={
            "help": "`immediate`: a second generation pass in the same step for flagged groups; `deferred`: "
            "flagged prompts re-enter the next batch with guidance (no extra generation pass)."
        },
    )
    agr_k: int = field(
        default=2, metadata={"help": "Guided rollouts per flagged group (replace the k lowest)."}
    )
    agr_threshold_cap: float = field(
        default=0.25, metadata={"help": "Upper bound of the adaptive flagging threshold on group accuracy."}
    )
    agr_ema_decay: float = field(default=0.9, metadata={"help": "EMA decay of the running batch accuracy."})
    agr_margin: float = field(
        default=0.5,
        metadata={"help": "Flag groups at or below (running accuracy - margin), capped; 0 floor."},
    )
    agr_max_level: int = field(
        default=3, metadata={"help": "Highest guidance level (3 reveals the gold label)."}
    )
    agr_buffer_size: int = field(default=256, metadata={"help": "Capacity of the hard-prompt buffer."})
    agr_replay_share: float = field(
        default=0.25,
        metadata={"help": "Most group slots of a batch given to hard prompts (deferred + returns)."},
    )
    agr_replay_delay: int = field(
        default=2, metadata={"help": "Rounds a flagged prompt waits in the buffer before returning unguided."}
    )
    agr_ratio_clip: float = field(
        default=5.0,
        metadata={
            "help": "Bound c: a guided token's ratio pi(o|q)/pi_old(o|q+guidance) is "
            "truncated to [1/c, c] (value only, gradient kept); then the epsilon clip applies."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        # deferred groups keep at least one unguided rollout: it measures the prompt without the hint
        top = self.num_generations - (self.agr_mode == "deferred")
        if not 1 <= self.agr_k <= top:
            raise ValueError(
                f"agr_k ({self.agr_k}) must be in [1, {top}] for num_generations={self.num_generations}"
            )
        if self.agr_ratio_clip < 1.0:
            raise ValueError(f"agr_ratio_clip must be >= 1, got {self.agr_ratio_clip}")
        self.replay_settings()  # validates the rest

    def replay_settings(self) -> ReplaySettings:
        return ReplaySettings(
            mode=self.agr_mode,
            k=self.agr_k,
            threshold_cap=self.agr_threshold_cap,
            ema_decay=self.agr_ema_decay,
            margin=self.agr_margin,
            max_level=self.agr_max_level,
            buffer_size=self.agr_buffer_size,
            replay_share=self.agr_replay_share,
            replay_delay=self.agr_replay_delay,
        )


class AGRLTrainer(GRPOTrainer):
    """GRPOTrainer + Adaptive Guided Replay. Extra keywords: `rules_engine` (guidance(record, level))
    and `scheme` (a Scheme or its name). Dataset rows: prompt, label, steps, record (JSON), id."""

    def __init__(self, *args, rules_engine, scheme: Scheme | str = "default", **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, AGRLConfig):
            raise TypeError(f"AGRLTrainer needs an AGRLConfig, got {type(self.args).__name__}")
        unsupported = {
            "use_vllm": self.use_vllm,
            "tools": bool(self.tools),
            "rollout_func": self.rollout_func is not None,
            "environment_factory": self.environment_factories is not None,
            "beta != 0": self.beta != 0.0,
            "normalize_then_sum": self.multi_objective_aggregation != "sum_then_normalize",
        }
        if any(unsupported.values()):
            raise ValueError(f"AGRLTrainer does not support {[k for k, v in unsupported.items() if v]}")
        self.rules_engine = rules_engine
        self.scheme = load_scheme(scheme) if isinstance(scheme, str) else scheme
        self.replay = ReplayState(self.args.replay_settings())
        self._scored: tuple[list, torch.Tensor] | None = None
        self._loss_inputs: dict | None = None

    # ------------------------------------------------------------------------ hooks

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = (completions, rewards_per_func)  # local decoded texts, global rewards
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        G, n_local = self.num_generations, len(inputs)
        start = self.accelerator.process_index * n_local
        slots = self.replay.plan(n_local * self.accelerator.num_processes // G)
        rows, gen_inputs, guided = self._inject(inputs, slots, start)
        output = super()._generate_and_score_completions(gen_inputs)
        completions, rewards = self._scored

        accs = self._gather_list(
            [outcome_accuracy(c, r["label"], self.scheme) for c, r in zip(completions, rows)]
        )
        guided_global = self._gather_list([float(i in guided) for i in range(n_local)])
        group_accs = group_accuracies(accs, [g > 0 for g in guided_global], G)
        ids = gather_object([str(r["id"]) for r in rows])[::G]
        candidates = set(flag_groups(group_accs, self.args.agr_threshold_cap))  # superset of the flagged
        hard_rows = {str(r["id"]): r for i, r in enumerate(rows) if (start + i) // G in candidates}
        hard_rows = {pid: r for part in gather_object([hard_rows]) for pid, r in part.items()}
        flagged = self.replay.observe(ids, group_accs, hard_rows)

        if self.args.agr_mode == "immediate" and flagged:
            output, accs = self._replay_now(rows, output, flagged, rewards, accs, start)
            levels = flagged
        else:
            levels = {s.group: s.level for s in slots if s.level is not None}
            if guided:
                output = self._train_as_unguided(output, rows, {i: None for i in guided})
        after = {g: sum(accs[g * G : (g + 1) * G]) / G for g in levels}
        returns = [group_accs[s.group] for s in slots if s.level is None and group_accs[s.group] is not None]
        metrics = step_metrics(
            len(group_accs), levels, {g: group_accs[g] for g in levels}, after, returns, self.replay.threshold
        )
        metrics["agr/flagged_share"] = len(flagged) / len(group_accs)
        metrics["agr/buffer_size"] = float(len(self.replay.buffer))
        for name, value in metrics.items():
            if not math.isnan(value):
                self._metrics["train"][name].append(value)
        return output

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.replay.state_dict(), f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # A checkpoint without AGR state (e.g. from plain GRPO) starts replay afresh.
        if checkpoint is not None and os.path.exists(os.path.join(checkpoint, STATE_FILE)):
            with open(os.path.join(checkpoint, STATE_FILE)) as f:
                self.replay.load_state_dict(json.load(f))

    # ------------------------------------------------------------------------ helpers

    def guided_prompt(self, row: dict, level: int) -> list[dict[str, str]]:
        """The row's prompt with rules-engine guidance at `level` (prompt.prompt_messages)."""
        record = parse_record(json.loads(row["record"]), self.scheme)
        return prompt_messages(record, guidance=self.rules_engine.guidance(record, level))

    def _inject(self, inputs: list[dict], slots, start: int):
        """Put the planned hard prompts into their group slots. Returns the rows (unguided), the
        generation inputs (the last k rows of a guided slot carry the guided prompt) and local
        guided row -> level."""
        G, k = self.num_generations, self.args.agr_k
        rows, gen_inputs, guided = list(inputs), list(inputs), {}
        for slot in slots:
            for j in range(G):
                i = slot.group * G + j - start
                if not 0 <= i < len(inputs):
                    continue
                rows[i] = gen_inputs[i] = dict(slot.entry.row)
                if slot.level is not None and j >= G - k:
                    guided[i] = slot.level
                    gen_inputs[i] = {**rows[i], "prompt": self.guided_prompt(rows[i], slot.level)}
        return rows, gen_inputs, guided

    def _gather_list(self, values: list[float]) -> list[float]:
        return self.accelerator.gather(torch.tensor(values, device=self.accelerator.device)).tolist()

    def _replay_now(
        self, rows, output, flagged: dict[int, int], rewards: torch.Tensor, accs: list[float], start: int
    ):
        """Immediate mode: generate k guided rollouts per flagged group (every process the same
        number, padded with discarded copies, since generation and reward gathering are collective),
        put them in place of the k lowest-reward rollouts and recompute the advantages."""
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
        new_accs = self._gather_list(
            [outcome_accuracy(c, r["label"], self.scheme) for c, r in zip(completions, gen_rows)]
        )
        rewards, accs = rewards.clone(), list(accs)
        for p, part in enumerate(per_rank):
            for j, r in enumerate(part):
                rewards[r], accs[r] = new_rewards[p * width + j], new_accs[p * width + j]
        output["advantages"] = self._advantages(rewards)[start : start + n_local]

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
            return output, accs
        if "old_per_token_logps" in output:  # off-policy setups: stale once rows (and width) changed
            output["old_per_token_logps"] = self._logps(
                output["prompt_ids"],
                output["prompt_mask"],
                output["completion_ids"],
                output["completion_mask"],
            )
        return self._train_as_unguided(
            output, rows, {i: list(prompt_ids[j]) for j, i in enumerate(mine)}
        ), accs

    def _advantages(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """The parent's sum_then_normalize group advantages, for the whole (gathered) batch."""
        G = self.num_generations
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)
        advantages = rewards - mean
        if self.scale_rewards == "group":
            advantages = advantages / (nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G) + 1e-4)
        elif self.scale_rewards == "batch":
            advantages = advantages / (nanstd(rewards) + 1e-4)
        return torch.nan_to_num(advantages, nan=0.0)

    def _train_as_unguided(self, output, rows: list[dict], guided_ids: dict[int, list[int] | None]):
        """Give guided rows their unguided prompt ids, and their log-probs under the guided prompt
        (`guided_ids`; None: the prompt they were generated from in this batch) as `agr_guided_old`
        (NaN on other rows), which the loss uses as their old log-probs (see _compute_loss)."""
        idx = sorted(guided_ids)
        prompts = self._unpad(output["prompt_ids"], output["prompt_mask"])
        guided_prompts = [guided_ids[i] if guided_ids[i] is not None else prompts[i] for i in idx]
        for i, ids in zip(idx, self._tokenize_prompts([rows[i]["prompt"] for i in idx])[0]):
            prompts[i] = list(ids)
        output["prompt_ids"], output["prompt_mask"] = self._pad(prompts, left=True)
        c_ids, c_mask = output["completion_ids"][idx], output["completion_mask"][idx]
        under_guidance = self._logps(*self._pad(guided_prompts, left=True), c_ids, c_mask)
        output["agr_guided_old"] = torch.full_like(
            output["completion_ids"], torch.nan, dtype=under_guidance.dtype
        )
        output["agr_guided_old"][idx] = under_guidance
        return output

    def _compute_loss(self, model, inputs):
        # The parent reads inputs["old_per_token_logps"] right after its first log-prob pass; the
        # override below sets it there for micro-batches that carry guided rows.
        self._loss_inputs = inputs if "agr_guided_old" in inputs else None
        return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
    ):
        """Guided rows get old = their guided-prompt log-probs, truncated per token to within a factor
        agr_ratio_clip of the current ones (the ratio's value is bounded, its gradient kept); other
        rows keep the parent's old log-probs, or the detached current ones on the on-policy path."""
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if self._loss_inputs is not None:
            inputs, self._loss_inputs = self._loss_inputs, None
            guided, current = inputs.pop("agr_guided_old"), logps.detach()
            old = inputs.get("old_per_token_logps")
            bound = math.log(self.args.agr_ratio_clip)
            bounded = torch.maximum(torch.minimum(guided, current + bound), current - bound)
            inputs["old_per_token_logps"] = torch.where(
                guided.isnan(), current if old is None else old, bounded
            )
        return logps, entropies, aux

    def _logps(self, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
        """Per-token log-probs of the completions under these prompts (the parent's no-grad pass)."""
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
        ):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([prompt_ids, completion_ids], dim=1),
                torch.cat([prompt_mask, completion_mask], dim=1),
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps

    @staticmethod
    def _unpad(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        return [row[m.bool()].tolist() for row, m in zip(ids, mask)]

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad like the parent: prompts on the left, completions on the right."""
        tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
        side = "left" if left else "right"
        ids = pad(
            tensors,
            padding_value=self._tokenizer.pad_token_id,
            padding_side=side,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        mask = pad(
            [torch.ones_like(t) for t in tensors],
            padding_value=0,
            padding_side=side,
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        return ids.to(self.accelerator.device), mask.to(self.accelerator.device)
