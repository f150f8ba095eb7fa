"""Rerank routes in the shapes existing clients speak: TEI's `/rerank`, Cohere's and Jina's `/v1|v2/rerank`.

A rerank score is the judge's expected relevance from its one-pass label posterior (score.Scorer),
mapped to [0, 1] by the scheme's lowest and highest codes (TEI's `raw_scores` keeps it raw). Each
text or document becomes the product the judge reads: a string is a title; an object document is a
product (title, brand, category, attributes, price, description; `text` stands in for a missing
title). Bodies are validated here (wire.validate), products by data.parse_record in serve.py: a bad
one is a 4xx naming the field, before anything reaches the model.

    POST /rerank     {"query": "red shoes", "texts": ["nike red running shoe", "shoe rack"]}
    POST /v1/rerank  {"query": "red shoes", "documents": ["...", ...] | [{"title": ..., "brand": ...}], "top_n": 3}
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from agrl.data.records import MAX_QUERY_CHARS
from agrl.data.schemes import Scheme
from agrl.model.score import ScoreResult
from agrl.serve.wire import CohereRerankRequest, HTTPError, TEIRerankRequest, validate

TITLE_CHARS = 2 * MAX_QUERY_CHARS  # the longest title data.parse_record takes


@dataclass
class Item:
    product: dict  # what data.parse_record reads as the product
    where: str  # its name in error messages: texts[2], documents[0]
    is_text: bool  # a plain string (errors name the item itself, not `.title`)


@dataclass
class Batch:
    """A rerank request made ready to score."""

    query: str
    items: list[Item]
    truncate: str | None = None  # "right" or "left": cut a text that does not fit the context


def unit_score(result: ScoreResult, scheme: Scheme) -> float:
    """Expected relevance mapped to [0, 1]: the lowest code -> 0, the highest -> 1."""
    low, high = min(scheme.codes), max(scheme.codes)
    return min(1.0, max(0.0, (result.score - low) / (high - low)))


def _count(n: int, name: str, max_items: int) -> None:
    if n > max_items:
        raise HTTPError(413, f"{name}: {n} items, over the limit of {max_items}")


# ---------------------------------------------------------------------------- TEI


def tei_batch(body: dict, max_items: int) -> tuple[Batch, TEIRerankRequest]:
    req = validate(TEIRerankRequest, body)
    if not req.texts:
        raise HTTPError(400, "texts: cannot be empty", "Empty")  # TEI's status and error_type
    _count(len(req.texts), "texts", max_items)
    direction = req.truncation_direction.lower() if req.truncate else None
    texts = [cut(text, TITLE_CHARS, direction) if direction else text for text in req.texts]
    items = [Item({"title": text}, f"texts[{i}]", True) for i, text in enumerate(texts)]
    return Batch(req.query, items, direction), req


def cut(text: str, chars: int, direction: str) -> str:
    return text if len(text) <= chars else text[:chars] if direction == "right" else text[-chars:]


def tei_response(req: TEIRerankRequest, results: list[ScoreResult], scheme: Scheme) -> list[dict]:
    ranks = []
    for i, result in enumerate(results):
        rank = {"index": i, "score": result.score if req.raw_scores else unit_score(result, scheme)}
        if req.return_text:
            rank["text"] = req.texts[i]
        ranks.append(rank)
    return sorted(ranks, key=lambda r: -r["score"])  # stable: ties keep input order


# ---------------------------------------------------------------------------- Cohere / Jina


def cohere_batch(body: dict, max_items: int) -> tuple[Batch, CohereRerankRequest]:
    docs = body.get("documents")
    for i, doc in enumerate(docs if isinstance(docs, list) else []):  # before the types: the clearer message
        if isinstance(doc, (str, dict)) and isinstance(docs[0], (str, dict)) and \
                isinstance(doc, str) != isinstance(docs[0], str):
            kinds = ["a string" if isinstance(d, str) else "an object" for d in (docs[0], doc)]
            raise HTTPError(422, f"documents[{i}]: is {kinds[1]} where documents[0] is {kinds[0]}; "
                            "send all strings or all objects")
    req = validate(CohereRerankRequest, body)
    if not docs:
        raise HTTPError(422, "documents: must be a non-empty list")
    _count(len(docs), "documents", max_items)
    if req.top_n is not None and not 1 <= req.top_n <= len(docs):
        # Cohere refuses a top_n over the number of documents (Elasticsearch's Cohere docs, PR #111446).
        raise HTTPError(422, f"top_n: must be 1 to {len(docs)} (the number of documents), got {req.top_n}")
    items = []
    for i, doc in enumerate(docs):
        if isinstance(doc, str):
            items.append(Item({"title": doc}, f"documents[{i}]", True))
            continue
        read = {k: v for k, v in doc.items() if req.rank_fields is None or k in req.rank_fields}
        product = {k: v for k, v in read.items() if k != "text"}
        if "title" not in product:
            if read.get("text") is None:
                raise HTTPError(422, f"documents[{i}].text: is required (or a title)")
            product["title"] = read["text"]
        items.append(Item(product, f"documents[{i}]", False))
    return Batch(req.query, items), req


def cohere_response(req: CohereRerankRequest, docs: list, results: list[ScoreResult], scheme: Scheme,
                    tokens: int, model_name: str, version: str) -> dict:
    order = sorted(range(len(results)), key=lambda i: -results[i].score)
    ranked = []
    for i in order[: req.top_n or len(order)]:
        result = {"index": i, "relevance_score": unit_score(results[i], scheme)}
        if req.return_documents:
            doc = docs[i]
            result["document"] = {"text": doc} if isinstance(doc, str) else {"text": doc.get("title"), **doc}
        ranked.append(result)
    return {
        "id": str(uuid.uuid4()),
        "model": req.model or model_name,
        "results": ranked,
        "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1},
                 "tokens": {"input_tokens": tokens, "output_tokens": 0}},
        "usage": {"total_tokens": tokens, "prompt_tokens": tokens},  # Jina's key
    }
