"""The HTTP scoring service (serve.py), through a real uvicorn server on 127.0.0.1.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_serve.py
"""

import asyncio

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoModelForCausalLM, AutoTokenizer

from agrl.data.records import Product, Record
from agrl.core.prompt import prompt_text
from agrl.model.score import Scorer
from agrl.serve.app import Limits, create_app

LIMITS = Limits(max_items=8, max_query_chars=100, max_item_chars=600, max_batch=64, max_wait_ms=20)
ITEMS = [
    {
        "title": "Nike Pegasus 40 Running Shoe, Red",
        "brand": "nike",
        "attributes": {"color": "red"},
        "price": 89,
    },
    {"title": "Shoe Rack"},
    {"title": "Adidas Ultraboost Running Shoe with a much longer title than the others", "category": "Shoes"},
]


@pytest.fixture(scope="module")
def service(tiny_model_dir, start_service):
    """A live server in a background thread; yields (base url, scorer)."""
    scorer = Scorer(tiny_model_dir, batch_size=64, device="cpu")
    return start_service(create_app(scorer, LIMITS, "tiny")), scorer


def reference_probs(model_dir, query: str, products: list[dict]) -> list[list[float]]:
    """P(4, 3, 2, 1) computed here from scratch: one unpadded forward pass per pair."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    label_ids = tok.convert_tokens_to_ids(["4", "3", "2", "1"])
    out = []
    with torch.no_grad():
        for p in products:
            product = Product(
                p["title"], p.get("category"), p.get("brand"), p.get("attributes", {}), p.get("price")
            )
            text = prompt_text(Record(query, product), tok) + "<label>"
            ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            out.append(torch.softmax(model(input_ids=ids).logits[0, -1, label_ids], -1).tolist())
    return out


def test_score_matches_a_direct_forward_pass(service, tiny_model_dir):
    url, _ = service
    response = httpx.post(f"{url}/v1/score", json={"query": "red nike running shoes", "items": ITEMS})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = reference_probs(tiny_model_dir, "red nike running shoes", ITEMS)
    assert len(results) == 3
    for result, want in zip(results, expected):  # items of different lengths share one padded pass
        assert [result["probabilities"][c] for c in "4321"] == pytest.approx(want, abs=1e-5)
        assert result["label"] == 4 - max(range(4), key=want.__getitem__)
        assert result["score"] == pytest.approx(sum(c * p for c, p in zip((4, 3, 2, 1), want)), abs=1e-5)
        assert result["tier"] in ("Good", "Mid", "Bad")


def test_judge_returns_the_greedy_completion_and_its_parse(service):
    url, scorer = service
    response = httpx.post(f"{url}/v1/judge", json={"query": "red shoes", "product": ITEMS[0]}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    record = Record("red shoes", Product(**{k: v for k, v in ITEMS[0].items()}))
    assert body["completion"] == scorer.judge([record], max_new_tokens=LIMITS.max_new_tokens)[0]
    # An untrained model writes off-format text: the parser's reason comes back, not a label.
    assert body["valid"] is (body["label"] is not None)
    assert body["valid"] or body["reject_reason"]


def test_health_and_unknown_paths(service):
    url, _ = service
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "model": "tiny", "scheme": "default"}
    assert httpx.get(f"{url}/no/such/path").status_code == 404
    metrics = httpx.get(f"{url}/metrics").text
    assert 'route="other",status="404"' in metrics and "no/such" not in metrics


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"query": "shoes", "items": [', 400, "bad JSON"),
        (b'["shoes"]', 422, "body: must be a JSON object"),
        (b'{"query": "shoes"}', 422, "items: must be a non-empty list"),
        (b'{"query": "shoes", "items": []}', 422, "items: must be a non-empty list"),
        (b'{"items": [{"title": "x"}]}', 422, "query: is required"),
        (
            b'{"query": "shoes", "items": [{"title": "x"}, {"brand": "nike"}]}',
            422,
            "items[1].title: is required",
        ),
        (
            b'{"query": "shoes", "items": [{"title": "x", "price": "cheap"}]}',
            422,
            "items[0].price: must be a number",
        ),
        (
            b'{"query": "shoes", "items": [' + b'{"title": "x"},' * 8 + b'{"title": "x"}]}',
            413,
            "over the limit of 8",
        ),
        (b'{"query": "' + b"q" * 101 + b'", "items": [{"title": "x"}]}', 422, "query: is 101 characters"),
        (b'{"query": "q", "items": [{"title": "' + b"t" * 600 + b'"}]}', 422, "items[0]: is over the limit"),
    ],
)
def test_bad_score_requests_get_clear_4xx(service, body, status, message):
    url, _ = service
    response = httpx.post(f"{url}/v1/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_bad_judge_request(service):
    url, _ = service
    response = httpx.post(f"{url}/v1/judge", json={"query": "shoes"})
    assert response.status_code == 422 and "product" in response.json()["error"]


def test_concurrent_requests_are_micro_batched_and_answered_correctly(service):
    url, scorer = service
    queries = [f"query {i} " + "red " * (i % 7) + "shoes" for i in range(50)]
    items = [[ITEMS[i % 3], ITEMS[(i + 1) % 3]][: 1 + i % 2] for i in range(50)]

    async def fire():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            calls = [
                client.post("/v1/score", json={"query": q, "items": it}) for q, it in zip(queries, items)
            ]
            return await asyncio.gather(*calls)

    before = batch_counts(httpx.get(f"{url}/metrics").text)
    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    scorer.batch_size = 1  # the expected answer of each pair, scored alone without padding
    try:
        for query, its, response in zip(queries, items, responses):
            records = [Record(query, Product(**it)) for it in its]
            want = scorer.score(records)
            got = response.json()["results"]
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert [g["probabilities"][str(c)] for c in (4, 3, 2, 1)] == pytest.approx(
                    [w.probabilities[c] for c in (4, 3, 2, 1)], abs=1e-5
                )
    finally:
        scorer.batch_size = 64
    metrics = httpx.get(f"{url}/metrics").text
    singles, batches = (a - b for a, b in zip(batch_counts(metrics), before))
    assert batches < 50 and singles < batches, "no micro-batch of several requests was formed"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(metrics) for s in f.samples}
    key = ("agrl_http_requests_total", (("method", "POST"), ("route", "/v1/score"), ("status", "200")))
    assert samples[key] >= 50
    assert samples[("agrl_http_request_duration_seconds_count", (("route", "/v1/score"),))] >= 50


def batch_counts(metrics: str) -> tuple[float, float]:
    """(forward passes holding one request, all forward passes) from the Prometheus text."""
    samples = {(s.name, s.labels.get("le")): s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    return samples[("agrl_batch_requests_bucket", "1.0")], samples[("agrl_batch_requests_count", None)]


def test_a_dead_worker_fails_requests_fast_instead_of_hanging(service):
    from concurrent.futures import ThreadPoolExecutor

    from agrl.serve.app import HTTPError, Metrics, MicroBatcher

    _, scorer = service

    async def scenario():
        batcher = MicroBatcher(scorer, LIMITS, ThreadPoolExecutor(max_workers=1), Metrics())
        worker = asyncio.create_task(batcher.run())
        with pytest.raises(HTTPError) as first:  # a token id past the vocabulary: the forward pass raises
            await batcher.score([[10**7]])
        with pytest.raises(HTTPError) as later:
            await asyncio.wait_for(batcher.score([[5, 6, 7]]), timeout=5)
        await asyncio.gather(worker, return_exceptions=True)
        return first.value, later.value, worker

    first, later, worker = asyncio.run(scenario())
    assert first.status == later.status == 503 and "IndexError" in later.message
    assert worker.done() and isinstance(worker.exception(), IndexError)


def test_one_product_model_and_one_refusal_class_for_every_route():
    """/v1/score items, /v1/judge's product and a rerank object document are one Product's fields, each body
    is validated by its model (the score routes in the data layer's words, as a file's row is told), and
    the service and the rating page raise one HTTP error class."""
    from agrl.errors import HTTPError
    from agrl.sbs.store import Refused
    from agrl.serve import wire

    assert Refused is HTTPError
    assert issubclass(wire.Product, wire.ProductFields) and issubclass(wire.RerankDocument, wire.ProductFields)
    assert wire.ScoreRequest.model_fields["items"].annotation == list[wire.Product]
    assert wire.JudgeRequest.model_fields["product"].annotation is wire.Product
    for model, body, message in (
        (wire.ScoreRequest, {"query": "q", "items": [{"title": 3}]}, "items[0].title: must be a string, got int"),
        (wire.ScoreRequest, {"query": "q", "items": [7]}, "items[0]: must be an object, got int"),
        (wire.ScoreRequest, {"query": " ", "items": [{"title": "x"}]}, "query: is empty"),
        (wire.ScoreRequest, {"query": "q", "items": [{"title": "x", "price": -1}]}, "items[0].price: must not be negative"),
        (wire.JudgeRequest, {"query": "q", "product": {"title": "x", "price": "cheap"}},
         "product.price: must be a number, got 'cheap'"),
        (wire.JudgeRequest, {"query": "q", "product": {"title": "x", "attributes": {"9": "y"}}},
         "product.attributes.9: attribute name '9' must be ASCII"),
    ):
        with pytest.raises(HTTPError) as refused:
            wire.validate(model, body, data_words=True)
        assert refused.value.status == 422 and refused.value.message.startswith(message), refused.value.message
    with pytest.raises(HTTPError) as refused:  # the rerank routes keep pydantic's words (their clients' APIs)
        wire.validate(wire.CohereRerankRequest, {"query": "q", "documents": [{"title": "x", "price": "cheap"}]})
    assert refused.value.message.startswith("documents[0].price: Input should be a valid number")
