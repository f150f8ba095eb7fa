"""AGRL: GRPO with Adaptive Guided Replay (spec section 6) on top of TRL's GRPOTrainer.

AGR decisions live in agrl.core.replay (pure); this module moves tensors. Deferred mode (the default):
flagged prompts re-enter the next batch, k of their rollouts sampled from the guided prompt inside
the one generation pass; immediate mode (a second generation pass) is train/agr_immediate.py.
Departures from the parent, the five hooks overridden (AGR reads the outcome reward column TRL
logged, through CountingGRPOTrainer):
- `_generate_and_score_completions` is wrapped: before it, hard prompts take the last group slots
  of the batch (rows looked up by id in the training dataset; buffer returns come back unguided);
  after it, groups are flagged on the global outcome column. Guided rows are trained on the
  UNGUIDED prompt ids; their old log-probs are the guided-prompt log-probs (Guide-GRPO), the
  ratio's value truncated per token to [1/c, c].
- `_compute_loss` / `_get_per_token_logps_and_entropies`: guided rows carry `agr_guided_old`; the
  loss's own log-prob pass sets old_per_token_logps from it (others: as the parent; no extra pass).
- `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler` also write/read `agr_state.json` (ids only),
  before the Trainer's last file of a checkpoint (trainer_state.json), so a kill never leaves a checkpoint without it.
Not supported (raises): vLLM rollouts, tools/environments/rollout_func, beta != 0, normalize_then_sum.

    trainer = AGRLTrainer(model, reward_funcs, args=AGRLConfig(...), train_dataset=ds, rules_engine=engine)  # methods.trainer_class picks the mode
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields

import torch
from accelerate.utils import gather_object
from trl import GRPOConfig
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import pad

from agrl.data.records import parse_record
from agrl.files import atomic_write
from agrl.core.prompt import prompt_messages
from agrl.core.replay import ReplaySettings, ReplayState, Slot, group_accuracies, step_metrics
from agrl.data.schemes import DEFAULT, Scheme, load_scheme
from agrl.train.grpo import CountingGRPOTrainer

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
        if self.agr_ratio_clip < 1.0:
            raise ValueError(f"agr_ratio_clip must be >= 1, got {self.agr_ratio_clip}")
        self.replay_settings()  # ReplaySettings validates every other agr_* knob

    def replay_settings(self) -> ReplaySettings:
        """The agr_* fields as replay.ReplaySettings, the one list of AGR settings."""
        named = {f.name: getattr(self, f"agr_{f.name}") for f in fields(ReplaySettings) if f.name != "group_size"}
        return ReplaySettings(**named, group_size=self.num_generations)


class AGRLTrainer(CountingGRPOTrainer):
    """GRPOTrainer + Adaptive Guided Replay. Extra keywords: `rules_engine` (guidance(record, level))
    and `scheme` (a Scheme or its name). Dataset rows: prompt, label, steps, record (JSON), id
    (unique: replay looks rows up by it); the reward functions must include `outcome`."""

    mode = "deferred"

    def __init__(self, *args, rules_engine, scheme: Scheme | str = DEFAULT, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, AGRLConfig):
            raise TypeError(f"AGRLTrainer needs an AGRLConfig, got {type(self.args).__name__}")
        if self.args.agr_mode != self.mode:
            raise ValueError(f"agr_mode={self.args.agr_mode}: use methods.trainer_class, not {type(self).__name__}")
        unsupported = {
            "use_vllm": self.use_vllm,
            "tools": bool(self.tools),
            "rollout_func": self.rollout_func is not None,
            "environment_factory": self.environment_factories is not None,
            "beta != 0": self.beta != 0.0,
            "normalize_then_sum": self.multi_objective_aggregation != "sum_then_normalize",
            "no `outcome` reward function": "outcome" not in self.reward_func_names,
            # the guided rows' log-prob pass runs only on ranks that hold guided rows; sharded forwards are collective
            "FSDP / DeepSpeed ZeRO-3": self.is_fsdp_enabled
            or (self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3),
        }
        if any(unsupported.values()):
            raise ValueError(f"AGRLTrainer does not support {[k for k, v in unsupported.items() if v]}")
        ids = [str(pid) for pid in self.train_dataset["id"]]
        self.row_index = {pid: index for index, pid in enumerate(ids)}
        if len(self.row_index) != len(ids):
            raise ValueError("AGRLTrainer: the training dataset's ids are not unique (replay looks rows up by id)")
        self.rules_engine = rules_engine
        self.scheme = load_scheme(scheme) if isinstance(scheme, str) else scheme
        self.replay = ReplayState(self.args.replay_settings())
        self._loss_inputs: dict | None = None

    # ------------------------------------------------------------------------ hooks

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        G, n_local = self.num_generations, len(inputs)
        start = self.accelerator.process_index * n_local
        slots = self.replay.plan(n_local * self.accelerator.num_processes // G)
        rows, gen_inputs, guided = self._inject(inputs, slots, start)
        output = super()._generate_and_score_completions(gen_inputs)
        accs = [float(right) for right in self.outcome_right]  # global, from the outcome reward column
        guided_global = self.guided_rows(slots)
        group_accs = group_accuracies(accs, [i in guided_global for i in range(len(accs))], G)
        ids = gather_object([str(r["id"]) for r in rows])[::G]
        flagged = self.replay.observe(ids, group_accs)
        output, levels, accs, guided_accs = self._guide(output, rows, slots, guided, flagged, accs, start)
        after = {g: sum(accs[g * G : (g + 1) * G]) / G for g in levels}
        returning = [s for s in slots if s.level is None and group_accs[s.group] is not None]
        metrics = step_metrics(
            len(group_accs),
            levels,
            {g: group_accs[g] for g in levels},
            after,
            [group_accs[s.group] for s in returning],
            self.replay.threshold,
            guided_accs,
            [s.entry.acc for s in returning if s.entry.acc is not None],
        )
        metrics["agr/flagged_share"] = len(flagged) / len(group_accs)
        metrics["agr/buffer_size"] = float(len(self.replay.buffer))
        for name, value in metrics.items():
            if not math.isnan(value):
                self._metrics["train"][name].append(value)
        return output

    def _save_optimizer_and_scheduler(self, output_dir):
        # Written with the optimizer, before trainer_state.json: the Trainer writes that file last, so a
        # checkpoint that has it is complete (train/common.py resumes only from such), replay state included.
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            atomic_write(os.path.join(output_dir, STATE_FILE), json.dumps(self.replay.state_dict()))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        # A checkpoint without AGR state (e.g. from plain GRPO) starts replay afresh.
        if checkpoint is not None and os.path.exists(os.path.join(checkpoint, STATE_FILE)):
            with open(os.path.join(checkpoint, STATE_FILE)) as f:
                self.replay.load_state_dict(json.load(f))

    # ------------------------------------------------------------------------ helpers

    def _guide(self, output, rows, slots: list[Slot], guided: dict[int, int], flagged, accs, start: int):
        """After scoring: train this batch's guided rows (deferred) as unguided. Returns the output,
        guided group -> level, the rollouts' accuracies and the guided rollouts' own accuracies."""
        levels = {s.group: s.level for s in slots if s.level is not None}
        if guided:
            output = self._train_as_unguided(output, rows, {i: None for i in guided})
        return output, levels, accs, [accs[i] for i in sorted(self.guided_rows(slots))]

    def guided_rows(self, slots: list[Slot]) -> set[int]:
        """Global indices of the rollouts generated from a guided prompt: the last k of a guided slot."""
        G, k = self.num_generations, self.args.agr_k
        return {s.group * G + j for s in slots if s.level is not None for j in range(G - k, G)}

    def guided_prompt(self, row: dict, level: int) -> list[dict[str, str]]:
        """The row's prompt with rules-engine guidance at `level` (prompt.prompt_messages)."""
        record = parse_record(json.loads(row["record"]), self.scheme)
        return prompt_messages(record, guidance=self.rules_engine.guidance(record, level))

    def _inject(self, inputs: list[dict], slots: list[Slot], start: int):
        """Put the planned hard prompts (their rows from the training dataset) into their group slots.
        Returns the rows (unguided), the generation inputs (the last k rows of a guided slot carry the
        guided prompt) and local guided row -> level."""
        G, k = self.num_generations, self.args.agr_k
        rows, gen_inputs, guided = list(inputs), list(inputs), {}
        for slot in slots:
            local = [j for j in range(G) if 0 <= slot.group * G + j - start < len(inputs)]
            if not local:
                continue
            row = self.train_dataset[self.row_index[slot.entry.id]]
            for j in local:
                i = slot.group * G + j - start
                rows[i] = gen_inputs[i] = dict(row)
                if slot.level is not None and j >= G - k:
                    guided[i] = slot.level
                    gen_inputs[i] = {**rows[i], "prompt": self.guided_prompt(rows[i], slot.level)}
        return rows, gen_inputs, guided

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
