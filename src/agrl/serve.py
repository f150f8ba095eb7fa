"""HTTP scoring service: FastAPI over score.Scorer, with micro-batching (spec section 8).

Concurrent requests wait on one asyncio queue; a single worker gathers them until `max_batch`
items or `max_wait_ms`, then runs one prefill pass for all of them in a worker thread (the event
loop stays free). Requests are validated by data.parse_record, the batch command's code path.
A body must be JSON (415 otherwise), arrive within `body_timeout_s` (408) and stay under
`max_body_bytes` (413, checked while it streams in, before parsing). On SIGTERM the server drains:
it keeps answering until no request has been in flight for a moment (at most `drain_timeout_s`).

    POST /v1/score {"query": "red nike shoes", "items": [{"title": "..."}, ...]}
    POST /v1/judge {"query": "...", "product": {"title": "..."}}    GET /healthz    GET /metrics
    agrl serve --model runs/agrl --port 8000
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from agrl.data import MAX_DEPTH, Record, RowError, loads, parse_record
from agrl.errors import UserError
from agrl.rewards import grade
from agrl.schemes import Scheme
from agrl.score import Scorer, ScoreResult


@dataclass(frozen=True)
class Limits:
    max_items: int = 64  # items per /v1/score request
    max_query_chars: int = 512
    max_item_chars: int = 4096  # one product, as JSON text
    max_batch: int = 64  # items per forward pass (micro-batch)
    max_wait_ms: float = 5.0  # how long the first request of a micro-batch waits for company
    max_new_tokens: int = 160  # /v1/judge
    max_body_bytes: int = 1_000_000  # 64 items of 4 KB fit with room; checked before parsing
    body_timeout_s: float = 10.0  # a client that never finishes its upload gets 408, and cannot hold shutdown
    drain_timeout_s: float = 30.0  # SIGTERM: how long requests in flight may take to be answered

    def __post_init__(self):
        for name in ("max_items", "max_query_chars", "max_item_chars", "max_batch", "max_new_tokens",
                     "max_body_bytes"):
            if not getattr(self, name) >= 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        for name in ("max_wait_ms", "body_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "body_timeout_s" and value == 0):
                raise UserError(f"--{name.replace('_', '-')} {value}: must be a finite number > 0")


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------------------- metrics


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        counts = self.counts or [0] * len(self.buckets)
        out = [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(self.buckets, counts)]
        return out + [
            f'{name}_bucket{{le="+Inf"}} {self.n}',
            f"{name}_sum {self.total:g}",
            f"{name}_count {self.n}",
        ]


class Metrics:
    """Prometheus text format: requests and errors by endpoint, batch sizes, latency."""

    def __init__(self) -> None:
        self.inflight = 0  # HTTP requests begun and not yet answered (the SIGTERM drain waits on it)
        self.draining = False
        self.requests: dict[tuple[str, int], int] = {}
        self.batch_requests = Histogram((1, 2, 4, 8, 16, 32, 64, 128))
        self.batch_items = Histogram((1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.latency = Histogram((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.latency.observe(seconds)

    def render(self) -> str:
        lines = ["# TYPE agrl_requests_total counter"]
        lines += [
            f'agrl_requests_total{{path="{p}",status="{s}"}} {n}'
            for (p, s), n in sorted(self.requests.items())
        ]
        errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
        lines += ["# TYPE agrl_errors_total counter", f"agrl_errors_total {errors}"]
        for name, hist in (
            ("agrl_batch_requests", self.batch_requests),
            ("agrl_batch_items", self.batch_items),
            ("agrl_request_latency_seconds", self.latency),
        ):
            lines += [f"# TYPE {name} histogram", *hist.lines(name)]
        return "\n".join(lines) + "\n"


ROUTES = ("/v1/score", "/v1/judge", "/healthz", "/metrics")


class CountRequests:
    """Pure ASGI middleware (cheaper than @app.middleware): count requests by path and status, time them."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def record_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.inflight += 1
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.inflight -= 1
            path = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label cardinality
            self.metrics.request(path, status[0], time.perf_counter() - start)


# ---------------------------------------------------------------------------- micro-batching


class MicroBatcher:
    """One worker: gather queued requests, score them in one pass, hand each its results."""

    def __init__(self, scorer: Scorer, limits: Limits, executor: ThreadPoolExecutor, metrics: Metrics):
        self.scorer, self.limits, self.executor, self.metrics = scorer, limits, executor, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.broken: BaseException | None = None  # set if the worker died: requests fail fast, health 503

    async def score(self, sequences: list[list[int]]) -> list[ScoreResult]:
        if self.broken is not None:
            raise HTTPError(503, f"scoring worker stopped: {self.broken!r}")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((sequences, future))
        return await future

    async def _gather(self) -> list[tuple[list[list[int]], asyncio.Future]]:
        jobs = [await self.queue.get()]
        size = len(jobs[0][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while size < self.limits.max_batch:
            if self.queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                jobs.append(self.queue.get_nowait())
            size += len(jobs[-1][0])
        return jobs

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            flat = [seq for seqs, _ in jobs for seq in seqs]
            try:
                results = await loop.run_in_executor(self.executor, self.scorer.score_ids, flat)
            except RuntimeError as err:  # a failed forward pass fails its requests, not the worker
                for _, future in jobs:
                    future.set_exception(err)
                continue
            except BaseException as err:  # anything else stops the worker: fail every waiter, then stop
                self.broken = err
                for _, future in jobs + [self.queue.get_nowait() for _ in range(self.queue.qsize())]:
                    if not future.done():
                        future.set_exception(HTTPError(503, f"scoring worker stopped: {err!r}"))
                raise
            self.metrics.batch_requests.observe(len(jobs))
            self.metrics.batch_items.observe(len(flat))
            start = 0
            for seqs, future in jobs:
                if not future.cancelled():
                    future.set_result(results[start : start + len(seqs)])
                start += len(seqs)


# ---------------------------------------------------------------------------- validation


def _record(query: object, product: object, where: str, limits: Limits, scheme: Scheme) -> Record:
    if isinstance(query, str) and len(query) > limits.max_query_chars:
        raise HTTPError(422, f"query: is {len(query)} characters, over the limit of {limits.max_query_chars}")
    if isinstance(product, dict) and len(json.dumps(product)) > limits.max_item_chars:
        raise HTTPError(422, f"{where}: is over the limit of {limits.max_item_chars} characters (as JSON)")
    try:
        return parse_record({"query": query, "product": product}, scheme)
    except RowError as err:
        name = err.field if err.field == "query" else err.field.replace("product", where, 1)
        raise HTTPError(422, f"{name}: {err.message}") from None


def _depth(value: object, limit: int, depth: int = 0) -> bool:
    """Is `value` nested deeper than `limit`? (iterates no further than the limit)"""
    if depth > limit:
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_depth(child, limit, depth + 1) for child in children)


async def _read(request: Request, limits: Limits) -> bytes:
    """The raw body: JSON content type (415), under max_body_bytes (413), within body_timeout_s (408)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # Not JSON is refused before reading: a cross-site form post (text/plain, form-urlencoded) cannot drive us.
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise HTTPError(415, f"content-type: must be application/json, got {media or 'none'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise HTTPError(413, f"body: {declared} bytes, over the limit of {limits.max_body_bytes}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise HTTPError(413, f"body: over the limit of {limits.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(408, f"body: not received within {limits.body_timeout_s:g} s") from None
    return b"".join(chunks)


async def _body(request: Request, limits: Limits) -> dict:
    raw = await _read(request, limits)
    try:
        body = loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"bad JSON: {err}") from None
    except RecursionError:
        raise HTTPError(400, "bad JSON: nested too deeply") from None
    if _depth(body, MAX_DEPTH):
        raise HTTPError(400, f"bad JSON: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(body, dict):
        raise HTTPError(422, "body: must be a JSON object")
    return body


def _encode(scorer: Scorer, record: Record, where: str) -> list[int]:
    try:
        return scorer.encode(record)
    except ValueError as err:
        raise HTTPError(422, f"{where}: {err}") from None


# ---------------------------------------------------------------------------- the endpoints' work


async def score_items(body: dict, scorer: Scorer, limits: Limits, batcher: MicroBatcher) -> dict:
    """/v1/score: validate, encode, wait for the micro-batch, results in item order."""
    items = body.get("items")
    if not isinstance(items, list) or not items:
        raise HTTPError(422, "items: must be a non-empty list of products")
    if len(items) > limits.max_items:
        raise HTTPError(413, f"items: {len(items)} items, over the limit of {limits.max_items}")
    query = body.get("query")
    records = [_record(query, item, f"items[{i}]", limits, scorer.scheme) for i, item in enumerate(items)]
    try:
        sequences = scorer.encode_many(records)
    except ValueError:  # some prompt is over the context: name the first such item
        sequences = [_encode(scorer, r, f"items[{i}]") for i, r in enumerate(records)]
    results = await batcher.score(sequences)
    # Returned as a plain JSONResponse: FastAPI's encoder costs more than scoring on small models.
    return {"results": [r.to_dict(scorer.scheme) for r in results], "scheme": scorer.scheme.name}


async def judge_pair(body: dict, scorer: Scorer, limits: Limits, executor: ThreadPoolExecutor) -> dict:
    """/v1/judge (audit): the generated label + reasoning and what the strict parser makes of it.

    Generation runs on the scoring thread, so scoring waits while a judgement is written.
    """
    record = _record(body.get("query"), body.get("product"), "product", limits, scorer.scheme)
    _encode(scorer, record, "product")
    loop = asyncio.get_running_loop()
    texts = await loop.run_in_executor(executor, scorer.judge, [record], limits.max_new_tokens)
    graded = grade(texts[0], None, scorer.scheme)  # no gold here: only the parse counts
    ok, parsed = graded.valid, graded.parsed
    return {
        "completion": texts[0],
        "valid": ok,
        "label": parsed.label if ok else None,
        "steps": parsed.verdicts if ok else None,
        "reject_reason": None if ok else parsed.reason,
    }


# ---------------------------------------------------------------------------- the app


def create_app(scorer: Scorer, limits: Limits = Limits(), model_name: str = "") -> FastAPI:
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1)  # one model, one forward pass at a time
    batcher = MicroBatcher(scorer, limits, executor, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        executor.shutdown(wait=False)

    app = FastAPI(title="agrl relevance scoring", lifespan=lifespan)
    app.add_middleware(CountRequests, metrics=metrics)
    app.state.metrics = metrics  # the draining server reads in-flight counts from it

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, err: HTTPError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(RuntimeError)
    async def model_error(request: Request, err: RuntimeError):
        return JSONResponse({"error": f"scoring failed: {err}"}, status_code=500)

    @app.post("/v1/score")
    async def score(request: Request):
        return JSONResponse(await score_items(await _body(request, limits), scorer, limits, batcher))

    @app.post("/v1/judge")
    async def judge(request: Request):
        return JSONResponse(await judge_pair(await _body(request, limits), scorer, limits, executor))

    @app.get("/healthz")
    async def healthz():
        if metrics.draining:  # load balancers stop sending; requests that still come are answered
            return JSONResponse({"status": "draining"}, status_code=503)
        if batcher.broken is not None:
            return JSONResponse({"status": "broken", "error": repr(batcher.broken)}, status_code=503)
        return {"status": "ok", "model": model_name, "scheme": scorer.scheme.name}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    scheme: str = "default",
    limits: Limits = Limits(),
    batch_size: int = 64,
    tier_threshold: float = 0.6,
    device: str | None = None,
) -> None:
    """Load the model and run the service until interrupted; SIGTERM drains (DrainingServer)."""
    scorer = Scorer(model, scheme=scheme, batch_size=batch_size, tier_threshold=tier_threshold, device=device)
    if scorer.model.device.type == "cuda":
        scorer.warmup()
    app = create_app(scorer, limits, model_name=str(model))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=max(1, round(limits.body_timeout_s + 5)))
    DrainingServer(config, app.state.metrics, limits.drain_timeout_s).run()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains before it stops.

    uvicorn alone stops at once: it closes every connection whose request it has not started
    reading, so requests already sent get connection resets. Here the server keeps serving
    until nothing has been in flight for QUIET_S (requests sitting in socket buffers get read
    in that time) or `drain_timeout_s` passes; then uvicorn's own graceful shutdown runs.
    A second signal, or SIGINT, stops at once.
    """

    QUIET_S = 0.5

    def __init__(self, config, metrics: Metrics, drain_timeout_s: float):
        super().__init__(config)
        self.metrics, self.drain_timeout_s = metrics, drain_timeout_s

    def handle_exit(self, sig, frame) -> None:
        if sig != signal.SIGTERM or self.metrics.draining:
            return super().handle_exit(sig, frame)
        self.metrics.draining = True
        threading.Thread(target=self._drain, daemon=True).start()
        return None

    def _drain(self) -> None:
        deadline = time.monotonic() + self.drain_timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            quiet_since = (quiet_since or now) if self.metrics.inflight == 0 else None
            if quiet_since is not None and now - quiet_since >= self.QUIET_S:
                break
            time.sleep(0.02)
        self.should_exit = True

