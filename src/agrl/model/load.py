"""Load a local Hugging Face causal LM or a LoRA adapter run for inference; generate completions in batches.

The one loader of eval, score, serve and DPO pass@N sampling: a model directory is either a full
checkpoint or a PEFT adapter directory (`adapter_config.json`, written by a `lora_r > 0` run), whose
base checkpoint is named inside it; for inference the adapter is merged into the base in memory.
`merge` writes that merged model as a plain checkpoint (`agrl model merge`). Prompts are
already-templated text (prompt.prompt_text); completions are decoded with special tokens skipped,
which keeps our format tags (tiny.py registers them as non-special added tokens; other models spell
them as text).

    model, tokenizer = load("runs/sft"); texts = generate(model, tokenizer, prompts, max_new_tokens=160)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from agrl.errors import UserError
from agrl.files import model_dir


def check_device(device: str | None) -> None:
    """UserError for a device this host does not have (before any model is loaded)."""
    if not device:
        return
    try:
        target = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a device name (use cpu, cuda or cuda:N)") from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: this host has no CUDA device; use --device cpu or leave it unset")
        if target.index is not None and target.index >= count:
            raise UserError(f"--device {device}: this host has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif target.type != "cpu":
        raise UserError(f"--device {device}: only cpu and cuda devices are supported")


def pick_device(device: str | None = None) -> torch.device:
    if device:
        check_device(device)
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    """A PEFT adapter directory (a LoRA run's output or checkpoint), not a full checkpoint."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base checkpoint an adapter directory was trained on (its `base_model_name_or_path`)."""
    base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise UserError(f"{path}: the adapter's base model {base!r} is not a local model directory")
    return base


def load_model(path: str | Path, dtype: torch.dtype | None = None, trainable: bool = False, merge: bool = False):
    """The model of a full checkpoint, or base + adapter of an adapter directory (a PeftModel;
    `trainable` keeps training that adapter, `merge` folds it into the base weights)."""
    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
    model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    return model.merge_and_unload() if merge else model


def load_tokenizer(path: str | Path):
    """Tokenizer with left padding (generation and last-position scoring) and a pad token."""
    if is_adapter(path) and not (Path(path) / "tokenizer_config.json").is_file():
        path = adapter_base(path)  # an adapter saved without its tokenizer uses the base's
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(path: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None):
    """(model in eval mode on `device`, tokenizer) from a local HF or adapter directory."""
    model_dir(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    target = pick_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if target.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = load_tokenizer(path)
    model = load_model(path, dtype, merge=True).to(target)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Write base + adapter, merged (fp32), with the tokenizer, as a plain checkpoint in `out_dir`."""
    from agrl.files import atomic_dir

    if not is_adapter(adapter_dir):
        raise UserError(f"{adapter_dir}: not a LoRA adapter directory (no {ADAPTER_CONFIG})")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; choose a new --out")
    model_dir(adapter_dir, "ADAPTER")  # its config, weights and base, each named when unusable
    model = load_model(adapter_dir, torch.float32, merge=True)
    with atomic_dir(out) as tmp:  # a failed write leaves no half model behind
        model.save_pretrained(tmp)
        load_tokenizer(adapter_dir).save_pretrained(tmp)
    return out


def _stop_ids(model: PreTrainedModel, tokenizer) -> list[int]:
    """eos of the generation config and of the tokenizer (chat models end turns with their own token)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 128,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int | None = None,
    top_p: float = 1.0,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """For each prompt, `num_return_sequences` decoded completions (prompt text excluded).

    Prompts are sorted by length into batches (less padding); results come back in input order.
    With `seed`, sampling is reproducible for the same prompts and batch size. `on_batch(n)` is
    called after each batch of n prompts (a progress bar).
    """
    if seed is not None:
        torch.manual_seed(seed)
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[str]] = [[] for _ in prompts]
    device = model.device
    stop = _stop_ids(model, tokenizer)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer(
            [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_return_sequences,
            do_sample=do_sample,
            temperature=temperature if do_sample else None,
            top_p=top_p if do_sample else None,
            top_k=None,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for row, text in enumerate(texts):
            results[chunk[row // num_return_sequences]].append(text)
        if on_batch is not None:
            on_batch(len(chunk))
    return results
