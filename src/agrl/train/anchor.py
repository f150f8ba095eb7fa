"""The SFT anchor of the GRPO family (`sft_anchor`): each RL step also takes SFT's loss on its prompts.

Our reading of AFRL (arXiv 2602.10006), which adds an SFT loss inside GRPO against mode collapse and
the forgetting of rules after SFT. The target is the one `agrl train` SFT builds (`sft.sft_target`:
the record's reasoning, else the gold label and the rules' steps), tokenized as TRL's SFTTrainer
does (the chat template of prompt + completion; the completion starts where it leaves the prompt's),
and its loss is SFT's (`sft.label_token_weights`: the token-mean NLL, the label token counting
`sft_label_weight` times). One target per prompt of the step (a group's first row: AGR guides only the
last k rows of a group, so the anchor's prompt is never a guided one).

    total = RL loss + sft_anchor * anchor NLL           (logged: anchor/nll, anchor/share)

The NLL is at temperature 1 (SFT's), not the rollouts' temperature; it is one more forward and
backward per micro-batch over the step's prompts and targets (logits of the target tokens only).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from trl.trainer.utils import pad

from agrl.train.sft import label_token_weights


def target_ids(tokenizer: Any, prompt: list[dict[str, str]], target: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one SFT row, as TRL's SFTTrainer tokenizes prompt-completion rows."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": target}], tokenize=True, return_dict=False
    )
    start = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
    return list(full[:start]), list(full[start:])


def anchor_batch(tokenizer: Any, rows: list[dict], anchored: list[bool], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's anchor tensors, one row per rollout row (rows with `anchored` False get no target: all
    labels -100): ids = left-padded prompt + right-padded target, labels = the target (-100 on padding)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts, targets = [], []
    for row, keep in zip(rows, anchored):
        prompt, target = target_ids(tokenizer, row["prompt"], row["sft_target"]) if keep else ([pad_id], [])
        prompts.append(torch.tensor(prompt, dtype=torch.long))
        targets.append(torch.tensor(target or [-100], dtype=torch.long))
    p = pad(prompts, padding_value=pad_id, padding_side="left")
    p_mask = pad([torch.ones_like(x) for x in prompts], padding_value=0, padding_side="left")
    labels = pad(targets, padding_value=-100, padding_side="right")
    t_ids = labels.clamp(min=0).masked_fill(labels == -100, pad_id)
    t_mask = (labels != -100).long()
    return {"anchor_ids": torch.cat([p, t_ids], 1).to(device),
            "anchor_attention": torch.cat([p_mask, t_mask], 1).to(device),
            "anchor_labels": labels.to(device)}


def anchor_nll(model: Any, inputs: dict[str, torch.Tensor], label_open: list[int], label_weight: float) -> torch.Tensor | None:
    """SFT's loss on the micro-batch's anchored rows (None when it holds none): the target tokens' NLL,
    the token after `<label>` weighted `label_weight`, over the target token count."""
    labels = inputs["anchor_labels"]
    keep = (labels != -100).any(dim=1)
    if not keep.any():
        return None
    labels, ids, attention = labels[keep], inputs["anchor_ids"][keep], inputs["anchor_attention"][keep]
    width = labels.shape[1]
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # left padding: each row's positions from 0, as in SFT
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=width + 1).logits
    logits = logits[:, :-1]
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    # label_token_weights reads the label tag in the row before each position: the target holds the tag
    before = torch.full_like(labels[:, :1], -100)
    weights = label_token_weights(torch.cat([before, labels], 1), label_open, label_weight)
    return (per_token * weights).sum() / (labels != -100).sum().clamp(min=1)
