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
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agrl.errors import UserError
from agrl.files import atomic_open, input_file, trained_with
from agrl.data.schemes import DEFAULT, Scheme, load_scheme

# The reasoning steps and the verdicts each may take (spec section 2). `attribute.<name>` is one
# step per attribute constraint. `substitute` on category is our reading: a declared close
# substitute of the asked-for type (e.g. trail vs road running shoes), which earns "Related".
CORE_STEPS = ("category", "brand", "model", "negation", "price", "alternative")
CATEGORY_VERDICTS = ("match", "substitute", "mismatch")
CONSTRAINT_VERDICTS = ("match", "mismatch", "unknown", "n/a")
NEGATION_VERDICTS = ("respected", "violated", "unknown", "n/a")
ATTRIBUTE_STEP = re.compile(r"attribute\.[a-z][a-z0-9_]*")
MAX_QUERY_CHARS = 512
MAX_TEXT_CHARS = 8192
MAX_DEPTH = 16  # nesting of one row's JSON: records are two levels deep; more is hostile or a mistake
# C0 controls but tab, newline and carriage return, and DEL: a NUL or an escape in a title is a broken
# export, invisible to a rater and cut by C tools. C1 (U+0080-U+009F) stays: a Latin-1 file's smart quotes.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_INT_DIGITS = 4000  # Python refuses to convert longer ints to text (sys.get_int_max_str_digits)


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


class BadRowsError(UserError):
    """Bad rows where none may be: one line naming the first, and how to list them all."""

    def __init__(self, bad: list[BadRow]):
        more = f" (and {len(bad) - 1} more bad row(s); list them with `agrl data validate {bad[0].source}`)"
        super().__init__(f"{bad[0]}" + (more if len(bad) > 1 else ""))
        self.bad = bad


# ---------------------------------------------------------------------------- plain JSON values


def _int_or_inf(text: str) -> int | float:
    """json's parse_int: an integer too long for Python to print becomes +-inf, rejected as not finite."""
    if len(text) > MAX_INT_DIGITS:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def loads(text: str | bytes) -> Any:
    """json.loads for untrusted text: huge integers do not raise; bad JSON raises ValueError."""
    return json.loads(text, parse_int=_int_or_inf)


def check_plain(value: Any, where: str, depth: int = 0) -> None:
    """RowError naming the path of the first value later stages cannot handle: a lone surrogate in a
    string (it cannot be written as UTF-8), a control character, a NaN or infinite number, nesting over
    MAX_DEPTH. Files, importers and the service (through parse_record) all refuse by this one rule."""
    if depth > MAX_DEPTH:
        raise RowError(where, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise RowError(where, f"lone surrogate {value[err.start]!r} at character {err.start}; "
                           "fix the text's encoding") from None
        if (control := CONTROL.search(value)) is not None:
            raise RowError(where, f"control character U+{ord(control.group()):04X} at character {control.start()}; "
                           "remove it (tab, newline and carriage return are kept)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise RowError(where, f"must be a finite number, got {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, f"{where}.{key!r}", depth + 1)
            check_plain(item, f"{where}.{key}" if where != "row" else str(key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]", depth + 1)


def to_plain(value: Any) -> Any:
    """A table cell (numpy array/scalar, pandas/arrow timestamp, bytes) -> a JSON-writable value."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return to_plain(value.tolist())
    if hasattr(value, "isoformat"):  # datetime, date, pandas Timestamp
        return None if str(value) == "NaT" else value.isoformat()
    if isinstance(value, bytes):
        raise RowError("row", "binary column values are not supported; store text")
    return value


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
    if isinstance(attributes, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in attributes):
        attributes = dict(attributes)  # an Arrow map column reads as (key, value) pairs
    if not isinstance(attributes, dict):
        raise RowError("product.attributes", f"must be an object, got {type(attributes).__name__}")
    clean_attrs: dict[str, str] = {}
    for key, value in attributes.items():
        if value is None:  # Arrow fills keys that other rows have with null: absent here
            continue
        where = f"product.attributes.{key}"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RowError(where, f"must be a string or number, got {value!r}")
        name = attribute_name(key, where)
        if name in clean_attrs:
            raise RowError(where, f"is attribute {name!r} again (names are compared in lower_snake_case)")
        clean_attrs[name] = str(value)
    return Product(title, category, brand, clean_attrs, _price(raw.pop("price", None)), description, raw)


def _price(price: Any) -> float | None:
    if price is None:
        return None
    if isinstance(price, bool) or not isinstance(price, (int, float)):
        raise RowError("product.price", f"must be a number, got {price!r}")
    try:
        value = float(price)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise RowError("product.price", f"must be a finite number, got {value}")
    if value < 0:
        raise RowError("product.price", f"must not be negative, got {price}")
    return value


def attribute_name(key: Any, where: str) -> str:
    """An attribute name in the form every step name takes ("Screen Size" -> "screen_size"); RowError if none."""
    text = str(key)
    name = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
    if not text.isascii() or not ATTRIBUTE_STEP.fullmatch(f"attribute.{name}"):
        raise RowError(where, f"attribute name {text!r} must be ASCII and start with a letter "
                       "(it is read as lower_snake_case, e.g. 'Screen Size' -> screen_size)")
    return name


def parse_record(obj: Any, scheme: Scheme) -> Record:
    """A dict (one JSONL object) -> Record; raises RowError naming the bad field."""
    if not isinstance(obj, dict):
        raise RowError("row", f"must be a JSON object, got {type(obj).__name__}")
    check_plain(obj, "row")
    obj = dict(obj)
    query = _text(obj.pop("query", None), "query", required=True, max_chars=MAX_QUERY_CHARS)
    if "product" not in obj:
        raise RowError("product", "is required")
    product = _product(obj.pop("product"))
    rid = obj.pop("id", None)
    if rid is not None and not isinstance(rid, (str, int)):
        raise RowError("id", f"must be a string or integer, got {rid!r}")
    label = obj.pop("label", None)
    if label is not None:
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
        named: dict[str, str] = {}
        for step, verdict in steps.items():
            if isinstance(step, str) and step.startswith("attribute."):  # named as product attributes are
                step = "attribute." + attribute_name(step.removeprefix("attribute."), f"steps.{step}")
            allowed = step_verdicts(step)
            if allowed is None:
                raise RowError(f"steps.{step}", f"unknown step (steps: {list(CORE_STEPS)} or attribute.NAME)")
            if verdict not in allowed:
                raise RowError(f"steps.{step}", f"unknown verdict {verdict!r} (allowed: {list(allowed)})")
            named[step] = verdict
        steps = named
    family = obj.pop("family", None)
    if family is not None and not isinstance(family, str):
        raise RowError("family", f"must be a string, got {family!r}")
    if "reasoning" in obj and obj["reasoning"] is not None:  # SFT's target text (see output.check_reasoning)
        _text(obj["reasoning"], "reasoning", required=True)
    return Record(query, product, None if rid is None else str(rid), label, steps, family, obj)


# ---------------------------------------------------------------------------- reading files


JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
FORMATS = (*JSONL_SUFFIXES, ".csv", ".parquet")


def file_format(path: str | Path) -> str:
    """The records format a name says: `.csv` for `pairs.csv` and for `pairs.csv.gz` (gzip, as the importers read)."""
    path = Path(path)
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _open_bytes(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _jsonl_rows(path: Path, offset: int = 0, first: int = 1, end: int | None = None) -> Iterator[tuple[int, Any]]:
    """Lines `first` to `end` (exclusive) of a JSONL file; `offset` is the byte where line `first` starts."""
    try:
        yield from _jsonl_lines(path, offset, first, end)
    except (EOFError, zlib.error, OSError) as err:  # a gzip file cut short or corrupt (BadGzipFile: OSError)
        if path.suffix != ".gz":
            raise
        raise UserError(f"{path}: not a readable gzip file ({err or 'cut short'})") from None


def _jsonl_lines(path: Path, offset: int, first: int, end: int | None) -> Iterator[tuple[int, Any]]:
    with _open_bytes(path) as handle:  # bytes: one bad byte is one bad line, not a dead file
        handle.seek(offset)
        for line_no, data in enumerate(handle, start=first):
            if end is not None and line_no >= end:
                break
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as err:
                yield line_no, RowError("row", f"not UTF-8: byte 0x{data[err.start]:02x} at column {err.start + 1}")
                continue
            if not line.strip():
                continue
            try:
                yield line_no, loads(line)
            except json.JSONDecodeError as err:
                yield line_no, RowError("json", f"bad JSON: {err.msg} at column {err.colno}")
            except RecursionError:
                yield line_no, RowError("json", "nested too deeply")


def _flat_to_nested(row: dict[str, Any]) -> dict[str, Any]:
    """A flat table row (CSV/Parquet/HF) -> the nested record shape.

    Columns: query, title | product.title, category, brand, price, description, attributes (JSON
    text or a mapping), attribute.<name>, label, steps (JSON text or mapping), id, family.
    """
    # A missing cell is NaN/None in a table: absent, not a value (JSONL keeps NaN to reject it).
    row = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if isinstance(row.get("product"), dict):
        row["product"] = {k: v for k, v in row["product"].items()
                          if v is not None and not (isinstance(v, float) and math.isnan(v))}
        return row
    product: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = key.removeprefix("product.")
        if name in ("title", "category", "brand", "price", "description"):
            product[name] = value
        elif name == "attributes":
            product["attributes"] = loads(value) if isinstance(value, str) and value else value
        elif name.startswith("attribute."):
            if value not in (None, ""):
                product.setdefault("attributes", {})[name.removeprefix("attribute.")] = value
        elif name == "steps":
            out["steps"] = loads(value) if isinstance(value, str) and value else (value or None)
        else:
            out[key] = value
    if isinstance(product.get("price"), str):
        try:
            product["price"] = float(product["price"]) if product["price"].strip() else None
        except ValueError:
            pass  # kept as text so validation names the field
    return out | {"product": product}


def _read_table(path: Path):
    """The file as a DataFrame; UserError for an empty, malformed, non-UTF-8 or corrupt file."""
    import pandas as pd

    try:
        if file_format(path) == ".parquet":
            frame = pd.read_parquet(path)
            _check_columns(path, list(frame.columns))
            return frame
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")  # .gz: pandas infers gzip
        _check_header(path)
        _check_columns(path, list(frame.columns))
        _check_fields(path)
        return frame.replace({"": None})
    except UserError:
        raise
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty CSV file (expected a header line with query, title, ...)") from None
    except pd.errors.ParserError as err:
        message = str(err).strip().splitlines()[-1]
        if "EOF inside string" not in message:  # a row longer than the header: name it as a short one is
            _check_fields(path)
        raise UserError(f"{path}: malformed CSV: {message}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                        "save it as UTF-8") from None
    except (EOFError, zlib.error) as err:
        raise UserError(f"{path}: not a readable gzip file ({err or 'cut short'})") from None
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError; gzip.BadGzipFile an OSError
        raise UserError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None


def _check_header(path: Path) -> None:
    """Refuse a CSV header that names a column twice (pandas would rename one `NAME.1` and read the other)."""
    import csv
    import io

    with _open_bytes(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        header = [h.strip().lstrip("\ufeff") for h in next(csv.reader(handle), [])]
    twice = next((h for h in header if h and header.count(h) > 1), None)
    if twice is not None:
        columns = [i + 1 for i, h in enumerate(header) if h == twice]
        raise UserError(f"{path}:1: header: column {twice!r} appears {len(columns)} times (columns "
                        f"{', '.join(map(str, columns))}); keep one")


# Other formats' columns, and the importer that reads each: a file in one of them is not agrl records,
# and reading it as records would report every row bad for the same reason.
FOREIGN = (
    ({"search_term", "product_title", "relevance"}, "the Kaggle Home Depot format",
     "agrl data import home-depot --input {path} --out DIR"),
    ({"query", "product_id", "esci_label"}, "Amazon ESCI's examples file",
     "agrl data import esci --examples {path} --products PRODUCTS --out DIR"),
)


def foreign_format(path: str | Path, columns: Iterable[str]) -> str | None:
    """One line naming the importer for a file whose columns are another data set's format, else None."""
    names = set(columns)
    for needed, what, command in FOREIGN:
        if needed <= names:
            return (f"{path}: columns {', '.join(sorted(needed))} are {what}, not agrl records (query, title, "
                    f"label); import it: {command.format(path=path)}")
    return None


TITLE_COLUMNS = {"title", "product.title", "product"}


def _check_columns(path: Path, columns: list) -> None:
    """A table without a query or a title column cannot hold records: one line (naming the importer that
    reads its format, if one does) instead of `query: is required` on every row."""
    names = [str(c).strip().lstrip("\ufeff") for c in columns]
    if "query" in names and TITLE_COLUMNS & set(names):
        return
    missing = "query" if "query" not in names else "title"
    raise UserError(foreign_format(path, names) or f"{path}:1: header: no {missing!r} column (found {names}); records "
                    "need query, title (or product.title) and, to train or evaluate, label")


def _check_fields(path: Path) -> None:
    """Refuse a CSV row with more or fewer fields than the header (pandas pads a short one: a stray quote
    would shift the title into the query and the label into the title, a good row of wrong values)."""
    import csv

    import io

    with io.TextIOWrapper(_open_bytes(path), encoding="utf-8", newline="") as handle:  # .csv.gz too
        reader = csv.reader(handle)
        header = next(reader, [])
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != len(header):
                raise UserError(f"{path}:{start}: row has {len(row)} field{'s' * (len(row) != 1)}, the header "
                                f"{len(header)}; check its quotes and commas")
            start = reader.line_num + 1


def _table_rows(path: Path) -> Iterator[tuple[int, Any]]:
    frame = _read_table(path)
    first_line = 1 if file_format(path) == ".parquet" else 2  # row numbers, 1-based; CSV line 1 is the header
    for offset, row in enumerate(frame.to_dict(orient="records")):
        yield first_line + offset, _nested_or_error(row)


def _nested_or_error(row: dict[str, Any]) -> Any:
    try:
        return _flat_to_nested(to_plain(row))
    except RowError as err:
        return err
    except json.JSONDecodeError as err:
        return RowError("attributes/steps", f"bad JSON in cell: {err.msg}")


def _hf_rows(spec: str) -> Iterator[tuple[int, Any]]:
    import datasets

    path, _, split = spec.removeprefix("hf:").partition("@")
    try:
        if Path(path).is_dir():  # a dataset saved with save_to_disk
            dataset = datasets.load_from_disk(path)
        else:
            dataset = datasets.load_dataset(path, split=split or "train")
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[split or "train"]
    except (OSError, ValueError, KeyError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(f"{spec}: cannot load the dataset ({str(err).splitlines()[0] if str(err) else err!r})") from None
    for index, row in enumerate(dataset):
        yield index + 1, _nested_or_error(dict(row))


def iter_rows(source: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw object or RowError) for every row of a JSONL/CSV/Parquet file or `hf:` dataset."""
    spec = str(source)
    if spec.startswith("hf:"):
        yield from _hf_rows(spec)
        return
    path = check_source(spec)
    if file_format(path) in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
        first = next(rows, None)
        if first is not None and isinstance(first[1], dict) and not ("query" in first[1] and TITLE_COLUMNS & set(first[1])) \
                and (hint := foreign_format(path, first[1])):  # ESCI or Home Depot rows as JSON lines
            raise UserError(hint)
        if first is not None:
            yield first
        yield from rows
    else:
        yield from _table_rows(path)


def first_line(path: Path) -> int:
    """The line number `iter_rows` gives a file's first row: 2 in a CSV (line 1 is its header), else 1."""
    return 2 if file_format(path) == ".csv" else 1


def table_size(path: str | Path) -> int:
    """Rows of a CSV or Parquet file (the whole table is read: a corrupt one is a UserError)."""
    return len(_read_table(Path(path)))


def iter_row_range(source: str | Path, first: int, end: int, offset: int = 0) -> Iterator[tuple[int, Any]]:
    """`iter_rows` of a file, only the rows numbered `first` to `end` (exclusive). In a JSONL file
    `offset` is the byte where line `first` starts, so a range is read without the lines before it."""
    path = check_source(source)
    if file_format(path) in JSONL_SUFFIXES:
        yield from _jsonl_rows(path, offset, first, end)
        return
    base = first_line(path)
    frame = _read_table(path).iloc[max(first - base, 0) : max(end - base, 0)]
    for index, row in enumerate(frame.to_dict(orient="records")):
        yield first + index, _nested_or_error(row)


def check_source(source: str | Path, probe: bool = False) -> Path:
    """A records file that exists, is readable and has a known format (an `hf:` spec passes as is).

    `probe` also reads a CSV/Parquet table once, so a corrupt one fails before a model loads or an
    output is opened (JSONL names each bad line as it streams instead)."""
    if str(source).startswith("hf:"):
        return Path(str(source))
    path = input_file(source, "records")
    fmt = file_format(path)
    if fmt not in FORMATS or (path.suffix == ".gz" and fmt == ".parquet"):
        raise UserError(f"{path}: unknown format {''.join(path.suffixes[-2:]) if path.suffix == '.gz' else path.suffix!r} "
                        "(use .jsonl, .csv, .parquet, .jsonl.gz, .csv.gz or hf:NAME)")
    with path.open("rb") as handle:
        head = handle.read(2)
    gzipped = head == b"\x1f\x8b"
    if gzipped and path.suffix != ".gz":  # every line would be a bad row, each naming a byte
        raise UserError(f"{path}: gzip-compressed bytes under a {path.suffix} name; name it {path.name}.gz or "
                        "decompress it (gunzip)")
    if path.suffix == ".gz" and not gzipped:
        raise UserError(f"{path}: not a gzip file (named .gz, but it does not start with gzip's bytes); "
                        "rename it without .gz if it is plain text")
    if path.suffix != ".gz" and head in (b"\xff\xfe", b"\xfe\xff"):
        raise UserError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if probe and fmt in (".csv", ".parquet"):
        _read_table(path)
    return path


MANIFEST = "manifest.json"  # written by `agrl data import` beside its splits: source, scheme, sizes


def data_scheme(source: str | Path) -> tuple[str, Path] | None:
    """(scheme, manifest) when the data says which scheme its labels are in: a manifest.json beside the
    file that names a scheme (`agrl data import` writes one beside its splits; it covers every records
    file of that folder, so `data label hd/train.jsonl hd/labelled.jsonl` stays in it); None otherwise."""
    if str(source).startswith("hf:"):
        return None
    path = Path(source)
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return None
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{manifest}: not valid JSON; it says which label scheme {path.name} uses, "
                        "so repair it or import the data again") from None
    if not isinstance(info, dict) or "scheme" not in info:
        return None
    scheme = info["scheme"]
    if not isinstance(scheme, str) or not scheme:
        raise UserError(f"{manifest}: scheme: must name the label scheme of {path.name}, got {scheme!r}")
    return scheme, manifest


def same_scheme(a: str, b: str) -> bool:
    """Two scheme names or files with the same levels (codes and names): labels mean the same in both."""
    return a == b or load_scheme(a).levels == load_scheme(b).levels


def resolve_scheme(source: str | Path | None, given: str | None, model: str | Path | None = None,
                   option: str = "--scheme") -> str:
    """The scheme to read `source`'s labels under, and to run judge `model` on them: the one rule every
    command uses (train, validate, label, eval, score, sbs, serve, baselines; `source` None: no data).

    The data's own word (its manifest.json) wins over nothing and must agree with `given` (an option, a
    config's `scheme`, a fitted model's scheme); then `given`, the scheme `model`'s run trained with, the
    DEFAULT. A judge whose labels are another scheme's is refused (check_judge_scheme): labels of one
    scheme are never read, or produced, as another's."""
    said = data_scheme(source) if source is not None else None
    trained = trained_with(model, "scheme") if model is not None else None
    if said is not None:
        scheme, manifest = said
        if given is not None and not same_scheme(given, scheme):
            raise UserError(f"{option} {given}: {source} is labelled in scheme {scheme!r} ({manifest} says so); "
                            f"pass {option} {scheme}, or leave {option} out")
        if given is None and trained is not None and not same_scheme(trained, scheme):
            raise UserError(f"{source}: labelled in scheme {scheme!r} ({manifest} says so), but --model {model} "
                            f"was trained with scheme {trained!r}; use a judge trained on this scheme (train "
                            f"one on it: `agrl train` with scheme: {scheme})")
        resolved = given or scheme
    else:
        resolved = given or trained or DEFAULT
    if model is not None:
        check_judge_scheme(model, load_scheme(resolved), option)
    return resolved


def scheme_of(source: str | Path | None, given: str | None = None, model: str | Path | None = None,
              option: str = "--scheme") -> Scheme:
    """resolve_scheme's scheme, loaded."""
    return load_scheme(resolve_scheme(source, given, model, option))


def check_judge_scheme(model: str | Path, scheme: Scheme, option: str = "--scheme") -> None:
    """Refuse to run judge `model` under a scheme other than the one it was trained with (its run's
    config.yaml) unless both have the same label codes: its labels (and the scorer's posterior, read from
    those tokens) are codes of its own scheme."""
    trained = trained_with(model, "scheme")
    if not trained or trained == scheme.name:
        return
    try:
        theirs = load_scheme(trained)
    except UserError:
        return  # the training scheme file is gone: only the codes could be compared, and they cannot
    if theirs.codes != scheme.codes:
        raise UserError(f"{option} {scheme.name}: the judge {model} was trained with scheme {theirs.name!r} "
                        f"(codes {list(theirs.codes)}, these {list(scheme.codes)}); use a judge trained on "
                        f"scheme {scheme.name!r} (`agrl train` with scheme: {scheme.name}), or data in scheme "
                        f"{theirs.name!r}")


def check_data_scheme(source: str | Path, scheme: Scheme) -> None:
    """The guard under every reader (`read_records`, `score_file`, training through load_records): refuse
    to read a file's labels under another scheme than the one its manifest.json names."""
    said = data_scheme(source)
    if said is not None and load_scheme(said[0]).levels != scheme.levels:
        raise UserError(f"{source}: labelled in scheme {said[0]!r} ({said[1]} says so), read here as scheme "
                        f"{scheme.name!r}; pass --scheme {said[0]} (in a training config: scheme: {said[0]})")


def check_not_empty(source: str | Path) -> None:
    """Refuse a records file with no rows at all (an empty file, a CSV with only its header): a command
    on it would exit 0 having done nothing."""
    if str(source).startswith("hf:"):
        return
    if next(iter_rows(source), None) is None:
        raise UserError(f"{source}: no records (the file is empty or holds only a header)")


def row_id(raw: object, line: int) -> str:
    """A row's id, the one `agrl score` and `data validate` use: its own, else a stable hash of the pair it
    rates (query and product; not its label or notes: one pair with two labels is one pair), so a
    kill-and-rerun finds the same id."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), (str, int)) and not isinstance(raw.get("id"), bool):
        return str(raw["id"])
    if not isinstance(raw, dict):
        return "sha-" + hashlib.sha256(f"line {line}".encode()).hexdigest()[:16]
    pair = {"query": raw.get("query"), "product": raw.get("product")}
    content = json.dumps(pair, sort_keys=True, ensure_ascii=False, default=str)
    return "sha-" + hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def read_records(
    source: str | Path, scheme: Scheme | None = None, checks: Iterable = (), unique_ids: bool = False
) -> tuple[list[Record], list[BadRow]]:
    """All good records and every bad row of a source; `checks` are f(record, scheme) raising RowError
    (output.check_reasoning: the layer above owns the completion format). `unique_ids` (`data validate`):
    a row whose id repeats an earlier row's is bad, and so is each repeat of a query-title pair
    (repeated_pairs; an id-less row's id in `agrl score` is its pair's hash, row_id): what validate
    accepts, score and training take as it is."""
    scheme = scheme or scheme_of(source)
    check_data_scheme(source, scheme)
    good: list[tuple[int, Record]] = []
    bad: list[BadRow] = []
    first_line: dict[str, int] = {}  # id -> its line
    for line, raw in iter_rows(source):
        try:
            if isinstance(raw, RowError):
                raise raw
            record = parse_record(raw, scheme)
            for check in checks:
                check(record, scheme)
            if unique_ids:
                # an id-less row's id (row_id) hashes its pair: its repeats are repeated_pairs' below
                if record.id is not None and record.id in first_line:
                    raise RowError("id", f"{record.id!r} repeats the id of line {first_line[record.id]}")
                if record.id is not None:
                    first_line[record.id] = line
        except RowError as err:
            bad.append(BadRow(str(source), line, err.field, err.message))
            continue
        good.append((line, record))
    if unique_ids:
        repeats = repeated_pairs(good, source)
        lines = {b.line for b in repeats}
        bad = sorted(bad + repeats, key=lambda b: b.line)
        good = [(line, r) for line, r in good if line not in lines]
    return [record for _, record in good], bad


def load_records(
    source: str | Path, scheme: Scheme | None = None, on_bad_row: str = "error", report=print, checks: Iterable = ()
) -> list[Record]:
    """Load records; `on_bad_row="error"` raises on any bad row, `"skip"` reports each and goes on."""
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    records, bad = read_records(source, scheme, checks)
    if bad and on_bad_row == "error":
        raise BadRowsError(bad)
    if bad:
        reasons = Counter(b.field for b in bad)
        report(f"{source}: skipped {len(bad)} bad row(s) of {len(bad) + len(records)} (by field: {dict(reasons)})")
        for row in bad:
            report(f"  {row}")
    return records


def grade_of(record: Record) -> float | None:
    """The record's human grade (`grade`: the importers keep Home Depot's mean of raters) as a number: a
    CSV cell's text too; None when absent or not a finite number."""
    value = record.extra.get("grade")
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def write_jsonl(rows: Iterable[Record | dict], path: str | Path) -> int:
    """Write rows as JSONL atomically (a kill leaves the old file or the new one)."""
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            obj = row.to_dict() if isinstance(row, Record) else row
            handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
            count += 1
    return count


# ---------------------------------------------------------------------------- dataset hygiene


# The hard query families (the spec's: a pretrained judge gets them wrong): the hard-slice metrics and the
# counters of GRPO's groups read them; synth generates them rarely in SFT, often in RL.
HARD = ("negation", "alternative", "accessory", "model")


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


def pair_key(record: Record) -> tuple[str, str]:
    """The query-title pair a record rates, as the importers and `data validate` compare pairs: case and
    spacing aside."""
    return normalize_query(record.query), normalize_query(record.product.title)


# ---------------------------------------------------------------------------- repeated pairs
# One query-product pair rated more than once becomes one record: the importers merge the rows by these
# rules, and `data validate` names every repeat by line with what the rule makes of it.


def grade_level(grade: float) -> int:
    """A Home Depot mean grade (1..3) -> three_level code: >= 2.67 exact (3), 2.0-2.5 partial (2), < 2 irrelevant.

    Means are of 3+ raters, written to 2 decimals (2.67 is 8/3), so compare at that precision."""
    grade = round(grade, 2)
    return 3 if grade >= 2.67 else 2 if grade >= 2.0 else 1


def majority(group: list[Record]) -> Record | None:
    """One record for repeated single-annotator labels (QBQTC, ESCI): the majority label; None on a tie
    (the pair is dropped: no label can be said to be its label)."""
    counts = Counter(r.label for r in group).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    merged = group[0]
    merged.label = counts[0][0]
    if "grade" in merged.extra:
        merged.extra["grade"] = float(merged.label)
    merged.extra |= {"merged_rows": len(group), "merged_labels": [r.label for r in group]}
    return merged


def mean_grade(group: list[Record]) -> Record:
    """One record for a repeated Home Depot pair: each row's relevance is a mean of raters, so the rows are
    pooled as the mean of their grades (unweighted: the rater counts are not published), then leveled."""
    merged = group[0]
    grades = [r.extra["grade"] for r in group]
    merged.extra["grade"] = round(sum(grades) / len(grades), 4)
    merged.label = grade_level(merged.extra["grade"])
    merged.extra |= {"merged_rows": len(group), "merged_grades": grades}
    return merged


def _merged(group: list[Record]) -> str:
    """What the importers' rule makes of a repeated pair: the mean of graded rows, else the majority label."""
    import copy

    copies = [copy.deepcopy(r) for r in group]
    if all(isinstance(r.extra.get("grade"), (int, float)) for r in copies):
        merged = mean_grade(copies)
        return f"their mean grade {merged.extra['grade']} is label {merged.label}"
    if any(r.label is None for r in copies):
        return "unlabelled rows"
    merged = majority(copies)
    return "a tie, which the importers drop" if merged is None else f"the majority label is {merged.label}"


def repeated_pairs(rows: list[tuple[int, Record]], source: str | Path) -> list[BadRow]:
    """A bad row for every repeat of a query-title pair (pair_key) after its first row, naming that line,
    the labels the pair got and what the importers' rule (mean grade, else majority) makes of them."""
    groups: dict[tuple[str, str], list[tuple[int, Record]]] = {}
    for line, record in rows:
        groups.setdefault(pair_key(record), []).append((line, record))
    bad = []
    for group in groups.values():
        if len(group) < 2:
            continue
        (first, _), labels = group[0], [r.label for _, r in group]
        conflict = len(set(labels)) > 1
        what = (f"labels {', '.join(map(str, labels))} on lines {', '.join(str(n) for n, _ in group)}: "
                f"{_merged([r for _, r in group])}" if conflict else f"label {labels[0]}")
        for line, record in group[1:]:
            field_name = "label" if record.label != labels[0] else "pair"
            bad.append(BadRow(str(source), line, field_name, f"repeats the query-title pair of line {first} ({what}); "
                              "keep one row per pair (`agrl data import` merges them by this rule)"))
    return sorted(bad, key=lambda b: b.line)


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
