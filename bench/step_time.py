"""Step time: GRPO vs AGRL-immediate vs AGRL-deferred on the same model, data, seed and steps.

Spec section 6: deferred replay must cost at most 10% step time over plain GRPO (no extra
generation pass); immediate replay pays a second generation pass for flagged groups. All three
use the same four RRS rewards, so the only difference is AGR. Methods run in interleaved rounds
(GRPO, immediate, deferred, GRPO, ...) so drift on a shared machine hits them alike. Reports the
median optimizer-step wall time (warm-up steps dropped), completion tokens/s, and the
AGR counters; on CPU also the median process CPU time per step, steadier than wall time on a
shared machine. Prints a Markdown table (machine, date) and writes JSON.

    .venv/bin/python bench/step_time.py --size tiny --steps 8 --out bench/results/step_time.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import GRPOConfig

from agrl.core.rewards import REWARD_NAMES, reward_funcs
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme
from agrl.core.synth import generate
from agrl.model.tiny import init_model
from agrl.train.agr import AGRLConfig
from agrl.train.grpo import CountingGRPOTrainer, grpo_rows
from agrl.train.methods import trainer_class

METHODS = ("grpo", "agrl_immediate", "agrl_deferred")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model-dir", help="an HF model dir; default: build one with agrl.model.tiny.init_model(--size)"
    )
    p.add_argument("--size", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--steps", type=int, default=8, help="measured steps per method and round")
    p.add_argument("--warmup", type=int, default=2, help="steps dropped from the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repeats of the three runs")
    p.add_argument("--batch", type=int, default=16, help="per-device generation batch (rows)")
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=128, help="as recipes/stages/agrl.yaml")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="bench/results/step_time.json")
    return p.parse_args(argv)


class CompletionTokens:
    """A zero-weight reward that counts the completion tokens it is shown (every scored rollout,
    guided passes included)."""

    __name__ = "completion_tokens"

    def __init__(self):
        self.count = 0

    def __call__(self, completions, completion_ids, **kwargs) -> list[float]:
        self.count += sum(len(ids) for ids in completion_ids)
        return [0.0] * len(completions)


class StepClock(TrainerCallback):
    """Wall and process CPU time of each optimizer step. On a shared CPU box the CPU time is the
    steadier measure (other jobs stretch wall time); on a GPU only wall time means anything."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def run_method(method: str, model_dir: str, rows: list[dict], engine, opts, out_dir: str) -> dict:
    scheme = load_scheme("default")
    funcs, weights = reward_funcs(REWARD_NAMES, scheme, table=engine.table)
    counter = CompletionTokens()
    common = {
        "output_dir": out_dir,
        "per_device_train_batch_size": opts.batch,
        "num_generations": opts.num_generations,
        "max_completion_length": opts.max_completion_length,
        "max_steps": opts.warmup + opts.steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": opts.seed,
        "bf16": opts.bf16,
        "use_cpu": not torch.cuda.is_available(),
        "reward_weights": [*weights, 0.0],
        "disable_tqdm": True,
    }
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if opts.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    kwargs = {
        "model": model,
        "reward_funcs": [*funcs, counter],
        "train_dataset": Dataset.from_list(rows),
        "processing_class": tokenizer,
    }
    if method == "grpo":
        trainer = CountingGRPOTrainer(args=GRPOConfig(**common), **kwargs)
    else:
        args = AGRLConfig(**common, agr_mode=method.removeprefix("agrl_"))
        trainer = trainer_class("agrl", args)(args=args, rules_engine=engine, scheme=scheme, **kwargs)
    trainer.remove_callback(PrinterCallback)  # keep the table readable
    clock = StepClock()
    trainer.add_callback(clock)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    logs = [e for e in trainer.state.log_history if "step_time" in e][opts.warmup :]
    agr = {k: [e[k] for e in logs if k in e] for k in ("agr/guided_group_share", "agr/replay_acc")}
    return {
        "step_wall_s": clock.wall[opts.warmup :],
        "step_cpu_s": clock.cpu[opts.warmup :],
        "completion_tokens": counter.count,
        "wall_s": wall,
        "guided_share": statistics.mean(agr["agr/guided_group_share"])
        if agr["agr/guided_group_share"]
        else None,
        "replay_acc": statistics.mean(agr["agr/replay_acc"]) if agr["agr/replay_acc"] else None,
    }


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()} CPU x{os.cpu_count()} ({platform.processor() or 'unknown'}), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    methods = opts.methods.split(",")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    splits = generate(seed=opts.seed)
    records = splits["rl"][: opts.batch // opts.num_generations * (opts.warmup + opts.steps) * 2]
    engine = RulesEngine.from_records([r for rows in splits.values() for r in rows])
    rows = grpo_rows(records, engine)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = opts.model_dir or str(init_model(Path(tmp) / "model", size=opts.size, seed=opts.seed))
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(opts.rounds):
            for method in methods:
                runs[method].append(
                    run_method(method, model_dir, rows, engine, opts, str(Path(tmp) / method))
                )
    summary = {}
    for method, results in runs.items():
        wall = [t for r in results for t in r["step_wall_s"]]
        cpu = [t for r in results for t in r["step_cpu_s"]]
        tokens = sum(r["completion_tokens"] for r in results)
        summary[method] = {
            "median_step_s": statistics.median(wall),
            "median_step_cpu_s": statistics.median(cpu),
            "steps": len(wall),
            "completion_tokens_per_s": tokens / sum(r["wall_s"] for r in results),
            "guided_group_share": results[-1]["guided_share"],
            "replay_acc": results[-1]["replay_acc"],
        }
    base = summary.get("grpo")
    for row in summary.values():
        row["ratio_to_grpo"] = row["median_step_s"] / base["median_step_s"] if base else None
        row["cpu_ratio_to_grpo"] = row["median_step_cpu_s"] / base["median_step_cpu_s"] if base else None
    report = {
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": vars(opts),
        "results": summary,
    }
    print_table(report)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2))
    return report


def print_table(report: dict) -> None:
    o = report["options"]
    print(f"\nStep time, {report['machine']}, {report['date']}")
    print(
        f"size={o['size']} batch={o['batch']} G={o['num_generations']} max_completion={o['max_completion_length']} "
        f"steps={o['steps']}x{o['rounds']} (+{o['warmup']} warm-up) bf16={o['bf16']}\n"
    )
    print(
        "| method | median step wall (s) | x GRPO | median step CPU (s) | x GRPO | completion tok/s "
        "| guided groups | replay acc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for method, r in report["results"].items():
        ratio = "-" if r["ratio_to_grpo"] is None else f"{r['ratio_to_grpo']:.3f}"
        cpu_ratio = "-" if r["cpu_ratio_to_grpo"] is None else f"{r['cpu_ratio_to_grpo']:.3f}"
        share = "-" if r["guided_group_share"] is None else f"{r['guided_group_share']:.2f}"
        acc = "-" if r["replay_acc"] is None else f"{r['replay_acc']:.2f}"
        print(
            f"| {method} | {r['median_step_s']:.3f} | {ratio} | {r['median_step_cpu_s']:.3f} | {cpu_ratio} "
            f"| {r['completion_tokens_per_s']:.0f} | {share} | {acc} |"
        )


if __name__ == "__main__":
    main()
