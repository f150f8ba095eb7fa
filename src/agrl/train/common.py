"""What every training stage shares: records, the rules engine, metrics.jsonl, resume, the final save.

A stage's `main(run, args)` builds its datasets and TRL trainer, then calls `fit(trainer, run, args)`,
which resumes from the last checkpoint in output_dir (auto_resume), trains, and saves the final
model and tokenizer in Hugging Face format at output_dir.

    trainer.add_callback(JsonlMetrics(args.output_dir)); fit(trainer, run, args)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from agrl.data.records import Record, load_records
from agrl.errors import UserError
from agrl.files import atomic_write, plain_modes, read_jsonl_tolerant, safetensors_problem
from agrl.core.output import check_reasoning
from agrl.core.rules import RulesEngine
from agrl.data.schemes import Scheme, load_scheme
from agrl.train.args import RunArgs

log = logging.getLogger("agrl.train")
METRICS_FILE = "metrics.jsonl"


def load_train_records(run: RunArgs, scheme: Scheme, path: str | None = None, report=log.warning) -> list[Record]:
    """The training records (first `max_train_records`); every one must carry a gold label, and a
    `reasoning` (SFT's target) must be one the parser accepts."""
    source = path or run.train_file
    records = load_records(source, scheme, on_bad_row=run.on_bad_row, report=report, checks=[check_reasoning])
    if run.max_train_records is not None:
        records = records[: run.max_train_records]
    unlabelled = [r.id or str(i) for i, r in enumerate(records) if r.label is None]
    if unlabelled:
        raise UserError(f"{source}: {len(unlabelled)} record(s) without a label, e.g. {unlabelled[:3]}; "
                        "label them with `agrl data label`")
    if not records:
        raise UserError(f"{source}: no training records")
    return records


def setup(run: RunArgs, path: str | None = None) -> tuple[Scheme, list[Record], RulesEngine]:
    """Scheme, training records and the rules engine built from their catalog."""
    scheme = load_scheme(run.scheme)
    records = load_train_records(run, scheme, path)
    engine = RulesEngine.from_records(records, scheme=scheme, config=run.rules_config)
    return scheme, records, engine


class JsonlMetrics(TrainerCallback):
    """One JSON row per logging step with everything the trainer logged (rewards, AGR counters, loss)."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume, drop rows the killed run logged past its last checkpoint: they are logged again.
        # A kill mid-append leaves half a last line: read_jsonl_tolerant drops it.
        if state.is_world_process_zero and self.path.exists():
            kept = [row for row in read_jsonl_tolerant(self.path) if row.get("step", 0) <= state.global_step]
            atomic_write(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch} | {k: _plain(v) for k, v in logs.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, allow_nan=False) + "\n")


class ProgressLines(TrainerCallback):
    """Training progress as log lines (progress.Meter: steps, rate, elapsed, ETA) when stderr is not a
    terminal: the trainer's tqdm bar redraws one line with carriage returns, which a log shows as one
    ever-growing line, or not at all until the end."""

    def __init__(self, stream=None):
        self.stream, self.meter = stream, None

    def on_train_begin(self, args, state, control, **kwargs):
        from agrl.progress import Meter

        if state.is_world_process_zero:
            self.meter = Meter("train", state.max_steps or None, "steps", self.stream, start=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.meter is not None:
            self.meter.update(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.meter is not None:
            self.meter.close()
            self.meter = None


def _plain(value: Any) -> Any:
    """A JSON value: a non-finite float (a NaN loss, an all-skipped reward's mean) is null, as JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, (int, str, bool, type(None))) else str(value)


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a kill or a full disk cut it short), or None.

    The Trainer writes trainer_state.json last (weights, optimizer, every stage's own state, rng, then
    it): a checkpoint without it is half-written, and each file it has is checked for a cut."""
    import zipfile

    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "trainer_state.json missing or cut short"
    for file in path.iterdir():
        if file.suffix == ".json" and file.name != "trainer_state.json":
            try:  # a stage's own state (agr_state.json), a config: written whole, before trainer_state.json
                json.loads(file.read_text())
            except (OSError, ValueError):
                return f"{file.name}: not valid JSON (cut short)"
        if file.suffix == ".safetensors" and (problem := safetensors_problem(file)):
            return f"{file.name}: {problem}"
        if file.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(file):  # torch.save writes a zip
            return f"{file.name}: truncated"
    return None


def last_good_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint-N that is complete; a damaged newer one is skipped with a warning."""
    found = sorted((p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit()),
                   key=lambda p: int(p.name[11:]), reverse=True)
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("skipping %s: %s", path, problem)
    return None


def resume_checkpoint(run: RunArgs, args: Any) -> str | None:
    """An explicit `resume_from_checkpoint`, else (auto_resume) the last complete checkpoint-N in output_dir."""
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if run.auto_resume and Path(args.output_dir).is_dir():
        return last_good_checkpoint(args.output_dir)
    return None


def fit(trainer: Any, run: RunArgs, args: Any, callbacks: tuple = ()) -> Path:
    """Train (resuming when there is a checkpoint), then save model + tokenizer to output_dir.
    `callbacks`: more TrainerCallbacks (the demo's progress display)."""
    from agrl.progress import is_terminal

    lines = () if is_terminal() else (ProgressLines(),)  # on a terminal the trainer's own bar shows
    for callback in (JsonlMetrics(args.output_dir), *lines, *callbacks):
        trainer.add_callback(callback)
    checkpoint = resume_checkpoint(run, args)
    if checkpoint:
        log.warning("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(args.output_dir)  # weights + tokenizer, HF format
    if trainer.is_world_process_zero():  # safetensors saves through a 0600 temp file: the umask's modes
        plain_modes(args.output_dir)
    # No trainer.end(): destroying the gloo group while the DDP-wrapped model is still alive hangs one rank
    # when the trainer is freed (torch 2.13, CPU torchrun); process exit tears the group down instead.
    return Path(args.output_dir)
