"""The rerank routes (serve_rerank.py) through a live server: TEI's `/rerank` against requests and
schemas recorded from TEI's own documentation (tests/data/tei_rerank.json), Cohere's `/v1|v2/rerank`
through the real `cohere` SDK; each ranks as `/v1/score` does, and a bad body is a 4xx naming the
field that never reaches the model.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_serve_rerank.py
"""

import json
import re
from pathlib import Path

import cohere
import httpx
import jsonschema_rs
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agrl.model.score import Scorer
from agrl.serve.app import Limits, create_app
from agrl.model.tiny import base_judge_dir

LIMITS = Limits(max_items=12, max_query_chars=100, max_item_chars=4096)
TEI = json.loads((Path(__file__).parent / "data" / "tei_rerank.json").read_text())
QUERY = "red nike running shoes"
TITLES = [
    "Nike Pegasus 40 running shoe, red",
    "shoe rack, 3 tiers",
    "Adidas Ultraboost running shoe, blue",
    "Nike Air Max sneaker, red",
    "red running shorts",
    "Nike running socks, 3 pack",
    "garden hose, 50 ft",
    "Asics Gel-Kayano running shoe, red",
    "kids red rain boots",
    "Nike Pegasus 40 running shoe, black",
]
PRODUCTS = [
    {"title": "Pegasus 40 running shoe", "brand": "nike", "attributes": {"color": "red"}, "price": 120},
    {"title": "Pegasus 40 running shoe", "brand": "nike", "attributes": {"color": "black"}},
    {"title": "running shoe", "brand": "adidas", "category": "Shoes"},
    {"title": "storage rack", "category": "Home"},
]


@pytest.fixture(scope="module")
def scorer():
    return Scorer(base_judge_dir("tiny-base"), batch_size=64, device="cpu")  # the shipped base judge


@pytest.fixture(scope="module")
def url(scorer, start_service):
    return start_service(create_app(scorer, LIMITS, "tiny-base"))


def v1_score(url: str, products: list[dict], query: str = QUERY) -> list[float]:
    response = httpx.post(f"{url}/v1/score", json={"query": query, "items": products}, timeout=60)
    assert response.status_code == 200, response.text
    return [r["score"] for r in response.json()["results"]]


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order


def unit(score: float) -> float:
    return (score - 1) / 3  # the default scheme's codes are 1..4


def counter(url: str, name: str) -> float:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


# ---------------------------------------------------------------------------- TEI


def tei_validator(name: str):
    components = {"components": {"schemas": TEI["schemas"]}, "$ref": f"#/components/schemas/{name}"}
    return jsonschema_rs.validator_for(components)


@pytest.mark.parametrize("pair", TEI["pairs"], ids=lambda p: p["source"])
def test_tei_recorded_requests_get_tei_shaped_answers(url, pair):
    request = pair["request"]
    response = httpx.post(f"{url}/rerank", json=request, timeout=60)
    assert response.status_code == pair["status"], response.text
    body = response.json()
    tei_validator(pair["schema"]).validate(body)  # TEI's own schema, from its openapi.json
    if pair["status"] != 200:
        assert body["error_type"] == pair["response"]["error_type"] and body["error"].startswith("texts")
        return
    assert sorted(r["index"] for r in body) == list(range(len(request["texts"])))
    assert [r["score"] for r in body] == sorted((r["score"] for r in body), reverse=True)
    assert all(0 <= r["score"] <= 1 for r in body)
    for rank in body:
        assert ("text" in rank) is bool(request.get("return_text"))
        if "text" in rank:
            assert rank["text"] == request["texts"][rank["index"]]
    if "response" in pair:  # the documented answer, but for the score, which is the model's own
        assert [{k: v for k, v in r.items() if k != "score"} for r in body] == \
            [{k: v for k, v in r.items() if k != "score"} for r in pair["response"]]


def test_tei_ranks_as_v1_score_does(url):
    scores = v1_score(url, [{"title": t} for t in TITLES])
    assert len(set(scores)) > 5, "the judge should tell these titles apart"
    mapped = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": TITLES}).json()
    raw = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": TITLES, "raw_scores": True}).json()
    assert [r["index"] for r in mapped] == [r["index"] for r in raw] == ranking(scores)
    for r in mapped:
        assert r["score"] == pytest.approx(unit(scores[r["index"]]), abs=1e-6)
    for r in raw:
        assert r["score"] == pytest.approx(scores[r["index"]], abs=1e-6)


def test_tei_truncate_cuts_a_text_the_context_cannot_hold(start_service):
    short = Scorer(base_judge_dir("tiny-base"), device="cpu")
    short.max_length = 96  # a model with a short context: a long title does not fit
    url = start_service(create_app(short, LIMITS, "short"))
    texts = ["nike red running shoe", "nike red running shoe " + "with a very long description " * 12]
    refused = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": texts})
    assert refused.status_code == 422 and refused.json()["error_type"] == "Tokenizer"
    assert refused.json()["error"].startswith("texts[1]: prompt is")
    for direction in ("Right", "Left"):
        cut = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": texts, "truncate": True,
                                                "truncation_direction": direction})
        assert cut.status_code == 200, cut.text
        assert sorted(r["index"] for r in cut.json()) == [0, 1]
    huge = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": ["shoe " * 400]})
    assert huge.status_code == 422 and huge.json()["error"].startswith("texts[0]: is 2000 characters")
    huge = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": ["shoe " * 400], "truncate": True})
    assert huge.status_code == 200, huge.text
    alone = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": texts[:1], "truncate": True}).json()
    first = next(r for r in cut.json() if r["index"] == 0)
    assert first["score"] == pytest.approx(alone[0]["score"], abs=1e-6)  # a text that fits is not cut


# ---------------------------------------------------------------------------- Cohere / Jina


def test_the_cohere_sdk_reranks_as_v1_score_does(url):
    scores = v1_score(url, [{"title": t} for t in TITLES])
    v1 = cohere.Client(api_key="unused", base_url=url, timeout=60)
    response = v1.rerank(query=QUERY, documents=TITLES, top_n=4, return_documents=True)
    assert [r.index for r in response.results] == ranking(scores)[:4]
    for r in response.results:
        assert r.relevance_score == pytest.approx(unit(scores[r.index]), abs=1e-6)
        assert r.document.text == TITLES[r.index]
    v2 = cohere.ClientV2(api_key="unused", base_url=url, timeout=60)
    response = v2.rerank(model="tiny-base", query=QUERY, documents=TITLES)
    assert [r.index for r in response.results] == ranking(scores)
    assert response.meta.api_version.version == "2" and response.meta.tokens.input_tokens > 0


def test_object_documents_are_products_the_judge_reads_whole(url):
    scores = v1_score(url, PRODUCTS)
    titles_only = v1_score(url, [{"title": p["title"]} for p in PRODUCTS])
    assert scores[0] != titles_only[0], "brand and attributes should change what the judge says"
    response = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": PRODUCTS,
                                                    "return_documents": True})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == ranking(scores)
    for r in results:
        assert r["relevance_score"] == pytest.approx(unit(scores[r["index"]]), abs=1e-6)
        assert r["document"] == {"text": PRODUCTS[r["index"]]["title"], **PRODUCTS[r["index"]]}
    # rank_fields: only the named keys reach the judge (here the title alone)
    plain = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": PRODUCTS, "rank_fields": ["title"]})
    got = {r["index"]: r["relevance_score"] for r in plain.json()["results"]}
    assert got == pytest.approx({i: unit(s) for i, s in enumerate(titles_only)}, abs=1e-6)


def test_top_n_and_the_default_answer(url):
    body = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": TITLES, "top_n": 2}).json()
    assert len(body["results"]) == 2 and all("document" not in r for r in body["results"])  # Cohere's default
    assert body["usage"]["total_tokens"] == body["meta"]["tokens"]["input_tokens"] > 0  # Jina's key, Cohere's
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"]) and body["model"] == "tiny-base"


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/rerank", {"query": "shoes", "texts": []}, 400, "texts: cannot be empty"),
        ("/rerank", {"query": "shoes", "texts": ["x"] * 13}, 413, "texts: 13 items, over the limit of 12"),
        ("/rerank", {"query": "shoes", "texts": ["x", 7]}, 422, "texts[1]: Input should be a valid string"),
        ("/rerank", {"query": "shoes", "texts": "x"}, 422, "texts: Input should be a valid list"),
        ("/rerank", {"texts": ["x"]}, 422, "query: is required"),
        ("/rerank", {"query": "shoes", "texts": ["x", "  "]}, 422, "texts[1]: is empty"),
        ("/rerank", {"query": "shoes", "texts": ["x"], "raw_scores": "yes"}, 422, "raw_scores: Input should be"),
        ("/rerank", {"query": 5, "texts": ["x"]}, 422, "query: Input should be a valid string"),
        ("/v1/rerank", {"query": "shoes", "documents": []}, 422, "documents: must be a non-empty list"),
        ("/v1/rerank", {"query": "shoes", "documents": ["x"] * 13}, 413, "documents: 13 items, over the limit"),
        ("/v2/rerank", {"query": "shoes", "documents": ["x", {"text": "y"}]}, 422, "documents[1]: is an object"),
        ("/v2/rerank", {"query": "shoes", "documents": [{"text": "y"}, "x"]}, 422, "documents[1]: is a string"),
        ("/v1/rerank", {"query": "shoes", "documents": ["x", "y"], "top_n": 0}, 422, "top_n: Input should be greater"),
        ("/v1/rerank", {"query": "shoes", "documents": ["x", "y"], "top_n": 3}, 422, "top_n: must be 1 to 2"),
        ("/v1/rerank", {"query": "shoes", "documents": ["x"], "top_n": "1"}, 422, "top_n: Input should be"),
        ("/v1/rerank", {"query": "shoes", "documents": [{"text": 5}]}, 422, "documents[0].text: Input should"),
        ("/v1/rerank", {"query": "shoes", "documents": [{"brand": "nike"}]}, 422, "documents[0].text: is required"),
        ("/v1/rerank", {"query": "shoes", "documents": [{"title": "x", "price": "cheap"}]}, 422,
         "documents[0].price: Input should be a valid number"),
        ("/v1/rerank", {"query": "shoes", "documents": [{"title": "x", "attributes": {"9": "y"}}]}, 422,
         "documents[0].attributes.9"),
        ("/v1/rerank", {"query": "shoes", "documents": ["x"], "top_k": 1}, 422, "top_k: unknown field"),
        ("/v2/rerank", {"query": "shoes", "documents": [3]}, 422, "documents[0]: Input should be a valid"),
        ("/v2/rerank", {"query": "q" * 101, "documents": ["x"]}, 422, "query: is 101 characters"),
    ],
)
def test_bad_rerank_requests_get_a_4xx_naming_the_field_and_never_reach_the_model(url, path, body, status,
                                                                                   message):
    before = counter(url, "agrl_batch_items_count"), counter(url, "agrl_items_scored_total")
    response = httpx.post(f"{url}{path}", json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"].startswith(message), error
    if path != "/rerank":
        assert error["message"] == error["error"]  # Cohere's key too
    assert (counter(url, "agrl_batch_items_count"), counter(url, "agrl_items_scored_total")) == before


def test_unknown_fields_tei_ignores_them_as_tei_does(url):
    response = httpx.post(f"{url}/rerank", json={"query": "shoes", "texts": ["x"], "top_k": 1})
    assert response.status_code == 200 and len(response.json()) == 1


def test_metrics_count_routes_items_and_passes(url):
    before = counter(url, "agrl_items_scored_total")
    httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": TITLES[:3]})
    httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": TITLES[:2]})
    assert counter(url, "agrl_items_scored_total") == before + 5
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    requests = {(s.labels["route"], s.labels["status"]) for s in families["agrl_http_requests"].samples}
    assert {("/rerank", "200"), ("/v2/rerank", "200")} <= requests
    assert families["agrl_http_request_duration_seconds"].type == "histogram"
    assert {"agrl_batch_queue_depth", "agrl_http_requests_in_flight", "agrl_batch_requests"} <= set(families)
