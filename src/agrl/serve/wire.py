"""The service's wire shapes: pydantic models of requests, responses and errors, and the OpenAPI document.

The rerank shapes follow the APIs existing clients speak (checked against their sources, 2026-12-04):
  TEI  `POST /rerank`: huggingface/text-embeddings-inference router/src/http/types.rs (RerankRequest,
       Rank, ErrorResponse) at 0d124dc; unknown fields are ignored there (serde's default), and here.
  Cohere `POST /v1/rerank`, `/v2/rerank`: the `cohere` SDK's request and response models (v7.3);
       Cohere answers an unknown field with 422 "unknown field: parameter 'top_k' is not a valid field"
       (quoted in HKUDS/LightRAG#1813), so these routes reject unknown fields too, and refuses a top_n
       over the number of documents (Elasticsearch's Cohere docs, elastic/elasticsearch#111446).
       Jina's rerank takes the same request; its answer carries `usage`, which is added here.
Every route validates its body through its model here (`validate`), then reads each product with
data.parse_record (the batch command's rules). One Product model: `/v1/score` items and `/v1/judge`'s
product are Products, a rerank object document is a Product whose title may come from `text`.
`field_error` turns pydantic's error into one line naming the field, the shape every 4xx has; for
`/v1/score` and `/v1/judge` in the data layer's words (`must be a number`, as a file row is told), for
the rerank routes in pydantic's, as the clients they follow answer.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)
from pydantic.json_schema import models_json_schema

from agrl.data.records import RowError, check_plain
from agrl.errors import HTTPError

ErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]  # TEI's ErrorType


class ErrorResponse(BaseModel):
    """Every error: `error` starts with the field it is about (`texts[1]: must be a string`)."""

    error: str
    error_type: ErrorType
    message: str | None = Field(None, description="the same text, under Cohere's key (rerank routes only)")


# ---------------------------------------------------------------------------- /v1/score, /v1/judge


# An attribute name is read as lower_snake_case and must then start with a letter ("Screen Size" -> screen_size).
AttributeName = Annotated[str, StringConstraints(pattern=r"^[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]*[A-Za-z][\x00-\x7f]*$")]
Text = Annotated[str, StringConstraints(pattern=r"\S")]  # not blank
SHOES = {"title": "Nike Pegasus 40 running shoe", "brand": "nike", "attributes": {"color": "red"}, "price": 120}


class ProductFields(BaseModel):
    """What a product may say besides its title (the fields data.parse_record reads)."""

    model_config = ConfigDict(extra="allow")  # other keys are kept with the record

    category: str | None = None
    brand: str | None = None
    description: str | None = None
    attributes: dict[AttributeName, str | float | None] | None = None  # a null value: absent
    price: float | None = Field(None, ge=0, allow_inf_nan=False)


class Product(ProductFields):
    title: Text


class ScoreRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"query": "red nike running shoes",
                                                               "items": [SHOES, {"title": "shoe rack"}]}]})

    query: Text
    items: list[Product] = Field(min_length=1)


class JudgeRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"query": "red nike running shoes", "product": SHOES}]})

    query: Text
    product: Product


class ScoreItem(BaseModel):
    label: int
    label_name: str
    score: float = Field(description="expected relevance: sum of code x probability")
    tier: Literal["Good", "Mid", "Bad"]
    probabilities: dict[str, float]


class ScoreResponse(BaseModel):
    results: list[ScoreItem]
    scheme: str


class JudgeResponse(BaseModel):
    completion: str
    valid: bool
    label: int | None
    steps: dict[str, str] | None
    reject_reason: str | None


class Health(BaseModel):
    status: Literal["ok", "draining", "broken"]
    model: str | None = None
    scheme: str | None = None
    error: str | None = None


# ---------------------------------------------------------------------------- TEI: POST /rerank


class TEIRerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"query": "red nike running shoes", "texts": ["nike pegasus 40 running shoe, red", "shoe rack"]}]})

    query: StrictStr
    texts: list[StrictStr]
    truncate: StrictBool | None = Field(False, description="cut a text that does not fit the context")
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: StrictBool = Field(False, description="the expected relevance itself, not mapped to [0, 1]")
    return_text: StrictBool = False


class Rank(BaseModel):
    index: int = Field(ge=0)
    score: float
    text: str | None = None


# ---------------------------------------------------------------------------- Cohere / Jina: /v1/rerank, /v2/rerank


class RerankDocument(ProductFields):
    """A document as an object: `text`, or a product (`title`, `brand`, `attributes`, ...) the judge reads
    whole; other keys are kept and returned with the document, as Cohere does."""

    # text or title: the judge needs one of them
    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": [{"required": ["text"]},
                                                                          {"required": ["title"]}]})

    text: str | None = None
    title: str | None = None


class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "red nike running shoes", "documents": ["nike pegasus 40 running shoe, red", "shoe rack"],
         "top_n": 1, "return_documents": True},
        {"model": "agrl", "query": "red nike running shoes", "documents": [SHOES, {"text": "shoe rack"}]}]})

    query: StrictStr
    documents: list[StrictStr] | list[RerankDocument] = Field(description="all strings or all objects")
    model: StrictStr | None = Field(None, description="accepted and echoed; the served judge answers")
    top_n: StrictInt | None = Field(None, ge=1, description="1 to len(documents); default all")
    return_documents: StrictBool | None = False
    rank_fields: list[StrictStr] | None = Field(None, description="keys of object documents the judge reads")
    # Accepted so clients that send them work; the judge reads each document whole (or refuses it with a
    # 422 when it does not fit the context), so there is nothing to chunk and no span to report.
    max_chunks_per_doc: StrictInt | None = Field(None, ge=1)
    max_tokens_per_doc: StrictInt | None = Field(None, ge=1)
    relevant_spans: dict | None = None
    priority: StrictInt | StrictFloat | None = None


class RerankResult(BaseModel):
    index: int = Field(ge=0)
    relevance_score: float = Field(ge=0, le=1)
    document: dict | None = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: dict
    usage: dict


# ---------------------------------------------------------------------------- errors and the schema


UNION_BRANCHES = {"str", "int", "float", "bool", "list[str]", "list[RerankDocument]"}


def printable(field: str) -> str:
    """A field path as printable ASCII with no spaces (a key may hold anything): `attributes.a\\u00b6b`."""
    return re.sub(r"[^!-~]", lambda m: f"\\u{ord(m[0]):04x}" if ord(m[0]) < 0x10000 else f"\\U{ord(m[0]):08x}", field)


def _data_words(kind: str, value: object, loc: list) -> str | None:
    """pydantic's error type in the words data.parse_record uses for a file's row, where it has them."""
    try:
        check_plain(value, "value")  # a lone surrogate, a control character: the data layer's one rule
    except RowError as err:
        return err.message
    got = type(value).__name__
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "[key]":
        return f"attribute name {value!r} must be ASCII and start with a letter"
    return {"string_type": f"must be a string, got {got}", "string_pattern_mismatch": "is empty",
            "float_type": f"must be a number, got {value!r}", "float_parsing": f"must be a number, got {value!r}",
            "finite_number": f"must be a finite number, got {value}", "model_type": f"must be an object, got {got}",
            "dict_type": f"must be an object, got {got}", "list_type": f"must be a list, got {got}",
            "too_short": "must be non-empty", "greater_than_equal": f"must not be negative, got {value}"}.get(kind)


def field_error(err: ValidationError, data_words: bool = False) -> str:
    """pydantic's error as one line naming the field: `documents[2].text: Input should be a valid string`
    (`items[0].price: must be a number, got 'cheap'` with `data_words`)."""
    errors = err.errors(include_url=False)
    first = max(errors, key=lambda e: len(e["loc"]))  # the deepest: in a union, the branch the value took
    # A union (str | object) reports each branch under the branch's name: keep the path to the value.
    loc = [part for part in first["loc"] if part not in UNION_BRANCHES]
    kind, message = first["type"], first["msg"]
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        message = "unknown field (this API rejects fields it does not define)"
    elif data_words:
        message = _data_words(kind, first.get("input"), loc) or message
    loc = [part for part in loc if part != "[key]"]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return f"{printable(where) or 'body'}: {message}"


def validate(model: type[BaseModel], body: dict, data_words: bool = False):
    """The body as `model`, or a 422 naming the first field it gets wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise HTTPError(422, field_error(err, data_words)) from None


REQUEST_MODELS = (ScoreRequest, JudgeRequest, TEIRerankRequest, CohereRerankRequest)


def add_request_schemas(openapi: dict) -> dict:
    """Put the request models into the OpenAPI components, so `requestBody` refs resolve."""
    _, defs = models_json_schema([(m, "validation") for m in REQUEST_MODELS],
                                 ref_template="#/components/schemas/{model}")
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    return openapi


def body_of(model: type[BaseModel]) -> dict:
    """`openapi_extra` for a route that reads its JSON body itself (415/413/408 come first)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}
