"""Records, their loaders and writers, and dataset hygiene (splits by query, de-duplication, balance).

A record is one query-product pair (spec section 1.1). JSONL is the interchange format; CSV,
Parquet and Hugging Face datasets load into the same records. Every bad row is reported as
`FILE:LINE: field: message`; with `on_bad_row="skip"` bad rows are counted and listed, never lost.

    records = load_records("pairs.jsonl", scheme=load_scheme("default"))
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agrl.schemes import Scheme, load_scheme

# The reasoning steps and the verdicts each may take (spec section 2). `attribute.<name>` is one
# step per attribute constraint. `substitute` on category is our reading: a declared close
# substitute of the asked-for type (e.g. trail vs road running shoes), which earns "Related".
CORE_STEPS = ("category", "brand", "model", "negation", "price", "alternative")
CATEGORY_VERDICTS = ("match", "substitute", "mismatch")
CONSTRAINT_VERDICTS = ("match", "mismatch", "unknown", "n/a")
NEGATION_VERDICTS = ("respected", "violated", "unknown", "n/a")
ATTRIBUTE_STEP = re.compile(r"attribute\.[a-z][a-z0-9_]*")
FAMILIES = ("plain", "brand", "model", "attribute", "negation", "alternative", "accessory", "price")

MAX_QUERY_CHARS = 512
MAX_TEXT_CHARS = 8192


def step_verdicts(step: str) -> tuple[str, ...] | None:
    """The verdicts allowed for a step name, or None if the step is unknown."""
    if step == "category":
        return CATEGORY_VERDICTS
    if step == "negation":
        return NEGATION_VERDICTS
    if step in CORE_STEPS or ATTRIBUTE_STEP.fullmatch(step):
        return CONSTRAINT_VERDICTS
    return None


@dataclass
class Product:
    title: str
    category: str | None = None
    brand: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    price: float | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    query: str
    product: Product
    id: str | None = None
    label: int | None = None
    steps: dict[str, str] | None = None
    family: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        product = asdict(self.product)
        product_extra = product.pop("extra")
        product = {k: v for k, v in product.items() if v not in (None, {})} | product_extra
        out: dict[str, Any] = {"id": self.id, "query": self.query, "product": product}
        for key in ("label", "steps", "family"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {k: v for k, v in out.items() if v is not None} | self.extra


class RowError(ValueError):
    """One bad field of one row."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class BadRow:
    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.field}: {self.message}"


class BadRowsError(ValueError):
    def __init__(self, bad: list[BadRow]):
        shown = "\n".join(str(b) for b in bad[:20])
        more = f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
        super().__init__(f"{len(bad)} bad row(s):\n{shown}{more}")
        self.bad = bad


# ---------------------------------------------------------------------------- parsing one row


def _text(value: Any, name: str, required: bool, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise RowError(name, "is required")
        return None
    if not isinstance(value, str):
        raise RowError(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        if required:
            raise RowError(name, "is empty")
        return None
    if len(value) > max_chars:
        raise RowError(name, f"is {len(value)} characters, over the limit of {max_chars}")
    return value


def _product(raw: Any) -> Product:
    if not isinstance(raw, dict):
        raise RowError("product", f"must be an object, got {type(raw).__name__}")
    raw = dict(raw)
    title = _text(raw.pop("title", None), "product.title", required=True, max_chars=MAX_QUERY_CHARS * 2)
    category = _text(raw.pop("category", None), "product.category", required=False)
    brand = _text(raw.pop("brand", None), "product.brand", required=False)
    description = _text(raw.pop("description", None), "product.description", required=False)
    attributes = raw.pop("attributes", None) or {}
    if not isinstance(attributes, dict):
        raise RowError("product.attributes", f"must be an object, got {type(attributes).__name__}")
    clean_attrs: dict[str, str] = {}
    for key, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError(f"product.attributes.{key}", f"must be a string or number, got {value!r}")
        clean_attrs[str(key).lower()] = str(value)
    price = raw.pop("price", None)
    if price is not None and not (isinstance(price, float) and math.isnan(price)):
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            raise RowError("product.price", f"must be a number, got {price!r}")
        if price < 0:
            raise RowError("product.price", f"must not be negative, got {price}")
        price = float(price)
    else:
        price = None
    return Product(title, category, brand, clean_attrs, price, description, raw)


def parse_record(obj: Any, scheme: Scheme) -> Record:
    """A dict (one JSONL object) -> Record; raises RowError naming the bad field."""
    if not isinstance(obj, dict):
        raise RowError("row", f"must be a JSON object, got {type(obj).__name__}")
    obj = dict(obj)
    query = _text(obj.pop("query", None), "query", required=True, max_chars=MAX_QUERY_CHARS)
    if "product" not in obj:
        raise RowError("product", "is required")
    product = _product(obj.pop("product"))
    rid = obj.pop("id", None)
    if rid is not None and not isinstance(rid, (str, int)):
        raise RowError("id", f"must be a string or integer, got {rid!r}")
    label = obj.pop("label", None)
    if label is not None and not (isinstance(label, float) and math.isnan(label)):
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        try:
            label = scheme.code(label)
        except ValueError as err:
            raise RowError("label", str(err)) from None
    else:
        label = None
    steps = obj.pop("steps", None)
    if steps is not None:
        if not isinstance(steps, dict):
            raise RowError("steps", f"must be an object, got {type(steps).__name__}")
        for step, verdict in steps.items():
            allowed = step_verdicts(step)
            if allowed is None:
                raise RowError(f"steps.{step}", "unknown step")
            if verdict not in allowed:
                raise RowError(f"steps.{step}", f"unknown verdict {verdict!r} (allowed: {list(allowed)})")
    family = obj.pop("family", None)
    if family is not None and not isinstance(family, str):
        raise RowError("family", f"must be a string, got {family!r}")
    return Record(query, product, None if rid is None else str(rid), label, steps, family, obj)


# ---------------------------------------------------------------------------- reading files


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, RowError("json", f"bad JSON: {err.msg} at column {err.colno}")


def _flat_to_nested(row: dict[str, Any]) -> dict[str, Any]:
    """A flat table row (CSV/Parquet/HF) -> the nested record shape.

    Columns: query, title | product.title, category, brand, price, description, attributes (JSON
    text or a mapping), attribute.<name>, label, steps (JSON text or mapping), id, family.
    """
    row = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
    if isinstance(row.get("product"), dict):
        return row
    product: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = key.removeprefix("product.")
        if name in ("title", "category", "brand", "price", "description"):
            product[name] = value
        elif name == "attributes":
            product["attributes"] = json.loads(value) if isinstance(value, str) and value else value
        elif name.startswith("attribute."):
            if value not in (None, ""):
                product.setdefault("attributes", {})[name.removeprefix("attribute.")] = value
        elif name == "steps":
            out["steps"] = json.loads(value) if isinstance(value, str) and value else (value or None)
        else:
            out[key] = value
    if isinstance(product.get("price"), str):
        try:
            product["price"] = float(product["price"]) if product["price"].strip() else None
        except ValueError:
            pass  # kept as text so validation names the field
    return out | {"product": product}


def _table_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pandas as pd

    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        first_line = 1  # row numbers, 1-based
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = frame.replace({"": None})
        first_line = 2  # line 1 is the header
    for offset, row in enumerate(frame.to_dict(orient="records")):
        try:
            yield first_line + offset, _flat_to_nested(row)
        except json.JSONDecodeError as err:
            yield first_line + offset, RowError("attributes/steps", f"bad JSON in cell: {err.msg}")


def _hf_rows(spec: str) -> Iterator[tuple[int, Any]]:
    import datasets

    path, _, split = spec.removeprefix("hf:").partition("@")
    if Path(path).is_dir():  # a dataset saved with save_to_disk
        dataset = datasets.load_from_disk(path)
    else:
        dataset = datasets.load_dataset(path, split=split or "train")
    if isinstance(dataset, datasets.DatasetDict):
        dataset = dataset[split or "train"]
    for index, row in enumerate(dataset):
        yield index + 1, _flat_to_nested(dict(row))


def iter_rows(source: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw object or RowError) for every row of a JSONL/CSV/Parquet file or `hf:` dataset."""
    spec = str(source)
    if spec.startswith("hf:"):
        yield from _hf_rows(spec)
        return
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        yield from _jsonl_rows(path)
    elif path.suffix in (".csv", ".parquet"):
        yield from _table_rows(path)
    else:
        raise ValueError(f"{path}: unknown format {path.suffix!r} (use .jsonl, .csv, .parquet or hf:NAME)")


def read_records(
    source: str | Path, scheme: Scheme | None = None
) -> tuple[list[Record], list[BadRow]]:
    """All good records and every bad row of a source."""
    scheme = scheme or load_scheme("default")
    good: list[Record] = []
    bad: list[BadRow] = []
    for line, raw in iter_rows(source):
        try:
            if isinstance(raw, RowError):
                raise raw
            record = parse_record(raw, scheme)
        except RowError as err:
            bad.append(BadRow(str(source), line, err.field, err.message))
            continue
        good.append(record)
    return good, bad


def load_records(
    source: str | Path, scheme: Scheme | None = None, on_bad_row: str = "error", report=print
) -> list[Record]:
    """Load records; `on_bad_row="error"` raises on any bad row, `"skip"` reports each and goes on."""
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    records, bad = read_records(source, scheme)
    if bad and on_bad_row == "error":
        raise BadRowsError(bad)
    if bad:
        reasons = Counter(b.field for b in bad)
        report(f"{source}: skipped {len(bad)} bad row(s) of {len(bad) + len(records)} (by field: {dict(reasons)})")
        for row in bad:
            report(f"  {row}")
    return records


def write_jsonl(rows: Iterable[Record | dict], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            obj = row.to_dict() if isinstance(row, Record) else row
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------------------- dataset hygiene


def normalize_query(query: str) -> str:
    return " ".join(query.lower().split())


def split_by_query(
    records: list[Record], fractions: dict[str, float], seed: int = 0
) -> dict[str, list[Record]]:
    """Split so that no query lands in two splits; split sizes follow `fractions` over queries."""
    total = sum(fractions.values())
    assert total > 0, "fractions must sum to a positive number"
    by_query: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_query[normalize_query(record.query)].append(record)
    queries = sorted(by_query, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    out: dict[str, list[Record]] = {name: [] for name in fractions}
    cut, start = 0.0, 0
    for name, share in fractions.items():
        cut += share / total
        end = round(cut * len(queries))
        for query in queries[start:end]:
            out[name].extend(by_query[query])
        start = end
    return out


def dedupe(records: list[Record]) -> list[Record]:
    """Drop repeated (query, product title) pairs, keeping the first."""
    seen: set[tuple[str, str]] = set()
    out = []
    for record in records:
        key = (normalize_query(record.query), " ".join(record.product.title.lower().split()))
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def balance(records: list[Record], seed: int = 0, per_class: int | None = None) -> list[Record]:
    """Equal counts per label: down-sample each class to the rarest (or to `per_class`)."""
    by_label: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        assert record.label is not None, f"record {record.id} has no label to balance on"
        by_label[record.label].append(record)
    size = per_class or min(len(v) for v in by_label.values())
    rng = random.Random(seed)
    out: list[Record] = []
    for label in sorted(by_label):
        group = by_label[label]
        out.extend(rng.sample(group, size) if len(group) >= size else group)
    rng.shuffle(out)
    return out
