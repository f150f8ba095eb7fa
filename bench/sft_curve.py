"""Macro-F1 of an SFT judge against its training steps (issue: a judge that reads).

Runs a demo recipe (`agrl.run.demo.run_demo`: data, model, stages, greedy eval, report; a rerun resumes)
whose stage saves checkpoints, then reads each checkpoint's label posterior (one forward pass,
`agrl.model.score.Scorer`) on each eval split: macro-F1 overall, on the common families (plain, brand,
attribute, price), on the hard ones (negation, alternative, accessory, model) and per family.
The stage's final greedy eval (`agrl eval`'s numbers) is copied beside the curve.

    .venv/bin/python bench/sft_curve.py --recipe base --out runs/base --stage base --stage base2 \\
        --reference src/agrl/judges/tiny-base --result bench/results/sft_curve_base.json
    # the shipped base judge, ~40 min on 2 quiet cores; --reference scores the shipped one beside the rebuild
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

COMMON = ("plain", "brand", "attribute", "price")
SPLITS = ("eval_balanced", "eval_wild")


def family_f1(records, labels) -> dict[str, float | None]:
    """Macro-F1 overall, on the common and the hard families, and per family."""
    from agrl.evaluation.metrics import macro_f1

    families = sorted({r.family for r in records})
    groups = {"overall": families, "common": [f for f in families if f in COMMON],
              "hard": [f for f in families if f not in COMMON]} | {f: [f] for f in families}
    out = {}
    for name, members in groups.items():
        idx = [i for i, r in enumerate(records) if r.family in members]
        out[name] = macro_f1([records[i].label for i in idx], [labels[i] for i in idx], [1, 2, 3, 4])
    return out


def posterior_f1(model_dir: Path, records) -> dict[str, float | None]:
    from agrl.model.score import Scorer

    return family_f1(records, [r.label for r in Scorer(model_dir, batch_size=64).score(records)])


def _train_runtime(run: Path) -> float | None:
    """The stage's training wall time, as the Trainer logged it at the end (metrics.jsonl)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next((row["train_runtime"] for row in reversed(rows) if "train_runtime" in row), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True, help="demo recipe name or YAML (its stage must save checkpoints)")
    p.add_argument("--out", type=Path, required=True, help="the run directory (resumed when it exists)")
    p.add_argument("--stage", action="append", required=True,
                   help="a recipe stage whose checkpoints make the curve (repeat for stages run one after another)")
    p.add_argument("--result", type=Path, help="result JSON (default OUT/sft_curve.json)")
    p.add_argument("--reference", type=Path, help="also score this model dir (e.g. the shipped base judge)")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from agrl.data.records import load_records
    from agrl.run.demo import run_demo

    run_demo(a.out, a.recipe)
    result_file = a.result or a.out / "sft_curve.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    points = result.setdefault("points", {})
    splits = {split: load_records(a.out / "data" / f"{split}.jsonl") for split in SPLITS}
    offset = 0  # steps of the stages before: the curve counts SFT steps from the fresh model
    for stage in a.stage:
        ckpts = sorted((a.out / stage).glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
        for ckpt in ckpts:
            step = str(offset + int(ckpt.name.split("-")[1]))
            if step not in points:
                points[step] = {"checkpoint": str(ckpt)} | {
                    split: posterior_f1(ckpt, records) for split, records in splits.items()}
                print(step, {s: round(points[step][s]["overall"], 3) for s in SPLITS}, flush=True)
        offset += int(ckpts[-1].name.split("-")[1]) if ckpts else 0
    run = a.out / a.stage[-1]
    if a.reference:
        result["reference"] = {"model": str(a.reference)} | {
            split: posterior_f1(a.reference, records) for split, records in splits.items()}
    final = {}
    for split, records in splits.items():
        evaluation = json.loads((run / "eval" / f"{split}.json").read_text())
        rows = [json.loads(line) for line in Path(evaluation["predictions"]).read_text().splitlines()]
        final[split] = {"greedy_families": family_f1(records, [row["pred"] for row in rows]),
                        **{k: evaluation["metrics"].get(k) for k in
                           ("macro_f1", "accuracy", "good_f1", "format_valid", "adherence", "step_accuracy",
                            "ece")}}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result |= {
        "command": f"bench/sft_curve.py --recipe {a.recipe} --out {a.out} " + " ".join(f"--stage {s}" for s in a.stage),
        "final": final,
        "train_s": {s: _train_runtime(a.out / s) for s in a.stage},
        "loss": {row["step"]: row["loss"] for row in metrics if "loss" in row},
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "date": datetime.now(UTC).date().isoformat(),
    }
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({s: {k: round(v, 3) for k, v in f["greedy_families"].items() if v is not None}
                      for s, f in final.items()}, indent=1))


if __name__ == "__main__":
    main()
