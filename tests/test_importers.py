"""Importers (`agrl data import home-depot|qbqtc|esci`) on small files written here, never ../shared/data.

Planted bad rows are named FILE:LINE: field; encodings (Latin-1, gzip, Chinese text) survive or are
named; the ESCI parquet schema joins; splits are query-disjoint and the same under a seed.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_importers.py
"""

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agrl.cli import app
from agrl.data.records import load_records, normalize_query
from agrl.data.importers import grade_level, import_home_depot, split
from agrl.data.schemes import load_scheme

HEADER = "id,product_uid,product_title,search_term,relevance\n"
ROWS = [
    ("2", "100001", "Simpson Strong-Tie 12-Gauge Angle", "angle bracket", "3.0"),
    ("3", "100001", "Simpson Strong-Tie 12-Gauge Angle", "l bracket", "2.5"),
    ("9", "100002", "BEHR Premium Textured DeckOver 1-gal. #SC-141 Tugboat Wood and Concrete Coating", "deck over", "3"),
    ("16", "100005", "Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)",
     "rain shower head", "2.33"),
    ("17", "100005", "Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not Included)",
     "shower only faucet", "2.67"),
    ("18", "100006", "Whirlpool 1.9 cu. ft. Over the Range Microwave in Bisque", "microwave over stove", "1.67"),
]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_csv(path, rows=ROWS, header=HEADER, encoding="utf-8"):
    text = header + "".join(",".join(f'"{c}"' if "," in c else c for c in row) + "\n" for row in rows)
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def run(*argv):
    result = CliRunner().invoke(app, list(argv))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("grade, level", [(3.0, 3), (2.67, 3), (2.666667, 3), (2.5, 2), (2.33, 2), (2.0, 2),
                                          (1.67, 1), (1.0, 1)])
def test_grade_levels(grade, level):
    assert grade_level(grade) == level


def test_home_depot_import_writes_query_disjoint_splits(tmp_path):
    src = write_csv(tmp_path / "hd.csv.gz")
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "o"),
                         "--validation", "0.25", "--test", "0.25")
    assert code == 0, err
    assert "train:" in err and "rows" in err  # sizes printed
    splits = {n: load_records(tmp_path / "o" / f"{n}.jsonl", load_scheme("three_level"))
              for n in ("train", "validation", "test")}
    assert sum(map(len, splits.values())) == len(ROWS)
    owners = {}
    for name, records in splits.items():
        for record in records:
            assert owners.setdefault(normalize_query(record.query), name) == name
    every = {r.id: r for rs in splits.values() for r in rs}
    assert every["hd-3"].label == 2 and every["hd-3"].extra["grade"] == 2.5
    assert every["hd-17"].label == 3 and every["hd-18"].label == 1
    assert every["hd-16"].product.extra["product_uid"] == "100005"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["scheme"] == "three_level" and manifest["splits"]["train"]["rows"] == len(splits["train"])


def test_split_is_deterministic_under_seed(tmp_path):
    rows = [(str(i), str(i), f"Brand Thing {i}", f"query {i % 40}", "2.33") for i in range(200)]
    records = import_home_depot(write_csv(tmp_path / "hd.csv", rows))
    ids = lambda s: {k: [r.id for r in v] for k, v in s.items()}
    assert ids(split(records, seed=3)) == ids(split(records, seed=3))
    assert ids(split(records, seed=3)) != ids(split(records, seed=4))


@pytest.mark.parametrize(
    "rows, header, expected",
    [
        ([("2", "1", "Angle", "angle", "4.5")], HEADER, ":2: relevance: must be a mean grade in 1..3"),
        ([("2", "1", "Angle", "angle", "3"), ("3", "1", "Angle", "bracket", "high")], HEADER,
         ":3: relevance: must be a number"),
        ([("2", "1", "Angle", "", "3")], HEADER, ":2: search_term: is empty"),
        ([("2", "1", "", "angle", "3")], HEADER, ":2: product_title: is empty"),
        ([("2", "1", "Angle", "angle", "nan")], HEADER, ":2: relevance: must be a mean grade"),
        ([("2", "1", "Angle", "angle", "3")], "id,product_uid,title,search_term,relevance\n",
         ":1: header: missing column(s) ['product_title']"),
        ([("2", "1", "Angle", "angle")], HEADER, ":2: row: 4 cells, the header has 5"),
        ([], "", "empty CSV file"),
        ([], HEADER, "no rows to import"),
    ],
)
def test_home_depot_bad_rows_are_one_line_naming_file_line_field(tmp_path, rows, header, expected):
    src = write_csv(tmp_path / "hd.csv", rows, header)
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "o"))
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o").exists()  # nothing written


def test_home_depot_encodings(tmp_path):
    rows = [("2", "1", "Café Curtain Rod in Crème", "café curtain", "3")]
    latin = write_csv(tmp_path / "latin.csv", rows, encoding="latin-1")
    code, _, err = run("data", "import", "home-depot", "--input", str(latin), "--out", str(tmp_path / "o"))
    assert code == 2 and "latin.csv:2: search_term: not UTF-8 text (byte 0xe9" in err and "--encoding" in err
    code, _, err = run("data", "import", "home-depot", "--input", str(latin), "--out", str(tmp_path / "o"),
                       "--encoding", "latin-1")
    assert code == 0, err
    (record,) = read_jsonl(tmp_path / "o" / "train.jsonl") or read_jsonl(tmp_path / "o" / "test.jsonl") or \
        read_jsonl(tmp_path / "o" / "validation.jsonl")
    assert record["product"]["title"] == "Café Curtain Rod in Crème"
    broken = tmp_path / "broken.csv.gz"
    whole = gzip.compress((HEADER + "2,1,Angle,angle,3\n" * 5000).encode())
    broken.write_bytes(whole[: len(whole) // 2])  # cut short, as by a failed download
    code, _, err = run("data", "import", "home-depot", "--input", str(broken), "--out", str(tmp_path / "o2"))
    assert code == 2 and "not a readable gzip file" in err
    code, _, err = run("data", "import", "home-depot", "--input", str(latin), "--out", str(tmp_path / "o3"),
                       "--encoding", "klingon")
    assert code == 2 and "unknown text encoding" in err


def test_import_refuses_non_empty_out_and_output_equal_to_input(tmp_path):
    src = write_csv(tmp_path / "hd.csv")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "full"))
    assert code == 2 and "not empty; pass --force" in err
    clash = write_csv(tmp_path / "test.jsonl")
    code, _, err = run("data", "import", "home-depot", "--input", str(clash), "--out", str(tmp_path), "--force")
    assert code == 2 and "is also --input" in err and clash.read_bytes().startswith(b"id,")
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "o"),
                       "--validation", "0.6", "--test", "0.5")
    assert code == 2 and "leave some share for train" in err


def test_qbqtc_chinese_text_survives(tmp_path):
    folder = tmp_path / "qbqtc"
    folder.mkdir()
    rows = [{"id": i, "query": f"小孩咳嗽{i % 5}", "title": f"小孩感冒过后久咳嗽该吃什么药 {i}", "label": str(i % 3)}
            for i in range(30)]
    (folder / "dev.json.gz").write_bytes(gzip.compress("".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()))
    (folder / "test_public.json").write_text(json.dumps(rows[0], ensure_ascii=False) + "\n", encoding="utf-8")
    code, _, err = run("data", "import", "qbqtc", "--input", str(folder), "--out", str(tmp_path / "o"))
    assert code == 0, err
    records = [r for n in ("train", "validation", "test") for r in read_jsonl(tmp_path / "o" / f"{n}.jsonl")]
    assert len(records) == 30  # the pair repeated in test_public is kept once
    by_id = {r["id"]: r for r in records}
    assert by_id["qbqtc-dev-4"]["query"] == "小孩咳嗽4" and by_id["qbqtc-dev-4"]["label"] == 2
    assert "小孩" in (tmp_path / "o" / "train.jsonl").read_text(encoding="utf-8")  # not \\u escapes
    (folder / "test_public.json").write_text('{"id": 1, "query": "q", "title": "t", "label": "3"}\n{"id": 2\n')
    code, _, err = run("data", "import", "qbqtc", "--input", str(folder), "--out", str(tmp_path / "o2"))
    assert code == 2 and "test_public.json:1: label: must be 0, 1 or 2" in err and "1 more bad row" in err


def esci_files(tmp_path, **change):
    examples = pd.DataFrame({
        "example_id": [1, 2, 3, 4, 5, 6], "query": ["usb c cable", "usb c cable", "usb c cable", "red mug",
                                                     "red mug", "tent"],
        "query_id": [10, 10, 10, 11, 11, 12], "product_id": ["B1", "B2", "B3", "B4", "B1", "B9"],
        "product_locale": ["us", "us", "us", "us", "us", "es"], "esci_label": ["E", "S", "C", "I", "I", "E"],
        "small_version": [1, 1, 1, 1, 0, 1], "large_version": [1, 1, 1, 1, 1, 1],
        "split": ["train", "train", "train", "test", "test", "train"],
    } | change)
    products = pd.DataFrame({
        "product_id": ["B1", "B2", "B3", "B4", "B9"],
        "product_title": ["Anker USB C Cable 6ft", "USB C to A Cable", "USB Wall Charger", "Blue Mug", "Tienda"],
        "product_description": [None, "<p>fast</p>", None, "a mug", None],
        "product_bullet_point": ["braided\nfast", None, None, None, None],
        "product_brand": ["Anker", None, "Generic", "Mugs Co", None],
        "product_color": ["black", None, None, "blue", None],
        "product_locale": ["us", "us", "us", "us", "es"],
    })
    examples.to_parquet(tmp_path / "examples.parquet")
    products.to_parquet(tmp_path / "products.parquet")
    return ["--examples", str(tmp_path / "examples.parquet"), "--products", str(tmp_path / "products.parquet")]


def test_esci_published_schema(tmp_path):
    code, _, err = run("data", "import", "esci", *esci_files(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 0, err
    test = load_records(tmp_path / "o" / "test.jsonl", load_scheme("esci"))
    train = [r for n in ("train", "validation") for r in load_records(tmp_path / "o" / f"{n}.jsonl",
                                                                       load_scheme("esci"))]
    assert [r.id for r in test] == ["esci-4"]  # the published test split; small_version 0 and locale es dropped
    assert sorted(r.label for r in train) == [2, 3, 4]
    anker = next(r for r in train if r.id == "esci-1")
    assert anker.product.brand == "Anker" and anker.product.attributes == {"color": "black"}
    assert anker.product.extra["bullet_points"] == "braided\nfast" and anker.extra["query_id"] == "10"
    code, _, err = run("data", "import", "esci", *esci_files(tmp_path), "--out", str(tmp_path / "all"),
                       "--locale", "all", "--version", "large")
    assert code == 0, err
    every = [r for n in ("train", "validation", "test") for r in read_jsonl(tmp_path / "all" / f"{n}.jsonl")]
    assert len(every) == 6  # every locale, the large set


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"esci_label": ["E", "X", "C", "I", "I", "E"]}, "examples.parquet:2: esci_label: must be one of"),
        ({"product_id": ["B1", "B2", "B7", "B4", "B1", "B9"]}, "examples.parquet:3: product_id: 'B7' (us) is not in"),
        ({"query": ["usb c cable", None, "usb c cable", "red mug", "red mug", "tent"]}, "examples.parquet:2: query: is required"),
    ],
)
def test_esci_bad_rows(tmp_path, change, expected):
    code, _, err = run("data", "import", "esci", *esci_files(tmp_path, **change), "--out", str(tmp_path / "o"))
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_esci_missing_column_and_corrupt_file(tmp_path):
    argv = esci_files(tmp_path)
    pd.DataFrame({"example_id": [1]}).to_parquet(tmp_path / "examples.parquet")
    code, _, err = run("data", "import", "esci", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and "examples.parquet: missing column(s)" in err
    (tmp_path / "examples.parquet").write_bytes(b"PAR1 not really")
    code, _, err = run("data", "import", "esci", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and "not a readable Parquet file" in err


def test_malformed_csv_quote_is_named(tmp_path):
    src = tmp_path / "hd.csv"
    src.write_text(HEADER + '2,1,"Angle,angle,3\n', encoding="utf-8")  # an opening quote never closed
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "o"))
    assert code == 2 and "hd.csv:2:" in err, err


def test_html_entities_are_decoded_and_counted(tmp_path):
    """Scraped titles keep `&amp;`; it would reach the prompt and the raters' page as written."""
    rows = [*ROWS[:2], ("30", "100010", "Ryobi Drill &amp; Driver Kit", "drill &amp; driver", "3"),
            ("31", "100011", "Bemis Seat &#39;Whisper Close&#39;", "toilet seat", "2.33")]
    src = write_csv(tmp_path / "hd.csv", rows)
    code, _, err = run("data", "import", "home-depot", "--input", str(src), "--out", str(tmp_path / "o"),
                       "--validation", "0", "--test", "0")
    assert code == 0, err
    records = {r["id"]: r for r in read_jsonl(tmp_path / "o" / "train.jsonl")}
    assert records["hd-30"]["product"]["title"] == "Ryobi Drill & Driver Kit"
    assert records["hd-30"]["query"] == "drill & driver"
    assert records["hd-31"]["product"]["title"] == "Bemis Seat 'Whisper Close'"
    assert f"{src}: decoded HTML entities in 2 row(s) (e.g. '&amp;' -> '&')" in err
    merged = json.loads((tmp_path / "o" / "manifest.json").read_text())["merged"]
    assert any("decoded HTML entities in 2 row(s)" in note for note in merged)


def test_run_import_is_the_library_s_and_reports_merges_before_writing(tmp_path):
    """importers.run_import (what `agrl data split` and the importers run): splits written with the
    manifest (seed, shares, input digest), the sizes returned, merge notes handed to `warn`."""
    import json

    from agrl.data import importers
    from agrl.data.records import Product, Record

    source = tmp_path / "in.jsonl"
    source.write_text("{}\n")
    records = [Record(query=f"q{i}", product=Product(title=f"t{i}"), label=i % 3, id=str(i)) for i in range(30)]
    warned = []

    def load(notes):
        notes.append("merged 0 repeated pairs")
        return records

    sizes = importers.run_import(str(tmp_path / "out"), False, {"FILE": str(source)}, load, (0, 0.2, 0.2),
                                 {"source": "split"}, warn=warned.append)
    assert warned == ["merged 0 repeated pairs"]
    assert sum(size["rows"] for size in sizes.values()) == 30
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["merged"] == warned and manifest["seed"] == 0 and manifest["sha256 FILE"] == importers.sha256(source)
