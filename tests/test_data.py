"""Records and their hygiene: validation of bad rows, loaders agree across formats, splits, balance, schemes.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_data.py
"""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from agrl.core import synth
from agrl.cli import app
from agrl.data.records import (
    Product,
    Record,
    balance,
    load_records,
    normalize_query,
    split_by_query,
    write_jsonl,
)
from agrl.data.schemes import load_scheme

GOOD = {"id": "g", "query": "red dress", "product": {"title": "Zara Midi Dress", "brand": "Zara"}, "label": 4}


def _row(**changes):
    row = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        target = row
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(row)


# (line text, the field the report must name) - line numbers follow from the order.
PLANTED = [
    (json.dumps(GOOD), None),  # a good row is not reported
    ('{"query": "red dress", "product": {', "json"),  # bad JSON
    (_row(query=...), "query"),  # missing query
    (_row(product__title=...), "product.title"),  # missing title
    (_row(label=7), "label"),  # a label not in the scheme
    (_row(label="Superb"), "label"),  # a level name not in the scheme
    (_row(steps={"brand": "maybe"}), "steps.brand"),  # an unknown step verdict
    (_row(steps={"colour": "match"}), "steps.colour"),  # an unknown step
    (_row(product__price="cheap"), "product.price"),  # wrong type
    (_row(product__attributes=["red"]), "product.attributes"),  # wrong type
    (_row(query=42), "query"),  # wrong type
    (_row(query="   "), "query"),  # empty string
    (_row(product__title=""), "product.title"),  # empty string
    (_row(query="x" * 600), "query"),  # over-long text
    (_row(product__description="y" * 9000), "product.description"),  # over-long text
    (_row(product="a dress"), "product"),  # product not an object
    ("[1, 2]", "row"),  # not an object at all
]


def test_validate_names_each_planted_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(line for line, _ in PLANTED) + "\n")
    result = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    reported = [line for line in result.output.splitlines() if re.match(rf"{re.escape(str(path))}:\d+: ", line)]
    expected = [f"{path}:{n}: {name}:" for n, (_, name) in enumerate(PLANTED, start=1) if name]
    assert len(reported) == len(expected)
    for prefix in expected:
        assert any(line.startswith(prefix) for line in reported), prefix


def test_validate_passes_good_file(tmp_path):
    path = tmp_path / "good.jsonl"
    write_jsonl(synth.generate(seed=0, sizes=synth.SIZES["small"])["eval_wild"], path)
    assert CliRunner().invoke(app, ["data", "validate", str(path)]).exit_code == 0


def test_skip_reports_each_bad_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(line for line, _ in PLANTED) + "\n")
    messages = []
    records = load_records(path, on_bad_row="skip", report=messages.append)
    assert len(records) == 1
    bad = sum(1 for _, name in PLANTED if name)
    assert f"skipped {bad} bad row(s)" in messages[0]
    assert len(messages) == 1 + bad  # a summary, then every skipped row by FILE:LINE: field
    with pytest.raises(ValueError, match="bad row"):
        load_records(path)  # the default refuses


# ---------------------------------------------------------------------------- loaders agree


def _flat(record: Record) -> dict:
    p = record.product
    return {"id": record.id, "query": record.query, "title": p.title, "category": p.category, "brand": p.brand,
            "price": p.price, "attributes": json.dumps(p.attributes), "label": record.label,
            "steps": json.dumps(record.steps), "family": record.family}


@pytest.fixture(scope="module")
def sample():
    return synth.generate(seed=3, sizes=synth.SIZES["small"])["eval_wild"][:60]


def test_loaders_agree_across_formats(tmp_path, sample):
    jsonl = tmp_path / "r.jsonl"
    write_jsonl(sample, jsonl)
    frame = pd.DataFrame([_flat(r) for r in sample])
    frame.to_csv(tmp_path / "r.csv", index=False)
    frame.to_parquet(tmp_path / "r.parquet")
    import datasets

    datasets.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "hf"))
    want = [r.to_dict() for r in load_records(jsonl)]
    assert want == [r.to_dict() for r in sample]  # JSONL round trip is exact
    for source in (tmp_path / "r.csv", tmp_path / "r.parquet", f"hf:{tmp_path / 'hf'}"):
        got = [r.to_dict() for r in load_records(source)]
        assert got == want, source


def test_flat_attribute_columns_load(tmp_path):
    # attribute.<name> columns are the flat way to give attributes
    path = tmp_path / "a.csv"
    pd.DataFrame([{"query": "red dress", "title": "Zara Dress", "attribute.color": "red", "label": "Excellent"}]).to_csv(
        path, index=False)
    (record,) = load_records(path)
    assert record.product.attributes == {"color": "red"} and record.label == 4


# ---------------------------------------------------------------------------- hygiene


def _rec(query, title="t", label=4):
    return Record(query=query, product=Product(title=title), label=label)


def test_split_by_query_never_shares_a_query():
    records = [_rec(f"Query {i % 37}", f"t{i}") for i in range(500)] + [_rec("query 3 ", "x")]  # case/space variants
    parts = split_by_query(records, {"a": 0.6, "b": 0.2, "c": 0.2}, seed=1)
    seen = {}
    for name, part in parts.items():
        for record in part:
            assert seen.setdefault(normalize_query(record.query), name) == name
    assert sum(len(p) for p in parts.values()) == len(records)
    assert split_by_query(records, {"a": 0.6, "b": 0.4}, seed=1) == split_by_query(records, {"a": 0.6, "b": 0.4}, seed=1)


def test_balance_equalises_classes():
    records = [_rec(f"q{i}", label=1 + i % 4) for i in range(100)] + [_rec(f"x{i}", label=4) for i in range(50)]
    balanced = balance(records, seed=0)
    counts = {label: sum(r.label == label for r in balanced) for label in (1, 2, 3, 4)}
    assert set(counts.values()) == {25}
    assert len({r.label for r in balance(records, per_class=10)}) == 4 and len(balance(records, per_class=10)) == 40


# ---------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    "name, codes, good",
    [("default", (4, 3, 2, 1), {4, 3}), ("esci", (4, 3, 2, 1), {4, 3}), ("three_level", (3, 2, 1), {3, 2})],
)
def test_builtin_schemes_load(name, codes, good):
    scheme = load_scheme(name)
    assert scheme.codes == codes and scheme.good == good


def test_user_scheme_loads(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_text(
        "name: binary\nlevels:\n  - {code: 1, name: relevant}\n  - {code: 0, name: irrelevant}\n"
        "good: [1]\noutcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"
    )
    scheme = load_scheme(str(path))
    assert scheme.code("relevant") == 1 and scheme.code("0") == 0


@pytest.mark.parametrize(
    "body, message",
    [
        ("name: x\ngood: [1]\noutcomes: {}\n", "missing key"),  # no levels at all
        (("name: x\nlevels: [{code: 1, name: a}, {code: 1, name: b}]\ngood: [1]\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 1, off_category: 1}\n"), "distinct codes"),  # two levels, one code
        (("name: x\nlevels: [{code: 1, name: a}, {code: 0, name: b}]\ngood: [5]\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"), "are not levels"),  # good 5 is no level
        (("name: x\nlevels: [{code: 1, name: a}, {code: 0, name: b}]\ngood: [1]\n"
          "outcomes: {all_match: 1}\n"), "outcomes: must map"),  # the table's outcomes need every level mapped
        (("name: x\nlevels: [{code: 12, name: a}, {code: 0, name: b}]\ngood: [12]\n"
          "outcomes: {all_match: 12, uncertain: 12, violation: 0, off_category: 0}\n"), "integer 0-9"),  # labels are one token
        (("name: x\nlevels: [{code: 1, name: a}, {code: 0, name: A}]\ngood: [1]\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"), "names must be distinct"),
        (("name: x\nlevels: [{code: 1.5, name: a}, {code: 0, name: b}]\ngood: [1]\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"), "integer 0-9"),  # int(1.5) was 1
        (("name: x\nlevels: [{code: 1, name: a}, {code: 0, name: b}]\ngood: []\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"), "at least one level"),
        (("name: x\nlevels: [{code: 1, name: a}, {code: 0, name: b}]\ngood: [1, 0]\n"
          "outcomes: {all_match: 1, uncertain: 1, violation: 0, off_category: 0}\n"), "every level is good"),
        ("name: x\nlevels: [{code: 1, name: a}\n", "malformed YAML"),  # an unclosed flow list
    ],
)
def test_bad_schemes_error_clearly(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        load_scheme(str(path))


def test_unknown_scheme_name():
    with pytest.raises(ValueError, match="unknown label scheme"):
        load_scheme("nope")


# ---------------------------------------------------------------------------- gzip, foreign formats, split


def test_validate_reads_gzipped_csv_and_jsonl_as_the_importers_do(tmp_path):
    import gzip

    rows = [{"id": f"r{i}", "query": "red mug", "title": f"Red mug {i}", "label": 1 + i % 4} for i in range(6)]
    csv_gz = tmp_path / "pairs.csv.gz"
    csv_gz.write_bytes(gzip.compress(pd.DataFrame(rows).to_csv(index=False).encode()))
    jsonl_gz = tmp_path / "pairs.jsonl.gz"
    nested = [{k: v for k, v in r.items() if k != "title"} | {"product": {"title": r["title"]}} for r in rows]
    jsonl_gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in nested).encode()))
    for path in (csv_gz, jsonl_gz):
        result = CliRunner().invoke(app, ["data", "validate", str(path)])
        assert result.exit_code == 0, result.output
        assert f"{path}: 6 good row(s), 0 bad row(s)" in " ".join(result.output.split())  # rich wraps long paths
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(jsonl_gz.read_bytes()[:40])
    result = CliRunner().invoke(app, ["data", "validate", str(cut)])
    assert result.exit_code == 2 and "not a readable gzip file" in result.stderr


@pytest.mark.parametrize("name", ["train.csv", "train.csv.gz", "train.jsonl"])
def test_validate_names_the_importer_of_a_raw_kaggle_home_depot_file_in_one_line(tmp_path, name):
    import gzip

    rows = [{"id": i, "product_uid": 100 + i, "product_title": f"Drill {i}", "search_term": "drill",
             "relevance": 2.33} for i in range(30)]
    path = tmp_path / name
    text = pd.DataFrame(rows).to_csv(index=False) if ".csv" in name else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    result = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        (f"error: {path}: columns product_title, relevance, search_term are the Kaggle Home Depot format, not agrl "
        f"records (query, title, label); import it: agrl data import home-depot --input {path} --out DIR")]


def test_a_table_without_query_or_title_is_one_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("q,name,label\nred,mug,4\nblue,cup,2\n")
    result = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "x.csv:1: header: no 'query' column (found ['q', 'name', 'label'])" in result.stderr


def test_data_split_is_query_disjoint_and_seeded_for_any_format(tmp_path):
    from agrl.data.records import grade_of

    rows = [{"query": f"query {i // 3}", "title": f"item {i}", "label": 1 + i % 4, "grade": 1 + (i % 3)}
            for i in range(90)]
    source = tmp_path / "mine.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    result = CliRunner().invoke(app, ["data", "split", str(source), "--test", "0.3", "--validation", "0.1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "mine_split"
    parts = {name: load_records(out / f"{name}.jsonl") for name in ("train", "validation", "test")}
    queries = {name: {r.query for r in records} for name, records in parts.items()}
    assert sum(map(len, parts.values())) == 90 and len(set.union(*queries.values())) == 30
    assert not (queries["train"] & queries["test"] or queries["train"] & queries["validation"]
                or queries["validation"] & queries["test"])
    assert (len(queries["test"]), len(queries["validation"])) == (9, 3)
    assert grade_of(parts["test"][0]) in (1.0, 2.0, 3.0)  # extra fields (the grade) survive
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["scheme"] == "default" and manifest["test"] == 0.3 and manifest["splits"]["test"]["rows"] == 27
    again = CliRunner().invoke(app, ["data", "split", str(source), "--test", "0.3", "--validation", "0.1",
                                     "--out", str(tmp_path / "again")])
    assert again.exit_code == 0 and (tmp_path / "again" / "test.jsonl").read_text() == (out / "test.jsonl").read_text()
    refused = CliRunner().invoke(app, ["data", "split", str(source), "--test", "0.7", "--validation", "0.3",
                                       "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "leave some share for train" in refused.stderr
