"""Macro-F1 of the SFT judge against SFT steps, for one model shape and data recipe (issue: a judge that reads).

Per run: synthetic data (agrl.synth.generate), a fresh model (agrl.tiny.init_model) or a given one,
SFT through `configs/sft.yaml` with a checkpoint every `--eval-every` steps, then each checkpoint's
label posterior (one forward pass, agrl.score.Scorer) on eval_balanced: macro-F1 overall, on the
common families (plain, brand, attribute, price) and on the hard ones. The final model is also
evaluated as `agrl eval` does it (greedy decoding, strict parser) on eval_balanced and eval_wild.
A rerun skips what exists (data, model, training resumes from its last checkpoint, scored points).

    .venv/bin/python bench/sft_curve.py --out runs/curve/tiny --size tiny --steps 600 --eval-every 150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("plain", "brand", "attribute", "price")


def family_f1(records, labels) -> dict[str, float]:
    from agrl.metrics import macro_f1

    out = {"overall": macro_f1([r.label for r in records], labels, [1, 2, 3, 4])}
    groups = {"common": COMMON, "hard": tuple(f for f in {r.family for r in records} if f not in COMMON)}
    groups |= {f: (f,) for f in sorted({r.family for r in records})}
    for name, families in groups.items():
        idx = [i for i, r in enumerate(records) if r.family in families]
        out[name] = macro_f1([records[i].label for i in idx], [labels[i] for i in idx], [1, 2, 3, 4])
    return out


def posterior_point(model_dir: Path, records) -> dict[str, float]:
    from agrl.score import Scorer

    scorer = Scorer(model_dir, batch_size=64)
    return family_f1(records, [r.label for r in scorer.score(records)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", type=Path, help="start from this model dir instead of a fresh one")
    p.add_argument("--size", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--sft-rows", type=int, default=600)
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--eval-rows", type=int, default=1000)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra `agrl train` key=value")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--final-eval", action="store_true", help="also run greedy `agrl eval` on the final model")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from agrl import synth
    from agrl.data import load_records
    from agrl.tiny import init_model
    from agrl.train import train

    data = a.out / "data"
    if not (data / "eval_wild.jsonl").exists():
        sizes = {"sft": a.sft_rows, "rl": 100, "eval_balanced": a.eval_rows, "eval_wild": a.eval_rows}
        synth.write(data, synth.generate(seed=a.data_seed, sizes=sizes, noise=a.noise))
    model = a.model or a.out / "model"
    if a.model is None and not (model / "config.json").exists():
        init_model(model, size=a.size, seed=a.seed)
    run = a.out / "sft"
    t0 = time.perf_counter()
    overrides = [f"model={model}", f"train_file={data / 'sft.jsonl'}", f"output_dir={run}", f"max_steps={a.steps}",
                 f"save_steps={a.eval_every}", "save_total_limit=null", "num_train_epochs=1000",
                 "logging_steps=10", "disable_tqdm=true", f"seed={a.seed}", *a.overrides]
    if not (run / "model.safetensors").exists():
        train(ROOT / "configs" / "sft.yaml", overrides)
    train_s = time.perf_counter() - t0
    records = load_records(data / "eval_balanced.jsonl")
    curve_file = a.out / "curve.json"
    result = json.loads(curve_file.read_text()) if curve_file.exists() else {"points": {}}
    for ckpt in sorted(run.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1])):
        step = ckpt.name.split("-")[1]
        if step not in result["points"]:
            result["points"][step] = posterior_point(ckpt, records)
            print(step, {k: round(v, 3) for k, v in result["points"][step].items()}, flush=True)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result |= {
        "args": {k: str(v) for k, v in vars(a).items()},
        "train_s": result.get("train_s") or train_s,
        "loss": {row["step"]: row["loss"] for row in metrics if "loss" in row},
        "machine": f"{platform.node()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "date": datetime.now(UTC).date().isoformat(),
    }
    if a.final_eval:
        from agrl.evaluate import evaluate

        for split in ("eval_balanced", "eval_wild"):
            res = evaluate(run, data / f"{split}.jsonl", a.out / "eval" / f"{split}.json", batch_size=64,
                           max_new_tokens=128, resamples=200)
            recs = load_records(data / f"{split}.jsonl")
            preds = [json.loads(line) for line in
                     (a.out / "eval" / f"{split}.predictions.jsonl").read_text().splitlines()]
            labels = [row.get("pred") for row in preds]
            result.setdefault("final", {})[split] = {
                "families": family_f1(recs, labels),
                **{k: res["metrics"].get(k) for k in
                   ("macro_f1", "accuracy", "good_f1", "format_valid", "adherence", "step_accuracy", "ece")},
            }
            print(split, result["final"][split], flush=True)
    curve_file.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
