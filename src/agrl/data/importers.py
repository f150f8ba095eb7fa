"""Importers of public relevance data sets into agrl records, with query-disjoint splits.

Home Depot (Kaggle 2016: search term, product title, mean grade 1..3 -> the three_level scheme, the
mean kept as `grade` for RMSE), QBQTC (CLUE's Chinese query-title corpus, graded 0/1/2 -> three_level)
and Amazon ESCI (its published parquet schema -> the esci scheme). Every bad row is `FILE:LINE: field:
message` (exit 2 through errors.UserError); the splits are written atomically, one JSONL file each.

    splits = import_home_depot("../shared/data/home_depot/home_depot.csv.gz"); write_splits(splits, "data/hd")
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import html
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agrl.data.records import (  # grade_level, majority, mean_grade: the repeated-pair rules data validate reports by
    MAX_TEXT_CHARS,
    BadRow,
    Record,
    RowError,
    check_not_empty,
    check_source,
    grade_level,
    load_records,
    majority,
    mean_grade,
    normalize_query,
    parse_record,
    resolve_scheme,
    split_by_query,
    write_jsonl,
)
from agrl.errors import UserError
from agrl.files import atomic_write, distinct, empty_dir, input_file
from agrl.data.schemes import Scheme, load_scheme

SPLITS = ("train", "validation", "test")
HOME_DEPOT = Path("../shared/data/home_depot/home_depot.csv.gz")
QBQTC = Path("../shared/data/qbqtc")
ESCI_EXAMPLES = ("example_id", "query", "query_id", "product_id", "product_locale", "esci_label",
                 "small_version", "large_version", "split")
ESCI_PRODUCTS = ("product_id", "product_title", "product_description", "product_bullet_point", "product_brand",
                 "product_color", "product_locale")
ESCI_LABELS = {"E": "Exact", "S": "Substitute", "C": "Complement", "I": "Irrelevant"}


class BadRows(UserError):
    """Bad rows in a source file: one line naming the first, and how many more."""

    def __init__(self, bad: list[BadRow]):
        more = f" (and {len(bad) - 1} more bad row(s))" if len(bad) > 1 else ""
        super().__init__(f"{bad[0]}{more}")
        self.bad = bad


# ---------------------------------------------------------------------------- reading sources


def _open_text(path: Path, encoding: str) -> IO[str]:
    """A text handle on a plain or gzipped file; undecodable bytes become surrogates, named per row later."""
    try:
        "".encode(encoding)
    except LookupError:
        raise UserError(f"--encoding {encoding}: unknown text encoding (e.g. utf-8, latin-1, cp1252)") from None
    errors = "surrogateescape" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else "strict"
    with path.open("rb") as handle:
        head = handle.read(4)
    if _is_gzip(path):  # gzip bytes, whatever the name says
        return gzip.open(path, "rt", encoding=encoding, errors=errors, newline="")
    if path.suffix == ".gz":
        raise UserError(f"{path}: not a gzip file (named .gz, but it does not start with gzip's bytes); "
                        "rename it without .gz if it is plain text")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") and not encoding.lower().startswith("utf-16"):
        raise UserError(f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); pass --encoding utf-16, "
                        "or save it as UTF-8")
    return path.open(encoding=encoding, errors=errors, newline="")


ENCODING_HINT = "give the file's encoding with --encoding (e.g. latin-1)"


def _text_cell(value: Any, name: str, required: bool = True, hint: str = ENCODING_HINT) -> str | None:
    """A text cell: surrogates (bytes that were not UTF-8) and empty required cells are RowErrors."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise RowError(name, "is required")
        return None
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        byte = ord(text[err.start]) - 0xDC00 if 0xDC80 <= ord(text[err.start]) <= 0xDCFF else None
        raise RowError(name, f"not UTF-8 text (byte 0x{byte:02x} at character {err.start + 1}); {hint}"
                       if byte is not None
                       else f"lone surrogate at character {err.start + 1}") from None
    if required and not text.strip():
        raise RowError(name, "is empty")
    return text if text.strip() else None


def _not_utf8_read_as_other(path: Path, encoding: str) -> None:
    """Refuse --encoding latin-1 (or any other) on a file that is UTF-8 with non-ASCII text: every accented
    letter would be read as two wrong ones ("café" -> "cafÃ©"), silently."""
    if encoding.replace("_", "-").lower() in ("utf-8", "utf8"):
        return
    with (gzip.open(path, "rb") if _is_gzip(path) else path.open("rb")) as handle:
        data = handle.read()
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return
    raise UserError(f"{path}: is UTF-8 text, not {encoding} (its non-ASCII letters would be misread); "
                    "leave out --encoding")


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _csv_rows(path: Path, encoding: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line of the row, row) for a CSV file; UserError naming FILE:LINE on a broken file."""
    line = 1
    try:
        _not_utf8_read_as_other(path, encoding)
        with _open_text(path, encoding) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path}: empty CSV file (expected a header with {', '.join(required)})")
            try:
                header = [_text_cell(h, f"header column {i + 1}", required=False) or "" for i, h in enumerate(header)]
            except RowError as err:
                raise UserError(f"{path}:1: {err}") from None
            header = [h.strip().lstrip("\ufeff") for h in header]
            twice = next((h for h in header if h and header.count(h) > 1), None)
            if twice is not None:
                columns = [i + 1 for i, h in enumerate(header) if h == twice]
                raise UserError(f"{path}:1: header: column {twice!r} appears {len(columns)} times (columns "
                                f"{', '.join(map(str, columns))}); keep one")
            missing = [name for name in required if name not in header]
            if missing:
                raise UserError(f"{path}:1: header: missing column(s) {missing} (found {header})")
            line = reader.line_num + 1
            for cells in reader:
                if len(cells) != len(header):
                    raise UserError(f"{path}:{line}: row: {len(cells)} cells, the header has {len(header)}")
                yield line, dict(zip(header, cells))
                line = reader.line_num + 1
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{path}: not a readable gzip file ({err or 'cut short'})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not {encoding} text ({err.reason}); give the right --encoding") from None
    except csv.Error as err:
        raise UserError(f"{path}:{line}: malformed CSV: {err}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, object or RowError) of a plain or gzipped JSONL file."""
    try:
        with _open_text(path, "utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    _text_cell(line, "row", hint="save the file as UTF-8")
                    yield line_no, json.loads(line)
                except RowError as err:
                    yield line_no, err
                except ValueError as err:
                    yield line_no, RowError("json", f"bad JSON: {getattr(err, 'msg', err)}")
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{path}: not a readable gzip file ({err or 'cut short'})") from None


def _collect(rows: Iterator[tuple[int, Any]], source: Path, build) -> list[tuple[int, Record]]:
    """(line, record) built by `build(row)` for every row; every bad row is collected and the first raised."""
    good, bad = [], []
    for line, row in rows:
        try:
            if isinstance(row, RowError):
                raise row
            good.append((line, build(row)))
        except RowError as err:
            bad.append(BadRow(str(source), line, err.field, err.message))
    if bad:
        raise BadRows(bad)
    if not good:
        raise UserError(f"{source}: no rows to import")
    return good


# ---------------------------------------------------------------------------- duplicates and conflicts
# A source may hold one query-product pair more than once (Home Depot repeats rows; QBQTC's dev and
# test_public files share pairs, some with another label). Each pair becomes one record, never two with
# one id, and what was merged is said: on the console, in manifest.json ("merged") and in the record
# (`merged_rows`, and the labels or grades it had).


def merge_duplicates(rows: list[tuple[int, Record]], sources: dict[int, Path] | Path, key, combine,
                     how: str, notes: list[str] | None) -> list[Record]:
    """Records with one record per `key(record)` (`combine` merges a repeated pair or drops it), and
    unique ids (a repeated id on another pair is a bad row naming both lines). Appends one line on
    what was merged to `notes`."""
    where = (lambda i: f"{sources[i]}:{rows[i][0]}") if isinstance(sources, dict) else (
        lambda i: f"{sources}:{rows[i][0]}")
    groups: dict[Any, list[int]] = {}
    for index, (_, record) in enumerate(rows):
        groups.setdefault(key(record), []).append(index)
    out: list[Record] = []
    first_id: dict[str, int] = {}
    bad: list[BadRow] = []
    merged = pairs = conflicts = dropped = 0
    example = ""
    for members in groups.values():
        record = rows[members[0]][1]
        if len(members) > 1:
            group = [rows[i][1] for i in members]
            labels = [r.label for r in group]
            conflict = len(set(labels)) > 1 or len({r.extra.get("grade") for r in group}) > 1
            record = combine(group)
            merged += len(members) - 1
            pairs += 1
            conflicts += conflict
            dropped += record is None
            if conflict and not example:
                places = [where(i) for i in members]
                files = {p.rsplit(":", 1)[0] for p in places}
                at = (f"{files.pop()} lines {', '.join(p.rsplit(':', 1)[1] for p in places)}" if len(files) == 1
                      else ", ".join(places))
                example = f"; e.g. {at}: labels {labels} -> " + ("dropped (a tie)" if record is None
                                                                  else f"{record.label}")
            if record is None:
                continue
        if record.id is not None:
            if record.id in first_id:
                line = rows[members[0]][0]
                source = where(members[0]).rsplit(":", 1)[0]
                bad.append(BadRow(source, line, "id", f"{record.id!r} repeats the id of {where(first_id[record.id])} "
                                  "on another query-product pair; ids must be unique"))
                continue
            first_id[record.id] = members[0]
        out.append(record)
    if bad:
        raise BadRows(bad)
    if merged and notes is not None:
        notes.append(f"merged {merged + pairs} row(s) of {pairs} repeated query-product pair(s) by {how}: {conflicts} with conflicting labels, {dropped} dropped as ties{example}")
    return out


HTML_FIELDS = ("title", "brand", "category", "description")


def unescape_html(rows: list[tuple[int, Record]], source: Path | str, notes: list[str] | None) -> list[tuple[int, Record]]:
    """Decode HTML entities (`&amp;` -> `&`, `&#39;` -> `'`) in the query and the product's text: scraped
    catalogs keep them, and they would reach the model's prompt and the raters' page as written. How many
    rows changed goes to `notes` (the console and manifest.json)."""
    changed, example = 0, ""
    for _, record in rows:
        before = (record.query, *(getattr(record.product, name) for name in HTML_FIELDS))
        record.query = html.unescape(record.query)
        for name in HTML_FIELDS:
            value = getattr(record.product, name)
            if isinstance(value, str):
                setattr(record.product, name, html.unescape(value))
        after = (record.query, *(getattr(record.product, name) for name in HTML_FIELDS))
        if after != before:
            changed += 1
            if not example:
                old = next(a for a, b in zip(before, after) if a != b)
                entity = re.search(r"&#?\w+;", old)
                example = f" (e.g. {entity.group()!r} -> {html.unescape(entity.group())!r})" if entity else ""
    if changed and notes is not None:
        notes.append(f"{source}: decoded HTML entities in {changed} row(s){example}")
    return rows


def _record(obj: dict, scheme: Scheme, column: dict[str, str]) -> Record:
    """parse_record, with a bad field renamed to the source column it came from."""
    try:
        return parse_record(obj, scheme)
    except RowError as err:
        raise RowError(column.get(err.field, err.field), err.message) from None


# ---------------------------------------------------------------------------- the three sources


def import_home_depot(path: str | Path = HOME_DEPOT, encoding: str = "utf-8",
                      notes: list[str] | None = None) -> list[Record]:
    """Home Depot CSV (id, product_uid, product_title, search_term, relevance) -> three_level records;
    a repeated (search term, product) pair becomes one record with the mean grade (`mean_grade`)."""
    path = input_file(path, "Home Depot CSV")
    scheme = load_scheme("three_level")
    columns = {"query": "search_term", "product.title": "product_title", "id": "id"}

    def build(row: dict[str, str]) -> Record:
        query = _text_cell(row["search_term"], "search_term")
        title = _text_cell(row["product_title"], "product_title")
        raw = _text_cell(row["relevance"], "relevance")
        try:
            grade = float(raw)
        except ValueError:
            raise RowError("relevance", f"must be a number 1..3, got {raw!r}") from None
        if not (math.isfinite(grade) and 1.0 <= grade <= 3.0):
            raise RowError("relevance", f"must be a mean grade in 1..3, got {raw!r}")
        product = {"title": title}
        if row.get("product_uid"):
            product["product_uid"] = _text_cell(row["product_uid"], "product_uid")
        rid = _text_cell(row.get("id"), "id", required=False)
        obj = {"id": f"hd-{rid}" if rid else None, "query": query, "product": product,
               "label": grade_level(grade), "grade": grade}
        return _record(obj, scheme, columns)

    rows = unescape_html(_collect(_csv_rows(path, encoding, ("search_term", "product_title", "relevance")), path, build),
                         path, notes)
    key = lambda r: (normalize_query(r.query), r.product.extra.get("product_uid") or _norm(r.product.title))
    return _number(merge_duplicates(rows, path, key, mean_grade, "the mean of their grades", notes), "hd")


def import_qbqtc(folder: str | Path = QBQTC, notes: list[str] | None = None) -> list[Record]:
    """QBQTC JSON lines ({id, query, title, label 0/1/2}, plain or .gz) -> three_level records (code = label + 1);
    the folder's files are pooled, a repeated query-title pair merged by `majority` (a tie is dropped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such QBQTC directory (expected *.json or *.json.gz files); check the path")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".json", ".json.gz", ".jsonl", ".jsonl.gz")))
    if not files:
        raise UserError(f"{folder}: no *.json or *.json.gz files to import")
    scheme = load_scheme("three_level")
    rows: list[tuple[int, Record]] = []
    sources: dict[int, Path] = {}
    for path in files:
        stem = path.name.split(".")[0]

        def build(row: Any, stem: str = stem) -> Record:
            if not isinstance(row, dict):
                raise RowError("row", f"must be a JSON object, got {type(row).__name__}")
            label = row.get("label")
            if str(label).strip() not in ("0", "1", "2") or isinstance(label, bool):
                raise RowError("label", f"must be 0, 1 or 2, got {label!r}")
            code = int(str(label).strip()) + 1
            rid = row.get("id")
            obj = {"id": None if rid is None else f"qbqtc-{stem}-{rid}", "query": row.get("query"),
                   "product": {"title": row.get("title")}, "label": code, "grade": float(code)}
            return _record(obj, scheme, {"product.title": "title"})

        for pair in _collect(_jsonl_rows(input_file(path, "QBQTC")), path, build):
            sources[len(rows)] = path
            rows.append(pair)
    rows = unescape_html(rows, folder, notes)
    key = lambda r: (normalize_query(r.query), _norm(r.product.title))  # dev and test_public share pairs
    return _number(merge_duplicates(rows, sources, key, majority, "majority label", notes), "qbqtc")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _parquet(path: str | Path, what: str, required: tuple[str, ...]):
    import pandas as pd

    path = input_file(path, what)
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} (the published ESCI schema has {list(required)})")
    return path, frame


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def import_esci(examples: str | Path, products: str | Path, locale: str = "us",
                version: str = "small", notes: list[str] | None = None) -> list[Record]:
    """ESCI examples + products parquet (published schema) -> esci records; `split` kept for the test split."""
    ex_path, ex = _parquet(examples, "ESCI examples", ESCI_EXAMPLES)
    pr_path, pr = _parquet(products, "ESCI products", ESCI_PRODUCTS)
    flag = {"small": "small_version", "large": "large_version"}[version]
    catalog: dict[tuple[str, str], dict] = {}
    for offset, row in enumerate(pr.to_dict(orient="records")):
        catalog.setdefault((str(row["product_id"]), str(row["product_locale"])), row | {"_row": offset + 1})
    scheme = load_scheme("esci")
    bad: list[BadRow] = []
    good: list[tuple[int, Record]] = []
    for offset, row in enumerate(ex.to_dict(orient="records")):
        row = {k: _cell(v) for k, v in row.items()}
        try:
            if (locale != "all" and row["product_locale"] != locale) or not _flag(row[flag], flag):
                continue
            good.append((offset + 1, _esci_record(row, catalog, scheme, pr_path)))
        except RowError as err:
            bad.append(BadRow(err.source if isinstance(err, ProductError) else str(ex_path),
                              err.line if isinstance(err, ProductError) else offset + 1, err.field, err.message))
    if bad:
        raise BadRows(bad)
    if not good:
        raise UserError(f"{ex_path}: no rows with product_locale {locale!r} and {flag} = 1")
    good = unescape_html(good, ex_path, notes)
    key = lambda r: (normalize_query(r.query), r.product.extra["product_id"], r.extra["locale"])
    return merge_duplicates(good, ex_path, key, majority, "majority label", notes)


class ProductError(RowError):
    """A bad field of a row of the products file (named as that file's row, not the example's)."""

    def __init__(self, field_name: str, message: str, source: Path, line: int):
        super().__init__(field_name, message)
        self.source, self.line = str(source), line


def _flag(value: Any, name: str) -> bool:
    """An ESCI 0/1 flag as stored: bool, 0/1, or the text "0"/"1"/"true"/"false" ("0" is false)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("0", "1", "true", "false"):
        return text in ("1", "true")
    raise RowError(name, f"must be 0 or 1, got {value!r}")


def _esci_record(row: dict, catalog: dict, scheme: Scheme, products: Path) -> Record:
    label = row["esci_label"]
    if label not in ESCI_LABELS:
        raise RowError("esci_label", f"must be one of {list(ESCI_LABELS)}, got {label!r}")
    if row["split"] not in ("train", "test"):
        raise RowError("split", f"must be 'train' or 'test', got {row['split']!r}")
    item = catalog.get((str(row["product_id"]), str(row["product_locale"])))
    if item is None:
        raise RowError("product_id", f"{row['product_id']!r} ({row['product_locale']}) is not in {products}")
    item = {k: _cell(v) for k, v in item.items()}
    product: dict[str, Any] = {"title": item["product_title"], "product_id": str(row["product_id"])}
    for source, name in (("product_brand", "brand"), ("product_description", "description")):
        if item[source] and str(item[source]).strip():
            product[name] = str(item[source])[:MAX_TEXT_CHARS]
    if item["product_color"] and str(item["product_color"]).strip():
        product["attributes"] = {"color": str(item["product_color"])}
    if item["product_bullet_point"]:
        product["bullet_points"] = str(item["product_bullet_point"])[:MAX_TEXT_CHARS]
    if row["example_id"] is None or not str(row["example_id"]).strip():
        raise RowError("example_id", "is required (it names the record: esci-<example_id>)")
    obj = {"id": f"esci-{row['example_id']}", "query": row["query"], "product": product,
           "label": ESCI_LABELS[label], "query_id": str(row["query_id"]), "locale": row["product_locale"],
           "esci_split": row["split"]}
    try:
        return _record(obj, scheme, {"product.title": "product_title", "product.brand": "product_brand",
                                     "product.description": "product_description"})
    except RowError as err:  # a bad product field is the products file's row, not this example's
        if err.field.startswith("product_") or err.field.startswith("product."):
            raise ProductError(err.field, f"{err.message} (product {row['product_id']!r})",
                               products, item["_row"]) from None
        raise


def _number(records: list[Record], prefix: str) -> list[Record]:
    """Give rows without an id one from their position (ids name rows in every later message)."""
    for index, record in enumerate(records):
        record.id = record.id or f"{prefix}-row{index + 1}"
    return records


# ---------------------------------------------------------------------------- splits and writing


def split(records: list[Record], seed: int = 0, validation: float = 0.1, test: float = 0.1) -> dict[str, list[Record]]:
    """Query-disjoint train / validation / test, deterministic under `seed`.

    Records with `esci_split` keep ESCI's published test split; validation is then carved from its train."""
    check_shares(validation, test)
    if all("esci_split" in r.extra for r in records):
        published = [r for r in records if r.extra["esci_split"] == "test"]
        held = {normalize_query(r.query) for r in published}
        rest = [r for r in records if r.extra["esci_split"] == "train" and normalize_query(r.query) not in held]
        parts = split_by_query(rest, {"train": 1.0 - validation, "validation": validation}, seed)
        return {"train": parts["train"], "validation": parts["validation"], "test": published}
    return split_by_query(records, {"train": 1.0 - validation - test, "validation": validation, "test": test}, seed)


def check_shares(validation: float, test: float) -> None:
    for name, share in (("--validation", validation), ("--test", test)):
        if not 0.0 <= share < 1.0:  # NaN fails this too
            raise UserError(f"{name} {share}: must be a share in [0, 1)")
    if validation + test >= 1.0:
        raise UserError(f"--validation {validation} + --test {test}: leave some share for train")


def check_out(out: str | Path, inputs: dict[str, str | Path | None], force: bool,
              shares: tuple[float, float] = (0.1, 0.1)) -> None:
    """Before any work: the split shares are shares, OUT may be filled (empty, or --force), none of its
    files is an input."""
    check_shares(*shares)
    empty_dir(out, "data", force)
    distinct({f"--out {name}.jsonl": Path(out) / f"{name}.jsonl" for name in SPLITS}, inputs)


def write_splits(splits: dict[str, list[Record]], out: str | Path, manifest: dict) -> dict[str, dict]:
    """OUT/<split>.jsonl (atomically each) and OUT/manifest.json: sizes, labels, source, seed."""
    out = Path(out)
    sizes = {}
    for name in SPLITS:
        records = splits[name]
        write_jsonl(records, out / f"{name}.jsonl")
        sizes[name] = {"rows": len(records), "queries": len({normalize_query(r.query) for r in records}),
                       "labels": dict(sorted(Counter(r.label for r in records).items()))}
    atomic_write(out / "manifest.json", json.dumps(manifest | {"splits": sizes}, indent=2, ensure_ascii=False) + "\n")
    return sizes


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_import(out: str | Path, force: bool, inputs: dict[str, str], load, shares: tuple[int, float, float],
               manifest: dict, warn=lambda note: None) -> dict[str, dict]:
    """An import or split end to end (`agrl data import ...`, `agrl data split`): check OUT against the
    inputs, read the source (`load(notes)`), split by query, write the splits and manifest.json (the
    seed, shares, input digests and what was merged). Each merge note goes to `warn` before anything
    is written; returns each split's size (write_splits)."""
    seed, validation, test = shares
    check_out(out, inputs, force, (validation, test))
    notes: list[str] = []
    splits = split(load(notes), *shares)
    for note in notes:
        warn(note)
    digests = {f"sha256 {name}": sha256(path) for name, path in inputs.items() if Path(path).is_file()}
    manifest = manifest | {"seed": seed, "validation": validation, "test": test, "merged": notes} | digests
    return write_splits(splits, out, manifest)


def split_source(file: str, scheme: str | None):
    """`agrl data split`'s FILE checked (readable, not empty) and its scheme (data.resolve_scheme): the
    scheme's name and the loader run_import calls."""
    check_source(file, probe=True)
    check_not_empty(file)
    name = resolve_scheme(file, scheme)
    return name, lambda notes: load_records(file, load_scheme(name))
