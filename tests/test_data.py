"""Records and their hygiene: validation of bad rows, loaders agree across formats, splits, balance, schemes.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_data.py
"""

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from agrl import synth
from agrl.cli import app
from agrl.data import (
    Product,
    Record,
    balance,
    load_records,
    normalize_query,
    split_by_query,
    write_jsonl,
)
from agrl.schemes import load_scheme

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
