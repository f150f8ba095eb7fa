"""Training stages on TRL: the methods of train/methods.py (sft, dpo, grpo, ..., agrl); one YAML config per run.

`train(config, overrides)` loads and checks the whole config first (config.py), then every path it
names (`preflight`: model, data, scheme, rules, output_dir), and only then writes the resolved config
to output_dir and trains the method's stage (methods.train_stage). Under torchrun/accelerate every
process runs it. Modules, imports pointing down: methods -> sft, dpo, agr_immediate -> agr -> grpo;
each stage -> common, lora -> args; config -> methods.

    agrl train grpo --set max_steps=4      # or: train("grpo", ["max_steps=4"])
"""

from __future__ import annotations

import logging
from pathlib import Path

from agrl.train.config import load_config, preflight, write_resolved
from agrl.train.methods import train_stage


def train(config: str | Path | None, overrides: list[str] | tuple[str, ...] = (), force: bool = False,
          callbacks: tuple = ()) -> Path:
    """Run one training stage; returns output_dir (final model, config.yaml, metrics.jsonl, checkpoints).

    A rerun into the same output_dir resumes; output_dir holding anything else needs `force`.
    `callbacks`: TrainerCallbacks added to the stage's trainer (the demo's progress display)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    method, run, args = load_config(config, overrides)
    preflight(method, run, args, force, main_process=args.process_index == 0)
    if args.process_index == 0:
        write_resolved(run, args, args.output_dir)
    train_stage(method, run, args, callbacks)
    return Path(args.output_dir)
