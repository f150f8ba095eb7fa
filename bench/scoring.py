"""Scoring benchmark: one-pass prefill scoring vs generate-then-parse, and the HTTP service under load.

Same model, same pairs. Prefill reads the label posterior after one forward pass (score.Scorer);
generate-then-parse decodes label + reasoning (models.generate, as long as the median gold
reasoning) and parses the label. The service runs `agrl serve` in a subprocess and takes a bounded
closed-loop load (CONCURRENCY requests in flight, REQUESTS in all) from this process over loopback,
route by route on the same server: `/v1/score` and the rerank routes (`/rerank` TEI, `/v1/rerank`,
`/v2/rerank` Cohere) with the same ITEMS titles per request, so their ratios are the API's cost.
Prints a Markdown table (machine, date) and writes JSON.

    .venv/bin/python bench/scoring.py --size small --pairs 256 --requests 2000 --out bench/results/scoring.json
    .venv/bin/python bench/scoring.py --service-only --model src/agrl/judges/tiny-base --items 10 \
        --routes score,rerank,v1/rerank,v2/rerank --out bench/results/rerank_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import json
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from agrl.model import load as models
from agrl.data.records import Record, load_records
from agrl.core.output import Judgement, parse_completion
from agrl.core.prompt import prompt_text
from agrl.model.score import Scorer
from agrl.model.tiny import init_model

# route -> (path, the request body for a query and its product titles)
ROUTES = {
    "score": ("/v1/score", lambda q, titles: {"query": q, "items": [{"title": t} for t in titles]}),
    "rerank": ("/rerank", lambda q, titles: {"query": q, "texts": titles}),
    "v1/rerank": ("/v1/rerank", lambda q, titles: {"query": q, "documents": titles}),
    "v2/rerank": ("/v2/rerank", lambda q, titles: {"model": "agrl", "query": q, "documents": titles}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="local HF model dir (default: build one with tiny.init_model)")
    parser.add_argument("--size", default="small", help="size to build when --model is not given")
    parser.add_argument("--input", help="records JSONL (default: the synthetic eval_wild split)")
    parser.add_argument("--pairs", type=int, default=256, help="pairs for the offline comparison")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="service load: requests in all")
    parser.add_argument("--concurrency", type=int, default=32, help="service load: requests in flight")
    parser.add_argument("--items", type=int, default=1, help="service load: products per request")
    parser.add_argument("--routes", default="score", help="service load: comma-separated, of " + ", ".join(ROUTES))
    parser.add_argument("--service-only", action="store_true", help="skip the prefill vs generate comparison")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default="bench/results/scoring.json")
    parser.add_argument("--profile", action="store_true", help="print where prefill scoring spends its time")
    return parser.parse_args(argv)


def machine() -> str:
    cpu = f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; {cpu}"
    return f"{platform.processor() or platform.machine()}; {cpu}, threads {torch.get_num_threads()}"


def pairs(args: argparse.Namespace) -> list[Record]:
    if args.input:
        return load_records(args.input)
    from agrl.core.synth import generate

    splits = generate(seed=0)
    return (splits["eval_wild"] + splits["eval_balanced"] + splits["rl"])[: max(args.pairs, args.requests)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_prefill(scorer: Scorer, records: list[Record]) -> dict:
    """Total time, and its two parts: prompts -> token ids (CPU), forward passes (device)."""
    scorer.score(records)  # warm-up: a GPU pays once for each new shape (kernel loading, heuristics)
    _sync(scorer.model.device)
    start = time.perf_counter()
    sequences = scorer.encode_many(records)
    encoded = time.perf_counter()
    scorer.score_ids(sequences)
    _sync(scorer.model.device)
    end = time.perf_counter()
    return {
        "pairs": len(records),
        "seconds": end - start,
        "pairs_per_s": len(records) / (end - start),
        "encode_seconds": encoded - start,
        "forward_seconds": end - encoded,
    }


def bench_generate(scorer: Scorer, records: list[Record], max_new_tokens: int) -> dict:
    model, tok = scorer.model, scorer.tokenizer
    prompts = [prompt_text(r, tok) for r in records]
    models.generate(model, tok, prompts, max_new_tokens, batch_size=scorer.batch_size)  # warm-up, as above
    _sync(model.device)
    start = time.perf_counter()
    texts = models.generate(model, tok, prompts, max_new_tokens, batch_size=scorer.batch_size)
    labels = [parse_completion(t[0], scorer.scheme) for t in texts]
    _sync(model.device)
    seconds = time.perf_counter() - start
    valid = sum(isinstance(p, Judgement) for p in labels)
    return {
        "pairs": len(records),
        "seconds": seconds,
        "pairs_per_s": len(records) / seconds,
        "max_new_tokens": max_new_tokens,
        "format_valid": valid,
    }


def reasoning_tokens(scorer: Scorer, records: list[Record]) -> int:
    """Median length in tokens of the gold reasoning (+1 for the end-of-turn token)."""
    from agrl.core.rules import RulesEngine

    engine = RulesEngine.from_records(records, scheme=scorer.scheme)
    lengths = [
        len(scorer.tokenizer.encode(engine.teacher_reasoning(r), add_special_tokens=False)) for r in records
    ]
    return int(statistics.median(lengths)) + 1


def bench_service(model_dir: str, records: list[Record], args: argparse.Namespace) -> dict:
    """route -> load numbers, every route against the same server, one after the other."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "agrl",
        "serve",
        "--model",
        model_dir,
        "--port",
        str(port),
        "--max-batch",
        str(max(args.batch_size, args.items)),
        "--max-items",
        str(max(64, args.items)),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    out = {}
    try:
        _wait_ready(url, server)
        for name in args.routes.split(","):
            path, shape = ROUTES[name]
            bodies = [shape(*_titles(records, i, args.items)) for i in range(args.requests)]
            passes = _passes(url)
            latencies, seconds = asyncio.run(_load(url, path, bodies, args.concurrency))
            passes = _passes(url) - passes
            latencies.sort()
            out[name] = {
                "route": path,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "items_per_request": args.items,
                "seconds": seconds,
                "requests_per_s": args.requests / seconds,
                "pairs_per_s": args.requests * args.items / seconds,
                "p50_ms": 1000 * latencies[len(latencies) // 2],
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "mean_requests_per_pass": args.requests / passes,
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def _passes(url: str) -> float:
    """Forward passes so far, from the service's Prometheus metrics."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return next(s.value for f in families for s in f.samples if s.name == "agrl_batch_requests_count")


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"agrl serve exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("agrl serve did not become ready in 300 s")


def _titles(records: list[Record], i: int, items: int) -> tuple[str, list[str]]:
    group = [records[(i * items + k) % len(records)] for k in range(items)]
    return group[0].query, [r.product.title for r in group]


async def _load(url: str, path: str, bodies: list[dict], concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def user() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def table(result: dict) -> str:
    lines = [f"Scoring benchmark, {result['date']}, {result['machine']}",
             f"model {result['model']} ({result['params'] / 1e6:.1f}M params), batch {result['batch_size']}"]
    if "prefill" in result:
        pre, gen = result["prefill"], result["generate"]
        lines += [
            f"{pre['pairs']} pairs",
            "",
            "| method | pairs/s | speed-up |",
            "|---|---:|---:|",
            f"| prefill scoring (one forward pass) | {pre['pairs_per_s']:.1f} | {result['speedup']:.1f}x |",
            f"| generate ({gen['max_new_tokens']} new tokens) then parse | {gen['pairs_per_s']:.1f} | 1.0x |",
            f"(prefill: {pre['encode_seconds']:.2f} s building and tokenizing prompts, "
            + f"{pre['forward_seconds']:.2f} s in forward passes)",
        ]
    first = next(iter(result["service"].values()))
    lines += [
        "",
        f"Service load, `agrl serve` over loopback: {first['requests']} requests, {first['concurrency']} in flight, "
        + f"{first['items_per_request']} items per request",
        "",
        "| route | req/s | pairs/s | p50 ms | p99 ms | requests per pass | req/s vs first |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for svc in result["service"].values():
        lines.append(f"| `{svc['route']}` | {svc['requests_per_s']:.1f} | {svc['pairs_per_s']:.1f} | "
                     f"{svc['p50_ms']:.0f} | {svc['p99_ms']:.0f} | {svc['mean_requests_per_pass']:.1f} | "
                     f"{svc['requests_per_s'] / first['requests_per_s']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "model": args.model or f"tiny.init_model(size={args.size!r})", "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or str(init_model(Path(tmp) / "model", size=args.size))
        records = pairs(args)
        scorer = Scorer(model_dir, batch_size=args.batch_size, device=args.device)
        result["params"] = sum(p.numel() for p in scorer.model.parameters())
        if not args.service_only:
            offline = records[: args.pairs]
            result["prefill"] = bench_prefill(scorer, offline)
            if args.profile:
                prof = str(Path(tmp) / "prefill.prof")
                cProfile.runctx("scorer.score(offline)", globals(), {"scorer": scorer, "offline": offline}, prof)
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
            result["generate"] = bench_generate(scorer, offline, reasoning_tokens(scorer, offline))
            result["speedup"] = result["prefill"]["pairs_per_s"] / result["generate"]["pairs_per_s"]
        del scorer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        result["service"] = bench_service(model_dir, records, args)
    result["load_average"] = os.getloadavg()  # the machine may be shared: read the numbers beside it
    print(table(result))
    print(f"load average (1, 5, 15 min) at the end: {result['load_average']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
