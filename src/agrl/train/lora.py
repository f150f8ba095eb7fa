"""LoRA via PEFT in every stage: the model a TRL trainer starts from, and the LoraConfig it wraps it with.

With `lora_r > 0` the trainer gets `peft_config` and TRL wraps the model (PEFT's LoRA, nothing of
ours); the run saves an adapter directory (and adapter checkpoints, which resume), whose base is the
absolute path of the starting checkpoint. A stage may start from an earlier stage's adapter run:
with `lora_r > 0` it keeps training that adapter (its own rank and targets; DPO's reference is a
frozen copy of it, made by TRL), with `lora_r: 0` the adapter is merged into its base and every
weight trains.

    model, peft_config = starting_model(run, args); SFTTrainer(model=model, peft_config=peft_config, ...)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agrl.model import load as models
from agrl.train.args import RunArgs

log = logging.getLogger("agrl.train")


def lora_config(run: RunArgs):
    """PEFT's LoraConfig from the run's lora_* keys (None when lora_r is 0)."""
    if not run.lora_r:
        return None
    from peft import LoraConfig

    targets = run.lora_target_modules
    return LoraConfig(
        r=run.lora_r,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.lora_dropout,
        # PEFT takes the shorthand only as a plain string
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        task_type="CAUSAL_LM",
    )


def starting_model(run: RunArgs, args: Any) -> tuple[Any, Any]:
    """(model or model path, peft_config) to hand a TRL trainer."""
    if not models.is_adapter(run.model):
        # An absolute path, so the adapter's base_model_name_or_path works from any directory.
        path = str(Path(run.model).resolve()) if run.lora_r and Path(run.model).is_dir() else run.model
        return path, lora_config(run)
    from transformers import set_seed
    from trl.trainer.utils import create_model_from_path  # what TRL uses for a path: same dtype rules

    set_seed(args.seed)
    init = dict(args.model_init_kwargs or {}) | {"device_map": None}
    base = create_model_from_path(models.adapter_base(run.model), **init)
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, run.model, is_trainable=bool(run.lora_r))
    if not run.lora_r:
        return model.merge_and_unload(), None
    saved = model.peft_config["default"]
    if (saved.r, saved.lora_alpha) != (run.lora_r, run.lora_alpha):
        log.warning(
            "%s: training its adapter as saved (r %s, alpha %s), not lora_r %s / lora_alpha %s",
            run.model, saved.r, saved.lora_alpha, run.lora_r, run.lora_alpha,
        )
    return model, None
