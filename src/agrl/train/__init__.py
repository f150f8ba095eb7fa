"""Training stages on TRL: sft, dpo, grpo, grpo_pr, agr_only, agrl; one YAML config per run.

`train(config, overrides)` loads and checks the whole config first (config.py), then every path it
names (`preflight`: model, data, scheme, rules, output_dir), and only then writes the resolved config
to output_dir and runs the stage's `main`. Under torchrun/accelerate every process runs it.

    agrl train configs/grpo.yaml --set max_steps=4      # or: train("configs/grpo.yaml", ["max_steps=4"])
"""

from __future__ import annotations

import logging
from pathlib import Path

from agrl.train.config import load_config, preflight, write_resolved


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
    if method == "sft":
        from agrl.train import sft

        sft.main(run, args, callbacks)
    elif method == "dpo":
        from agrl.train import dpo

        dpo.main(run, args, callbacks)
    else:
        from agrl.train import grpo

        grpo.main(run, args, method, callbacks)
    return Path(args.output_dir)
