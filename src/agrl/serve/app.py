"""HTTP scoring service: FastAPI over score.Scorer, with micro-batching (spec section 8).

Concurrent requests wait on one asyncio queue; a single worker gathers them until `max_batch`
items or `max_wait_ms`, then runs one prefill pass for all of them in a worker thread (the event
loop stays free). A body is validated by its model (wire.py), then each product by data.parse_record,
the batch command's code path.
A body must be JSON (415 otherwise), arrive within `body_timeout_s` (408) and stay under
`max_body_bytes` (413, checked while it streams in, before parsing). Every error is JSON,
`{"error": "FIELD: what is wrong", "error_type": ...}` (TEI's ErrorResponse). The rerank routes
(serve_rerank) speak TEI's and Cohere's/Jina's shapes; metrics are in serve_metrics, and the
server's behaviour under faults (SIGTERM drain, header timeout) in serve_server.

    POST /v1/score {"query": "red nike shoes", "items": [{"title": "..."}, ...]}
    POST /v1/judge {"query": "...", "product": {"title": "..."}}    GET /healthz    GET /metrics
    POST /rerank {"query": "...", "texts": [...]}    POST /v1/rerank, /v2/rerank {"query", "documents", "top_n"}
    agrl serve --model runs/agrl --port 8000
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from agrl.serve import wire as api
from agrl.serve import rerank
from agrl.data.records import MAX_DEPTH, Record, RowError, loads, parse_record, resolve_scheme
from agrl.errors import UserError
from agrl.files import model_dir
from agrl.model.load import check_device
from agrl.core.rewards import grade
from agrl.data.schemes import Scheme, load_scheme
from agrl.model.score import Scorer, ScoreResult, check_threshold
from agrl.serve.prometheus import CountRequests, Metrics
from agrl.serve.wire import HTTPError
from agrl.serve.server import Drain, DrainGate, DrainingServer, header_timeout_protocol


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
    header_timeout_s: float = 10.0  # a request's headers must be complete within this (else 408, closed)

    def __post_init__(self):
        for name in ("max_items", "max_query_chars", "max_item_chars", "max_batch", "max_new_tokens",
                     "max_body_bytes"):
            if not getattr(self, name) >= 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        for name in ("max_wait_ms", "body_timeout_s", "drain_timeout_s", "header_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name.endswith("timeout_s") and name != "drain_timeout_s"
                                                             and value == 0):
                raise UserError(f"--{name.replace('_', '-')} {value}: must be a finite number > 0")


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


def _record(query: object, product: object, where: str, limits: Limits, scheme: Scheme, is_text: bool = False) -> Record:
    if isinstance(query, str) and len(query) > limits.max_query_chars:
        raise HTTPError(422, f"query: is {len(query)} characters, over the limit of {limits.max_query_chars}")
    if isinstance(product, dict) and len(json.dumps(product)) > limits.max_item_chars:
        raise HTTPError(422, f"{where}: is over the limit of {limits.max_item_chars} characters (as JSON)")
    attributes = product.get("attributes") if isinstance(product, dict) else None
    if attributes is not None and not isinstance(attributes, dict):  # files may hold (key, value) pairs; JSON not
        raise HTTPError(422, f"{where}.attributes: must be an object, got {type(attributes).__name__}")
    try:
        return parse_record({"query": query, "product": product}, scheme)
    except RowError as err:
        name = err.field if err.field == "query" else err.field.replace("product", where, 1)
        if is_text:  # a plain string stands for the title: name the string itself
            name = name.replace(f"{where}.title", where, 1)
        raise HTTPError(422, f"{api.printable(name)}: {err.message}") from None


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
        raise HTTPError(400, f"body: bad JSON: {err}") from None
    except RecursionError:
        raise HTTPError(400, "body: bad JSON: nested too deeply") from None
    if _depth(body, MAX_DEPTH):
        raise HTTPError(400, f"body: bad JSON: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(body, dict):
        raise HTTPError(422, "body: must be a JSON object")
    return body


def _encode(scorer: Scorer, record: Record, where: str) -> list[int]:
    try:
        return scorer.encode(record)
    except ValueError as err:
        raise HTTPError(422, f"{where}: {err}", "Tokenizer") from None


def _fit(scorer: Scorer, record: Record, where: str, direction: str) -> list[int]:
    """TEI's `truncate`: cut the title (from the right or the left) until the prompt fits the context."""
    for _ in range(8):
        try:
            return scorer.encode(record)
        except ValueError:
            title = record.product.title
            over = len(scorer.tokenizer(scorer.prefill_text(record), add_special_tokens=False)["input_ids"])
            keep = int(len(title) * min(0.9, scorer.max_length / over))
            if keep < 1:
                break
            record.product.title = rerank.cut(title, keep, direction)
    return _encode(scorer, record, where)


# ---------------------------------------------------------------------------- the endpoints' work


async def _score_records(records: list[Record], wheres: list[str], scorer: Scorer, batcher: MicroBatcher,
                         route: str, truncate: str | None = None) -> tuple[list[ScoreResult], int]:
    """Encode (every prompt must fit the context, or is cut with `truncate`), wait for the micro-batch;
    results in input order, and the number of tokens read."""
    try:
        sequences = scorer.encode_many(records)
    except ValueError:  # some prompt is over the context: name the first such item, or cut it
        sequences = [_fit(scorer, r, w, truncate) if truncate else _encode(scorer, r, w)
                     for r, w in zip(records, wheres)]
    results = await batcher.score(sequences)
    batcher.metrics.items.labels(route).inc(len(records))
    return results, sum(len(s) for s in sequences)


async def score_items(body: dict, scorer: Scorer, limits: Limits, batcher: MicroBatcher) -> dict:
    """/v1/score: validate, encode, wait for the micro-batch, results in item order."""
    items = body.get("items")
    if not isinstance(items, list) or not items:  # before the types: the clearer message
        raise HTTPError(422, "items: must be a non-empty list of products")
    if len(items) > limits.max_items:  # before validating what may be many items
        raise HTTPError(413, f"items: {len(items)} items, over the limit of {limits.max_items}")
    api.validate(api.ScoreRequest, body, data_words=True)
    query = body["query"]
    wheres = [f"items[{i}]" for i in range(len(items))]
    records = [_record(query, item, w, limits, scorer.scheme) for item, w in zip(items, wheres)]
    results, _ = await _score_records(records, wheres, scorer, batcher, "/v1/score")
    # Returned as a plain JSONResponse: FastAPI's encoder costs more than scoring on small models.
    return {"results": [r.to_dict(scorer.scheme) for r in results], "scheme": scorer.scheme.name}


async def rerank_batch(batch: rerank.Batch, scorer: Scorer, limits: Limits, batcher: MicroBatcher,
                       route: str) -> tuple[list[ScoreResult], int]:
    records = [_record(batch.query, it.product, it.where, limits, scorer.scheme, it.is_text) for it in batch.items]
    return await _score_records(records, [it.where for it in batch.items], scorer, batcher, route, batch.truncate)


async def judge_pair(body: dict, scorer: Scorer, limits: Limits, executor: ThreadPoolExecutor) -> dict:
    """/v1/judge (audit): the generated label + reasoning and what the strict parser makes of it.

    Generation runs on the scoring thread, so scoring waits while a judgement is written.
    """
    api.validate(api.JudgeRequest, body, data_words=True)
    record = _record(body["query"], body["product"], "product", limits, scorer.scheme)
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

ERRORS = {status: {"model": api.ErrorResponse, "description": why} for status, why in (
    (400, "bad JSON, or (TEI) empty `texts`"), (408, "body not received in time"),
    (413, "body or item count over the limit"), (415, "not application/json"),
    (422, "a field is wrong: `error` names it"), (503, "draining, or the scoring worker stopped"))}


def create_app(scorer: Scorer, limits: Limits = Limits(), model_name: str = "") -> FastAPI:
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=1)  # one model, one forward pass at a time
    batcher = MicroBatcher(scorer, limits, executor, metrics)
    metrics.queue_depth.set_function(batcher.queue.qsize)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        executor.shutdown(wait=False)

    app = FastAPI(title="agrl relevance scoring", lifespan=lifespan)
    drain = Drain()  # the draining server expires it at the deadline: DrainGate answers what is left 503
    app.add_middleware(DrainGate, drain=drain)
    app.add_middleware(CountRequests, metrics=metrics)  # outermost: it counts DrainGate's 503s too
    app.state.metrics, app.state.drain = metrics, drain

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = api.add_request_schemas(get_openapi(title=app.title, version="1",
                                                                     routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, err: HTTPError):
        body = {"error": err.message, "error_type": err.error_type}
        if request.url.path in ("/v1/rerank", "/v2/rerank"):
            body["message"] = err.message  # Cohere's key
        return JSONResponse(body, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, err: StarletteHTTPException):  # 404, 405: the same JSON shape
        return JSONResponse({"error": f"path: {request.url.path}: {err.detail}", "error_type": "Validation"},
                            status_code=err.status_code, headers=err.headers)  # 405's Allow

    @app.exception_handler(RuntimeError)
    async def model_error(request: Request, err: RuntimeError):
        return JSONResponse({"error": f"model: scoring failed: {err}", "error_type": "Backend"}, status_code=500)

    @app.post("/v1/score", response_model=api.ScoreResponse, responses=ERRORS,
              openapi_extra=api.body_of(api.ScoreRequest))
    async def score(request: Request):
        return JSONResponse(await score_items(await _body(request, limits), scorer, limits, batcher))

    @app.post("/v1/judge", response_model=api.JudgeResponse, responses=ERRORS,
              openapi_extra=api.body_of(api.JudgeRequest))
    async def judge(request: Request):
        return JSONResponse(await judge_pair(await _body(request, limits), scorer, limits, executor))

    @app.post("/rerank", response_model=list[api.Rank], responses=ERRORS,
              openapi_extra=api.body_of(api.TEIRerankRequest))
    async def tei_rerank(request: Request):
        """Text Embeddings Inference's rerank: ranks sorted by score, highest first."""
        batch, req = rerank.tei_batch(await _body(request, limits), limits.max_items)
        results, _ = await rerank_batch(batch, scorer, limits, batcher, "/rerank")
        return JSONResponse(rerank.tei_response(req, results, scorer.scheme))

    def cohere_route(version: str):
        route = f"/v{version}/rerank"

        async def cohere_rerank(request: Request):
            body = await _body(request, limits)
            batch, req = rerank.cohere_batch(body, limits.max_items)
            results, tokens = await rerank_batch(batch, scorer, limits, batcher, route)
            return JSONResponse(rerank.cohere_response(req, body["documents"], results, scorer.scheme, tokens,
                                                       model_name, version))

        app.post(route, response_model=api.RerankResponse, responses=ERRORS, summary=f"Rerank (Cohere v{version}, "
                 "Jina)", openapi_extra=api.body_of(api.CohereRerankRequest), name=f"rerank_v{version}")(cohere_rerank)

    cohere_route("1")
    cohere_route("2")

    @app.get("/healthz", response_model=api.Health, response_model_exclude_none=True,
             responses={503: {"model": api.Health}})
    async def healthz():
        if metrics.draining:  # load balancers stop sending; requests that still come are answered
            return JSONResponse({"status": "draining"}, status_code=503)
        if batcher.broken is not None:
            return JSONResponse({"status": "broken", "error": repr(batcher.broken)}, status_code=503)
        return {"status": "ok", "model": model_name, "scheme": scorer.scheme.name}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def preflight(model: str, port: int, scheme: str | None, tier_threshold: float, device: str | None) -> str:
    """`agrl serve`'s checks before the model loads; returns the scheme's name: --scheme, else the one the
    model's run trained with, else the default (data.resolve_scheme with no data)."""
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: must be 1-65535")
    check_threshold(tier_threshold)
    scheme = resolve_scheme(None, scheme, model)
    load_scheme(scheme)
    model_dir(model)
    check_device(device)
    return scheme


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    scheme: str | None = None,
    limits: Limits = Limits(),
    batch_size: int = 64,
    tier_threshold: float = 0.6,
    device: str | None = None,
) -> None:
    """Load the model and run the service until interrupted; SIGTERM drains (serve_server.DrainingServer)."""
    scorer = Scorer(model, scheme=scheme, batch_size=batch_size, tier_threshold=tier_threshold, device=device)
    if scorer.model.device.type == "cuda":
        scorer.warmup()
    app = create_app(scorer, limits, model_name=str(model))
    # uvicorn's own graceful timeout runs after the drain, when every request has been answered (the
    # drain's deadline answers the rest 503): it only has idle connections to close.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2,
                            http=header_timeout_protocol(limits.header_timeout_s))
    DrainingServer(config, app.state.metrics, app.state.drain, limits.drain_timeout_s).run()
