"""Training speed, lever by lever: SFT non-pad tokens/s and pad share, and a GRPO-family step's time.

Issue 19's claim: SFT of SmolLM2-135M on one H200 at >= 170k non-pad tokens/s (>= 20% of the chip's
~790 TFLOP/s bf16 matrix rate by the 6 * params * tokens count), and a GRPO/AGRL step of 8 prompts x 4
completions in <= 1 s. The issue's run on the GPU host did ~17k tokens/s. Every run here is `agrl train`
itself (agrl.train.train, in process) on the same records, so a lever that wins here wins there.

SFT rows are a ladder: each adds one lever to the row above (`LADDER`), so a row's gain over the one
above is that lever's. `issue` is the issue's run as it ran on the host: TRL's default gradient
checkpointing (transformers 5.17 has no `activation_checkpointing` key, so the configs' `false` was
dropped) and the label weight as a `compute_loss_func` (full logits and a second forward pass).
Per row: median step wall time (warm-up dropped), non-pad tokens/s over the measured steps (TRL's
`num_tokens`), pad share of the first batches (pad positions / all positions), model TFLOP/s
(6 * params * tokens / s) and, on a GPU, its share of --peak-tflops; start-up (model load and
tokenisation) apart. GRPO rows: GRPO and AGRL (deferred) steps of --prompts x --num-generations.

    python bench/gpu_speed.py --model runs/smollm2 --train-file runs/home_depot/train.jsonl \
        --scheme three_level --out bench/results/gpu_speed_h200.json          # GPU (bench/gpu_stage.sh)
    python bench/gpu_speed.py --model runs/smollm2 --train-file runs/demo/data/sft.jsonl \
        --batch 8 --steps 2 --warmup 1 --grpo none --out /tmp/speed.json        # CPU: the pad shares
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from step_time import StepClock  # bench/ is on sys.path: this script's folder
from transformers import AutoConfig, AutoModelForCausalLM

from agrl.train import sft
from agrl.train import train as agrl_train

# (name, `agrl train` keys it adds, what it does to results). Cumulative: a row keeps every key above it.
LADDER: list[tuple[str, dict, str]] = [
    ("issue", {}, "the issue's host run: checkpointing on, label weight on full logits + a 2nd forward"),
    ("no_checkpointing", {"gradient_checkpointing": False}, "same results (no recompute of activations)"),
    ("fused_label_loss", {}, "same loss (TRL's fused LM head, one forward): tests/test_gpu_path.py"),
    ("group_by_length", {"train_sampling_strategy": "group_by_length"},
     "changes results: batches of similar length (another data order)"),
    ("padding_free", {"padding_free": True, "max_length": None},
     "same loss per batch (tests/test_gpu_path.py) where no row exceeds max_length (TRL then truncates none)"),
    ("fused_adamw", {"optim": "adamw_torch_fused"}, "same update up to float rounding"),
    # If a step's cost is mostly per-step overhead (the run: ~2% of peak), 4x the rows a step is ~4x
    # the tokens/s; the rate then needs choosing again.
    ("batch_256", {"per_device_train_batch_size": 256}, "changes results: 4x fewer, larger steps"),
]
# Batching by tokens: BFD packing fills rows of 4,096 tokens (~19 sequences of ~210), 4 rows to a step
# (about the 64 sequences); a step's sequence count varies, so results change.
LADDER.append(("packed_4k", {"packing": True, "packing_strategy": "bfd", "max_length": 4096,
                             "per_device_train_batch_size": 4}, "changes results: ~64-80 sequences a step, by tokens"))
GPU_ONLY = {"fused_adamw", "batch_256"}  # CUDA kernels; minutes a step on 2 CPU cores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="HF model dir (SmolLM2: `agrl model import smollm2`)")
    p.add_argument("--train-file", required=True, help="labelled records (SFT rows; RL prompts)")
    p.add_argument("--scheme", default="default")
    p.add_argument("--batch", type=int, default=64, help="SFT rows a step (the issue's run: 64)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="measured steps a row")
    p.add_argument("--warmup", type=int, default=3, help="steps dropped from the start of a row")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--label-weight", type=float, default=10.0, help="sft_label_weight (the issue's run: 10)")
    p.add_argument("--levers", default=",".join(name for name, _, _ in LADDER if name != "packed_4k"),
                   help="ladder rows to run, in ladder order (a skipped row's keys are still carried up)")
    p.add_argument("--grpo", default="grpo,agrl", help="GRPO-family methods to time, or none")
    p.add_argument("--prompts", type=int, default=8, help="prompts a GRPO step")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=96)
    p.add_argument("--grpo-steps", type=int, default=5)
    p.add_argument("--records", type=int, default=0,
                   help="SFT records a row reads (default: batch x steps; more lets group_by_length group)")
    p.add_argument("--pad-batches", type=int, default=8, help="batches the pad share is read from")
    p.add_argument("--pad-only", action="store_true", help="only the pad share of each SFT row (no steps)")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="the chip's bf16 matrix rate (H200: ~790)")
    p.add_argument("--out", required=True, help="results JSON")
    return p.parse_args(argv)


class PadOnly(Exception):
    """Raised by Meter once the pad share is read, when no steps are wanted (--pad-only)."""


class Meter(StepClock):
    """StepClock's wall and CPU time of each step, TRL's running non-pad token count at each log, the
    pad share of the first batches, and when training started."""

    def __init__(self, pad_batches: int, pad_only: bool = False):
        super().__init__()
        self.pad_batches, self.pad_only, self.tokens = pad_batches, pad_only, []
        self.pad = self.positions = 0
        self.began = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        for index, batch in enumerate(train_dataloader if self.pad_batches else ()):
            if index == self.pad_batches:
                break
            ids = batch["input_ids"]
            real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["position_ids"].numel()
            self.positions += ids.numel()
            self.pad += ids.numel() - int(real)
        if self.pad_only:
            raise PadOnly
        self.began = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.tokens.append((state.global_step, logs["num_tokens"]))


def full_logits_label_loss(trainer, label_open, weight) -> None:
    """The label weight as the issue's run had it (a compute_loss_func): the `issue` row's loss."""
    trainer.compute_loss_func = sft.label_weighted_loss(label_open, weight)


def as_set(key: str, value) -> str:
    """An `agrl train --set` item: strings quoted (YAML would read "no" as false), None as null."""
    return f"{key}={json.dumps(value) if isinstance(value, str) or value is None else value}"


def common_keys(opts, out_dir: Path, gpu: bool) -> list[str]:
    keys = {"model": opts.model, "train_file": opts.train_file, "scheme": opts.scheme, "output_dir": out_dir,
            "seed": 0, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "disable_tqdm": True,
            "learning_rate": opts.lr, "auto_resume": False, "bf16": gpu}
    return [as_set(k, str(v) if isinstance(v, Path) else v) for k, v in keys.items()]


def run(overrides: list[str], meter: Meter) -> float:
    """One `agrl train` run; returns its wall seconds."""
    start = time.perf_counter()
    try:
        agrl_train(None, overrides, force=True, callbacks=(meter,))
    except PadOnly:
        pass
    wall = time.perf_counter() - start
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return wall


def sft_row(opts, name: str, keys: dict, work: Path, gpu: bool, params: int) -> dict:
    steps = opts.warmup + opts.steps
    overrides = [*common_keys(opts, work / name, gpu), "method=sft", f"max_steps={steps}",  # keys may override these
                 f"per_device_train_batch_size={opts.batch}", f"max_length={opts.max_length}",
                 f"sft_label_weight={opts.label_weight}", f"max_train_records={max(opts.records, opts.batch * steps)}",
                 *(as_set(k, v) for k, v in keys.items())]
    meter = Meter(opts.pad_batches, opts.pad_only)
    wall = run(overrides, meter)
    pad = {"pad_share": meter.pad / max(meter.positions, 1), "pad_batches": opts.pad_batches, "keys": keys}
    if opts.pad_only:
        return pad | {"startup_s": wall}
    measured = meter.wall[opts.warmup:]
    counts = dict(meter.tokens)
    tokens = counts[steps] - counts[opts.warmup] if opts.warmup else counts[steps]
    rate = tokens / sum(measured)
    tflops = 6 * params * rate / 1e12
    return {"median_step_s": statistics.median(measured), "median_step_cpu_s": statistics.median(meter.cpu[opts.warmup:]),
            "steps": len(measured), "tokens": tokens,
            "tokens_per_s": rate, "tflops": tflops, "peak_share": tflops / opts.peak_tflops if gpu else None,
            "startup_s": wall - sum(meter.wall)} | pad


def grpo_row(opts, method: str, work: Path, gpu: bool) -> dict:
    steps = opts.warmup + opts.grpo_steps
    rows = opts.prompts * opts.num_generations
    overrides = [*common_keys(opts, work / method, gpu), f"method={method}", f"max_steps={steps}",
                 f"per_device_train_batch_size={rows}", f"num_generations={opts.num_generations}",
                 f"max_completion_length={opts.max_completion_length}", "temperature=0.7", "beta=0.0",
                 "gradient_checkpointing=false", f"max_train_records={opts.prompts * steps}"]
    if method in ("agrl", "agr_only"):
        overrides += ["agr_mode=deferred", f"agr_k={max(1, opts.num_generations // 2)}"]
    meter = Meter(0)
    wall = run(overrides, meter)
    measured = meter.wall[opts.warmup:]
    return {"median_step_s": statistics.median(measured), "steps": len(measured), "rows": rows,
            "startup_s": wall - sum(meter.wall)}


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU x{os.cpu_count()}, torch {torch.__version__}"


def count_params(model_dir: str) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> dict:
    import transformers
    import trl

    opts = parse_args(argv)
    gpu = torch.cuda.is_available()
    wanted = opts.levers.split(",")
    unknown = set(wanted) - {name for name, _, _ in LADDER}
    if unknown:
        sys.exit(f"--levers: unknown {sorted(unknown)}; the ladder is {[n for n, _, _ in LADDER]}")
    params = count_params(opts.model)
    report = {"machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__},
              "params": params, "options": vars(opts), "sft": {}, "grpo": {}}
    keys: dict = {}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: a run cut short by the device's time limit keeps what it finished
        Path(opts.out).write_text(json.dumps(report, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        for name, more, effect in LADDER:
            keys = keys | more
            if name not in wanted or (name in GPU_ONLY and not gpu):
                continue
            patch = sft.weigh_label_token
            if LADDER.index((name, more, effect)) < 2:  # the rows before fused_label_loss
                sft.weigh_label_token = full_logits_label_loss
            try:
                row = sft_row(opts, name, dict(keys), Path(tmp), gpu, params)
            finally:
                sft.weigh_label_token = patch
            report["sft"][name] = row | {"effect": effect}
            save()
            print(f"{name}: {row.get('tokens_per_s', 0):.0f} tokens/s, pad {row['pad_share']:.1%}", flush=True)
        for method in [m for m in opts.grpo.split(",") if m and m != "none" and not opts.pad_only]:
            report["grpo"][method] = grpo_row(opts, method, Path(tmp), gpu)
            save()
            print(f"{method}: {report['grpo'][method]['median_step_s']:.2f} s a step", flush=True)
    print_table(report)
    return report


def print_table(report: dict) -> None:
    o = report["options"]
    print(f"\nTraining speed, {report['machine']}, {report['date']}, {report['params'] / 1e6:.1f}M params, "
          f"SFT batch {o['batch']}, {o['steps']} steps (+{o['warmup']} warm-up)\n")
    print("| SFT ladder (each row adds one lever) | step s | step CPU s | non-pad tokens/s | x issue | pad share "
          "| TFLOP/s (6PT) | of peak | start-up s | effect on results |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base = next(iter(report["sft"].values()), None)
    for name, r in report["sft"].items():
        if "tokens_per_s" not in r:  # --pad-only
            print(f"| {name} | - | - | - | - | {r['pad_share']:.1%} | - | - | {r['startup_s']:.1f} | {r['effect']} |")
            continue
        peak = "-" if r["peak_share"] is None else f"{r['peak_share']:.1%}"
        print(f"| {name} | {r['median_step_s']:.3f} | {r['median_step_cpu_s']:.3f} | {r['tokens_per_s']:.0f} | "
              f"{r['tokens_per_s'] / base['tokens_per_s']:.2f} | {r['pad_share']:.1%} | {r['tflops']:.2f} | {peak} "
              f"| {r['startup_s']:.1f} | {r['effect']} |")
    if report["grpo"]:
        print(f"\n| GRPO family, {o['prompts']} prompts x {o['num_generations']} completions "
              f"(<= {o['max_completion_length']} tokens) | step s | start-up s |\n|---|---:|---:|")
        for method, r in report["grpo"].items():
            print(f"| {method} | {r['median_step_s']:.2f} | {r['startup_s']:.1f} |")


if __name__ == "__main__":
    main()
