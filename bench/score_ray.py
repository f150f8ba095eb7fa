"""Batch scoring on Ray against single-process `agrl score`: pairs/s on the same data and model, in one run.

Single-process is score.score_file (what `agrl score` runs), on CPU at one torch thread as each Ray actor
has (`--single-threads`); Ray is score_ray.score_catalog (what `agrl score --ray` runs) on a local cluster that this script
starts (its start-up timed apart), with 1 and then 2 actors, each a fresh output folder. Every time counts
loading the model(s): a run's seconds are from the call to its last result on disk. Each Ray run's
output is checked to hold every pair once. Prints a Markdown table (machine, date) and writes JSON.

    .venv/bin/python bench/score_ray.py --size small --pairs 1200 --out bench/results/score_ray_cpu.json
    python3 bench/score_ray.py --device cuda --size base --pairs 20000 --batch-size 128 \
        --single-threads 0 --actors 1,2 --gpus-per-actor 1,0.5 --out bench/results/score_ray_gpu.json   # bench/gpu_score_ray.sh
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local HF model dir (default: build one with tiny.init_model)")
    parser.add_argument("--size", default="small", help="size to build when --model is not given")
    parser.add_argument("--pairs", type=int, default=1200, help="synthetic pairs to score (JSONL, 4 files)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows-per-shard", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (single-process; Ray actors get GPUs)")
    parser.add_argument("--actors", default="1,2", help="Ray runs: actors in each, comma-separated")
    parser.add_argument("--gpus-per-actor", default="0", help="per Ray run (comma-separated, or one for all)")
    parser.add_argument("--single-threads", default="1", help="torch threads of the single-process runs, "
                        "comma-separated; 0: torch's default (on CPU one thread is what each Ray actor gets)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def write_pairs(folder: Path, pairs: int) -> list[Path]:
    from agrl.core.synth import generate

    records = generate(seed=0, sizes={"eval_wild": pairs})["eval_wild"][:pairs]
    files = []
    for part in range(4):  # a catalog of several files, as a team's exports are
        path = folder / f"part-{part}.jsonl"
        rows = [json.dumps(r.to_dict() | {"id": f"p{i}"}) + "\n" for i, r in enumerate(records) if i % 4 == part]
        path.write_text("".join(rows))
        files.append(path)
    return files


def single_process(model: str, files: list[Path], work: Path, args, threads: int | None) -> dict:
    from agrl.model.score import Scorer, score_file

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    scorer = Scorer(model, batch_size=args.batch_size, device=args.device)
    scored = sum(score_file(scorer, f, work / f"single-{threads}-{f.stem}.jsonl", progress=False).scored for f in files)
    seconds = time.perf_counter() - start
    torch.set_num_threads(before)
    return {"threads": torch.get_num_threads() if threads is None else threads, "pairs": scored,
            "seconds": seconds, "pairs_per_s": scored / seconds}


def ray_run(model: str, folder: Path, work: Path, args, actors: int, gpus: float) -> dict:
    import pandas as pd

    from agrl.model.score_ray import score_catalog

    out = work / f"ray-{actors}"
    start = time.perf_counter()
    report = score_catalog(model, str(folder), out, ray_address="auto", actors=actors, gpus_per_actor=gpus,
                           cpus_per_actor=1, batch_size=args.batch_size, rows_per_shard=args.rows_per_shard)
    seconds = time.perf_counter() - start
    ids = pd.read_parquet(out / "shards", columns=["id"])["id"]
    assert len(ids) == ids.nunique() == args.pairs, "every pair exactly once"
    return {"actors": actors, "gpus_per_actor": gpus, "cpus_per_actor": 1, "shards": report.shards,
            "pairs": report.scored, "seconds": seconds, "pairs_per_s": report.scored / seconds}


def main(argv=None) -> dict:
    import logging

    import ray

    from agrl.model.tiny import init_model

    logging.getLogger("ray").setLevel(logging.WARNING)

    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="score_ray_"))
    model = args.model or str(init_model(work / "model", size=args.size, seed=0))
    folder = work / "catalog"
    folder.mkdir()
    files = write_pairs(folder, args.pairs)
    actors = [int(a) for a in args.actors.split(",")]
    gpus = [float(g) for g in args.gpus_per_actor.split(",")]
    gpus = gpus * len(actors) if len(gpus) == 1 else gpus

    singles = [single_process(model, files, work, args, int(n) or None) for n in args.single_threads.split(",")]
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        rays = [ray_run(model, folder, work, args, n, g) for n, g in zip(actors, gpus)]
    finally:
        ray.shutdown()
    best = max(s["pairs_per_s"] for s in singles)
    result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, "
                   f"torch {torch.__version__}"
                   + (f", {torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""),
        "model": args.model or f"tiny.init_model(size={args.size!r})", "params": _params(model),
        "pairs": args.pairs, "batch_size": args.batch_size, "rows_per_shard": args.rows_per_shard,
        "device": args.device, "ray_startup_seconds": startup, "single_process": singles, "ray": rays,
        "ratio_to_best_single": {str(r["actors"]): r["pairs_per_s"] / best for r in rays},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['machine']}, {result['date']}; {result['model']}, {args.pairs} pairs; "
          f"Ray start-up {startup:.1f} s\n")
    print("| run | pairs/s | seconds | vs best single |\n|---|---:|---:|---:|")
    for s in singles:
        print(f"| single process, {s['threads']} thread(s) | {s['pairs_per_s']:.1f} | {s['seconds']:.1f} | "
              f"{s['pairs_per_s'] / best:.2f}x |")
    for r in rays:
        print(f"| Ray, {r['actors']} actor(s) | {r['pairs_per_s']:.1f} | {r['seconds']:.1f} | {r['pairs_per_s'] / best:.2f}x |")
    return result


def _params(model: str) -> int:
    from safetensors import safe_open

    total = 0
    for path in Path(model).glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


if __name__ == "__main__":
    main()
