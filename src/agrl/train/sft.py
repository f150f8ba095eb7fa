"""Stage 1, SFT on chain-of-thought data: prompt -> rendered reasoning, with TRL's SFTTrainer.

Each row is conversational prompt-completion: the prompt is `prompt.prompt_messages(record)`, the
completion the record's `reasoning` (teacher text, possibly noisy, as sft.jsonl carries it) or else
the rules engine's rendering of the gold verdicts. The loss covers the completion only.
With `sft_label_weight` > 1 the label token (the one right after `<label>`, one token or, in a pretrained
tokenizer, several) weighs that many tokens in the loss: the judge states its label before its reasoning, so the label is decided in one position
while ~40 reasoning tokens share the plain token mean (our choice; docs/results.md, "The embedded judge").
With `sft_guided_share` > 0, that share of records is added again with AGR guidance (a random level
1-3) in the prompt and the same target: a model that never saw guidance cannot use it in AGRL
(measured in bench/README.md, Quality).
Departures from `trl sft`: none; the dataset is built here from records.

    agrl train sft
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from agrl.data.records import Record
from agrl.core.output import LABEL_OPEN
from agrl.core.prompt import prompt_messages
from agrl.core.rules import RulesEngine
from agrl.train.args import RunArgs
from agrl.train.common import fit, setup
from agrl.train.lora import starting_model


def sft_rows(
    records: list[Record], engine: RulesEngine, guided_share: float = 0.0, seed: int = 0
) -> list[dict[str, Any]]:
    """Prompt-completion rows: the record's own `reasoning` when it has one, else the gold rendering;
    plus `guided_share` of the records again with guidance in the prompt (same target)."""
    assert 0.0 <= guided_share <= 1.0, f"sft_guided_share must be in [0, 1], got {guided_share}"
    targets = [sft_target(record, engine) for record in records]
    rows = [_row(prompt_messages(r), t) for r, t in zip(records, targets)]
    rng = random.Random(seed)
    for index in rng.sample(range(len(records)), round(guided_share * len(records))):
        guidance = engine.guidance(records[index], rng.randint(1, 3))
        rows.append(_row(prompt_messages(records[index], guidance=guidance), targets[index]))
    return rows


def sft_target(record: Record, engine: RulesEngine) -> str:
    """SFT's target text for a record: its own `reasoning` when it has one, else the rules engine's rendering
    of the gold label and steps. The RL anchor (`sft_anchor`, train/anchor.py) trains on the same text."""
    return record.extra.get("reasoning") or engine.teacher_reasoning(record)


def _row(prompt: list[dict[str, str]], target: str) -> dict[str, Any]:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": target}]}


def label_token_weights(labels: torch.Tensor, label_open: int | list[int], weight: float) -> torch.Tensor:
    """Per next-token weights, shape labels[:, 1:]: `weight` where the position predicts the token right
    after `<label>` (its ids `label_open`, one or several), else 1."""
    tag = [label_open] if isinstance(label_open, int) else list(label_open)
    before = labels[:, :-1]
    ends_tag = torch.ones_like(before, dtype=torch.bool)  # position i holds the tag's last token
    for back, token in enumerate(reversed(tag)):
        shifted = torch.full_like(before, -100)
        shifted[:, back:] = before[:, : before.shape[1] - back]
        ends_tag &= shifted == token
    return torch.where(ends_tag, weight, 1.0)


def label_weighted_loss(label_open: int | list[int], weight: float):
    """A `compute_loss_func` for the Trainer: token-mean cross-entropy where the token that follows
    `<label>` counts `weight` times (the denominator stays the token count, so weight 1 is TRL's loss).
    `label_open`: the tag's token id, or its ids where the tokenizer splits it (a pretrained one).
    The reference form, on full logits: training uses `weigh_label_token` (the same loss, one forward)."""

    def loss(outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None):
        logits, target = outputs.logits[:, :-1].float(), labels[:, 1:]
        per_token = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
        weights = label_token_weights(labels, label_open, weight)
        count = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
        return (per_token * weights).sum() / torch.as_tensor(count).clamp(min=1)

    return loss


def weigh_label_token(trainer: SFTTrainer, label_open: list[int], weight: float) -> None:
    """The label-weighted loss on TRL's fused LM head: TRL's loss is -sum(log_probs) / tokens, and a
    forward hook scales each position's log-prob by its weight first. The same loss as
    `label_weighted_loss`, but one forward pass where a `compute_loss_func` costs two (TRL reruns the
    model for its metrics) and no (batch, length, vocabulary) logits: the speed lever of bench/gpu_speed.py.
    The hook sits on the trainer's model itself: PEFT calls its base model's `forward` directly, so a hook
    on the model that TRL patched would not run under LoRA."""

    def scale(module, args, kwargs, output):
        if kwargs.get("fused_lm_head") and kwargs.get("labels") is not None and output.log_probs is not None:
            output.log_probs = output.log_probs * label_token_weights(kwargs["labels"], label_open, weight)
        return output

    trainer.model.register_forward_hook(scale, with_kwargs=True)


def main(run: RunArgs, args: SFTConfig, callbacks: tuple = ()) -> None:
    _, records, engine = setup(run)
    if args.completion_only_loss is False:
        raise ValueError("sft: completion_only_loss must stay on (the loss is on the reasoning only)")
    model, peft_config = starting_model(run, args)
    trainer = SFTTrainer(
        model=model,
        args=args,
        peft_config=peft_config,
        train_dataset=Dataset.from_list(sft_rows(records, engine, run.sft_guided_share, args.seed)),
    )
    if run.sft_label_weight != 1.0:  # set after init: the tokenizer is the trainer's own
        # a pretrained tokenizer keeps the tags as text (agrl model import): `<`, `label`, `>` for SmolLM2
        ids = trainer.processing_class.encode(LABEL_OPEN, add_special_tokens=False)
        weigh_label_token(trainer, ids, run.sft_label_weight)
    fit(trainer, run, args, callbacks)
