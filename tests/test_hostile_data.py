"""Hostile input, second pass (issue 20): wrong answers with exit 0, files nobody else can read, tracebacks.

The table has the house rule for a user's mistake: exit 2, one line `error: ...` naming the file, line,
field or option, no traceback, every input and earlier output byte for byte as it was. The tests below
it check what used to be silently wrong: labels read under another scheme, a resumed output mixing two
models, repeated rows written as two records with one id, string flags, file modes under a umask.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_hostile_data.py
"""

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mistakes import mistake_failures
from typer.testing import CliRunner

from agrl.cli import app
from agrl.errors import UserError
from agrl.files import atomic_write

HD_HEADER = "id,product_uid,product_title,search_term,relevance\n"
HD_ROWS = "".join(f"{i},{100 + i},{title},{query},{grade}\n" for i, (title, query, grade) in enumerate([
    ("Simpson Strong-Tie 12-Gauge Angle", "angle bracket", "3"), ("BEHR DeckOver 1-gal. Tugboat", "deck over", "3"),
    ("Delta Vero Shower Trim Kit in Chrome", "rain shower head", "2.33"),
    ("Whirlpool Over the Range Microwave", "microwave over stove", "1.67"),
    ("Husky 52 in. Tool Chest", "tool chest", "2.67"), ("Ryobi 18V Drill", "cordless drill", "2"),
    ("Glacier Bay Toilet", "toilet", "1"), ("Hampton Bay Ceiling Fan", "ceiling fan", "2.5"),
], start=1))
GOOD = [{"id": "a", "query": "red nike running shoes", "label": 4,
         "product": {"title": "Nike Pegasus running shoes, red", "brand": "nike"}},
        {"id": "b", "query": "adidas running shoes", "label": 2, "product": {"title": "Nike Pegasus running shoes"}}]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def run(*argv):
    result = CliRunner().invoke(app, [str(a) for a in argv])
    return result.exit_code, result.stdout, result.stderr


def _write_gguf(path: Path, cut: bool = False) -> None:
    """A GGUF file with one tensor and no tokenizer (`cut`: its second half missing)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if cut:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("hostile2")
    (root / "hd.csv").write_text(HD_HEADER + HD_ROWS)
    code, _, err = run("data", "import", "home-depot", "--input", root / "hd.csv", "--out", root / "hd",
                       "--validation", "0.25", "--test", "0.25")
    assert code == 0, err
    files = {
        "good.jsonl": _jsonl(GOOD),
        "empty.jsonl": "",
        "unlabelled.jsonl": _jsonl([{k: v for k, v in r.items() if k != "label"} for r in GOOD]),
        "header_only.csv": "query,title\n",
        "title_twice.csv": "query,title,label,title\nsocks,wool socks,4,cotton socks\n",
        "hd_twice.csv": "id,product_uid,product_title,search_term,relevance,relevance\n1,1,Angle,angle,3,1\n",
        "hd_ids.csv": HD_HEADER + "1,1,Angle bracket,angle,3\n1,2,Deck coat,deck,1\n",
        "not.gguf": "this is not a GGUF file",
        "empty.gguf": "",
        "long.jsonl": _jsonl([{"id": "long", "query": "red shoes", "label": 4,
                               "product": {"title": "Nike shoe", "description": "long words here " * 500}}]),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "hd_utf8.csv").write_text(HD_HEADER + HD_ROWS + "9,109,Café Crème Paint,paint,3\n", encoding="utf-8")
    (root / "gzipped.jsonl").write_bytes(gzip.compress(_jsonl(GOOD).encode()))
    (root / "hd_utf16.csv").write_bytes((HD_HEADER + HD_ROWS).encode("utf-16"))
    (root / "hd_gzip_named.csv.gz").write_bytes((HD_HEADER + HD_ROWS).encode())  # plain text named .gz
    (root / "corpus_latin1.txt").write_bytes("café crème\nsocks\n".encode("latin-1"))
    qbqtc = root / "qbqtc_latin1"
    qbqtc.mkdir()
    (qbqtc / "dev.json").write_bytes('{"id": 1, "query": "café", "title": "t", "label": 1}\n'.encode("latin-1"))
    _write_gguf(root / "no_tokenizer.gguf")
    _write_gguf(root / "truncated.gguf", cut=True)
    os.mkfifo(root / "fifo.jsonl")
    # A model trained with the default scheme, and adapter folders that are damaged.
    shutil.copytree(tiny_model_dir, root / "model")
    (root / "model" / "config.yaml").write_text("scheme: default\nmethod: sft\n")
    for name in ("adapter_badjson", "adapter_cut", "adapter_noweights"):
        (root / name).mkdir()
        (root / name / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": str(tiny_model_dir), "peft_type": "LORA", "r": 2}))
    (root / "adapter_badjson" / "adapter_config.json").write_text("{bad")
    (root / "adapter_badjson" / "adapter_model.safetensors").write_bytes(b"x" * 64)
    (root / "adapter_cut" / "adapter_model.safetensors").write_bytes(
        (Path(tiny_model_dir) / "model.safetensors").read_bytes()[:100])
    # A run whose eval JSON is not what `agrl eval` writes, and one whose metrics are text.
    for name, body in {"run_list": "[1, 2]", "run_metrics_text": '{"metrics": {"accuracy": "high"}, "n": 2}'}.items():
        (root / name / "eval").mkdir(parents=True)
        (root / name / "eval" / "test.json").write_text(body)
    (root / "empty_run").mkdir()
    (root / "train_hd.yaml").write_text(json.dumps({  # JSON is YAML; a `scheme:` the data's manifest contradicts
        "method": "sft", "model": str(root / "model"), "train_file": str(root / "hd" / "train.jsonl"),
        "output_dir": str(root / "run_hd"), "max_steps": 1, "report_to": "none", "scheme": "default"}))
    (root / "preds.jsonl").write_text('{"id": "x", "label": 1}\n')
    (root / "scored.jsonl").write_text('{"id": "a", "label": 4, "score": 3.1}\n')  # no record of its maker
    return root


def cases(ws: Path) -> list[tuple[str, list, str]]:
    w = lambda name: ws / name
    split = w("hd/test.jsonl")
    return [
        # -- labels of one scheme are never read as another's
        ("agreement-other-scheme", ["data", "agreement", split, "--scheme", "default"],
         "hd/test.jsonl is labelled in scheme 'three_level' (" ),
        ("validate-other-scheme", ["data", "validate", split, "--scheme", "esci"], "--scheme esci"),
        ("fit-other-scheme", ["baseline", "fit", "--kind", "tfidf", "--train", w("hd/train.jsonl"), "--out",
                              w("b.joblib"), "--scheme", "default"], "manifest.json says so"),
        ("score-model-of-other-scheme", ["score", "--model", w("model"), "--input", split, "--output", w("s.jsonl")],
         "was trained with scheme 'default'"),
        ("eval-model-of-other-scheme", ["eval", "--model", w("model"), "--data", split, "--out", w("e.json")],
         "was trained with scheme 'default'"),
        ("train-other-scheme", ["train", w("train_hd.yaml")],
         f"scheme default: {w('hd') / 'train.jsonl'} is labelled in scheme 'three_level'"),
        # -- a resumable output records its maker
        ("score-output-of-unknown-maker", ["score", "--model", w("model"), "--input", w("good.jsonl"), "--output",
                                           w("scored.jsonl")], "no scored.jsonl.meta.json"),
        # -- nothing replaced without --force
        ("predict-over-predictions", ["baseline", "predict", "--model", w("b.joblib"), "--input", w("good.jsonl"),
                                      "--output", w("preds.jsonl")], "--output"),
        # -- importers: a column twice, ids twice, encodings and compression the name does not say
        ("import-column-twice", ["data", "import", "home-depot", "--input", w("hd_twice.csv"), "--out", w("i1")],
         "hd_twice.csv:1: header: column 'relevance' appears 2 times"),
        ("validate-gzip-bytes", ["data", "validate", w("gzipped.jsonl")], "gzipped.jsonl: gzip-compressed bytes"),
        ("validate-utf16", ["data", "validate", w("hd_utf16.csv")], "hd_utf16.csv: UTF-16 text"),
        ("validate-column-twice", ["data", "validate", w("title_twice.csv")], "title_twice.csv:1: header: column 'title'"),
        ("import-id-twice", ["data", "import", "home-depot", "--input", w("hd_ids.csv"), "--out", w("i2")],
         "hd_ids.csv:3: id: 'hd-1' repeats the id of"),
        ("import-utf8-as-latin1", ["data", "import", "home-depot", "--input", w("hd_utf8.csv"), "--encoding",
                                   "latin-1", "--out", w("i6")], "hd_utf8.csv: is UTF-8 text, not latin-1"),
        ("import-utf16", ["data", "import", "home-depot", "--input", w("hd_utf16.csv"), "--out", w("i3")],
         "hd_utf16.csv: UTF-16 text"),
        ("import-not-gzip", ["data", "import", "home-depot", "--input", w("hd_gzip_named.csv.gz"), "--out", w("i4")],
         "not a gzip file"),
        ("import-qbqtc-latin1", ["data", "import", "qbqtc", "--input", w("qbqtc_latin1"), "--out", w("i5")],
         "dev.json:1: row: not UTF-8 text (byte 0xe9 at character 24); save the file as UTF-8"),
        # -- models: GGUF files and adapter folders that are not what they claim
        ("import-not-gguf", ["model", "import", w("not.gguf"), "--out", w("m1")], "not.gguf: not a GGUF file"),
        ("import-empty-gguf", ["model", "import", w("empty.gguf"), "--out", w("m1")], "empty.gguf: empty file"),
        ("import-no-tokenizer", ["model", "import", w("no_tokenizer.gguf"), "--out", w("m1")],
         "no_tokenizer.gguf: cannot read its tokenizer"),
        ("import-truncated-gguf", ["model", "import", w("truncated.gguf"), "--out", w("m1")], "truncated.gguf"),
        ("merge-bad-json", ["model", "merge", w("adapter_badjson"), "--out", w("m1")],
         "adapter_config.json: not valid JSON"),
        ("merge-cut-weights", ["model", "merge", w("adapter_cut"), "--out", w("m1")],
         "adapter_model.safetensors: weights truncated"),
        ("merge-no-weights", ["model", "merge", w("adapter_noweights"), "--out", w("m1")], "no adapter weights"),
        ("init-latin1-corpus", ["model", "init", "--out", w("m1"), "--corpus", w("corpus_latin1.txt")],
         "corpus_latin1.txt:1: not UTF-8 text"),
        # -- checked before the work, not after it
        ("eval-record-over-context", ["eval", "--model", w("model"), "--data", w("long.jsonl"), "--out", w("e.json")],
         "long.jsonl: record 1 (id long): prompt is"),
        ("eval-out-is-a-folder", ["eval", "--model", w("model"), "--data", w("good.jsonl"), "--out", w("hd")],
         "--out"),
        ("score-fifo", ["score", "--model", w("model"), "--input", w("fifo.jsonl"), "--output", w("s.jsonl")],
         "fifo.jsonl: not a regular file"),
        ("agreement-out-is-a-folder", ["data", "agreement", w("good.jsonl"), "--out", w("hd")], "--out"),
        ("score-rejects-is-a-folder", ["score", "--model", w("model"), "--input", w("good.jsonl"), "--output",
                                       w("s.jsonl"), "--rejects", w("hd")], "--rejects"),
        ("init-out-under-a-file", ["model", "init", "--out", w("good.jsonl/m")], "good.jsonl is a file, not a folder"),
        ("report-out-under-a-file", ["report", w("run_list"), "--out", w("good.jsonl/r")], "is a file, not a folder"),
        ("report-empty-folder", ["report", w("empty_run"), "--out", w("rep")], "empty_run: neither metrics.jsonl"),
        ("report-eval-not-an-object", ["report", w("run_list"), "--out", w("rep")], "test.json: (top level)"),
        ("report-eval-metric-text", ["report", w("run_metrics_text"), "--out", w("rep")], "metrics.accuracy"),
        # -- empty inputs are an error, not a silent exit 0
        ("validate-empty", ["data", "validate", w("empty.jsonl")], "empty.jsonl: no records"),
        ("label-header-only", ["data", "label", w("header_only.csv"), w("o.jsonl")], "header_only.csv: no records"),
        ("score-empty", ["score", "--model", w("model"), "--input", w("empty.jsonl"), "--output", w("s.jsonl")],
         "empty.jsonl: no records"),
        ("agreement-no-labels", ["data", "agreement", w("unlabelled.jsonl")], "unlabelled.jsonl: no labelled records"),
        ("predict-empty", ["baseline", "predict", "--model", w("b.joblib"), "--input", w("empty.jsonl"), "--output",
                           w("p.jsonl")], "no records"),
    ]


def test_every_mistake_is_one_line_exit_2_and_changes_nothing(ws):
    code, _, err = run("baseline", "fit", "--kind", "tfidf", "--train", ws / "good.jsonl", "--out", ws / "b.joblib")
    assert code == 0, err
    failures = mistake_failures(ws, cases(ws))
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------- the scheme the data says


def test_imported_splits_are_read_under_their_own_scheme(ws, tmp_path):
    split = ws / "hd" / "test.jsonl"
    code, _, err = run("data", "agreement", split, "--out", tmp_path / "own.json")
    assert code == 0, err
    code, _, err = run("data", "agreement", split, "--scheme", "three_level", "--out", tmp_path / "named.json")
    assert code == 0, err
    own, named = (json.loads((tmp_path / n).read_text()) for n in ("own.json", "named.json"))
    assert own == named  # without --scheme the manifest's three_level is used, not the 4-level default
    code, _, err = run("data", "validate", split)
    assert code == 0, err
    # naming the data's scheme does not get past a model trained on another
    code, _, err = run("score", "--model", ws / "model", "--input", split, "--output", tmp_path / "s.jsonl",
                       "--scheme", "three_level")
    assert code == 2 and "trained with scheme 'default'" in err


def test_train_reads_an_imports_scheme_by_the_rule_every_command_uses(ws, tiny_model_dir, tmp_path):
    """`agrl train` on an import's own train.jsonl needs no `scheme:` (issue 26 item 8): data.resolve_scheme,
    as validate, eval and score; naming another scheme is refused by the same rule."""
    from agrl.train.config import load_config, preflight

    keys = [f"model={tiny_model_dir}", f"train_file={ws / 'hd' / 'train.jsonl'}", f"output_dir={tmp_path / 'run'}"]
    method, config, args = load_config("sft", keys)
    assert config.scheme == "three_level"
    preflight(method, config, args)  # the labels read as three_level: no scheme mismatch
    with pytest.raises(UserError, match="scheme default: .* is labelled in scheme 'three_level'"):
        load_config("sft", [*keys, "scheme=default"])
    method, config, _ = load_config("sft", [*keys[:1], f"train_file={ws / 'good.jsonl'}", keys[2]])
    assert config.scheme == "default"  # no manifest: the default, spelled once (schemes.DEFAULT)


def test_sbs_create_refuses_a_judge_file_made_under_another_scheme(ws, tmp_path):
    """Judge outputs record their scheme (score's OUTPUT.meta.json, eval's JSON): one made under the 4-level
    default is refused on three_level pairs instead of read as three_level labels (issue 27)."""
    pairs = ws / "hd" / "test.jsonl"
    ids = [json.loads(line)["id"] for line in pairs.read_text().splitlines()]
    for name, scheme in (("a", "default"), ("b", "three_level")):
        rows = [{"id": i, "label": 1, "label_name": "x", "score": 1.0, "tier": "Bad",
                 "probabilities": {"1": 1.0}} for i in ids]
        (tmp_path / f"{name}.jsonl").write_text(_jsonl(rows))
        (tmp_path / f"{name}.jsonl.meta.json").write_text(json.dumps({"model": "m", "scheme": scheme}))
    code, _, err = run("sbs", "create", "--a", tmp_path / "a.jsonl", "--b", tmp_path / "b.jsonl", "--pairs", pairs,
                       "--out", tmp_path / "s.sqlite")
    assert code == 2 and "--a" in err and "judged in scheme 'default'" in err and "three_level" in err, err
    assert not (tmp_path / "s.sqlite").exists()
    code, _, err = run("sbs", "create", "--a", tmp_path / "b.jsonl", "--b", tmp_path / "b.jsonl", "--pairs", pairs,
                       "--out", tmp_path / "s.sqlite")
    assert code == 0, err


# ---------------------------------------------------------------------------- resumable outputs


def test_score_refuses_to_resume_another_models_output(ws, tiny_model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    out = tmp_path / "s.jsonl"
    code, _, err = run("score", "--model", tiny_model_dir, "--input", ws / "good.jsonl", "--output", out)
    assert code == 0, err
    made_by = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert made_by["model"] == str(Path(tiny_model_dir).resolve()) and made_by["scheme"] == "default"
    first = out.read_bytes()
    code, _, err = run("score", "--model", tiny_model_dir, "--input", ws / "good.jsonl", "--output", out)
    assert code == 0 and "already done 2" in err  # the same maker resumes
    code, _, err = run("score", "--model", other, "--input", ws / "good.jsonl", "--output", out)
    assert code == 0 and "already done 2" in err  # so does a copy of it elsewhere: the same weights
    weights = other / "model.safetensors"  # the same architecture, other weights: another maker
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x00\x00\x40"  # a norm weight of 1.0 becomes 2.0
    weights.write_bytes(bytes(data))
    for argv, expected in (([other], "written with model"), ([tiny_model_dir, "--tier-threshold", "0.7"],
                                                             "tier_threshold 0.6")):
        code, _, err = run("score", "--model", *argv, "--input", ws / "good.jsonl", "--output", out)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == first


def test_score_refuses_an_output_another_run_is_writing(ws, tiny_model_dir, tmp_path):
    import fcntl

    out = tmp_path / "s.jsonl"
    with out.open("a") as held:  # what a running `agrl score` holds while it appends
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        code, _, err = run("score", "--model", tiny_model_dir, "--input", ws / "good.jsonl", "--output", out)
    assert code == 2 and "another `agrl score` is writing it" in err and out.read_text() == ""


# ---------------------------------------------------------------------------- importers: repeats and flags


def test_home_depot_repeats_become_one_record_with_the_mean_grade(tmp_path):
    rows = "70,1,Angle bracket,angle,3\n70,1,Angle bracket,angle,3\n70,1,Angle bracket,angle,1\n"
    (tmp_path / "hd.csv").write_text(HD_HEADER + rows + HD_ROWS)
    code, _, err = run("data", "import", "home-depot", "--input", tmp_path / "hd.csv", "--out", tmp_path / "o")
    assert code == 0, err
    assert "merged 3 row(s) of 1 repeated query-product pair(s) by the mean of their grades" in err
    records = [json.loads(line) for n in ("train", "validation", "test")
               for line in (tmp_path / "o" / f"{n}.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 9
    angle = next(r for r in records if r["id"] == "hd-70")
    assert angle["grade"] == pytest.approx(7 / 3, abs=1e-4) and angle["label"] == 2
    assert angle["merged_grades"] == [3.0, 3.0, 1.0]
    assert "mean of their grades" in json.loads((tmp_path / "o" / "manifest.json").read_text())["merged"][0]


def test_qbqtc_conflicts_take_the_majority_and_drop_ties(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    row = lambda i, q, label: json.dumps({"id": i, "query": q, "title": f"title of {q}", "label": label}) + "\n"
    (folder / "dev.json").write_text(row(1, "a", 2) + row(2, "a", 2) + row(3, "b", 0) + row(4, "c", 1))
    (folder / "test_public.json").write_text(row(1, "a", 1) + row(2, "b", 2) + row(3, "d", 1))
    code, _, err = run("data", "import", "qbqtc", "--input", folder, "--out", tmp_path / "o", "--validation", "0",
                       "--test", "0")
    assert code == 0, err
    records = {r["query"]: r for r in map(json.loads, (tmp_path / "o" / "train.jsonl").read_text().splitlines())}
    assert set(records) == {"a", "c", "d"}  # b: labels 0 and 2, a tie, dropped
    assert records["a"]["label"] == 3 and records["a"]["merged_labels"] == [3, 3, 2]
    assert "2 with conflicting labels, 1 dropped as ties" in err


def _esci(tmp_path, **change):
    examples = pd.DataFrame({
        "example_id": [1, 2, 3], "query": ["usb c cable", "usb c cable", "red mug"], "query_id": [10, 10, 11],
        "product_id": ["B1", "B2", "B3"], "product_locale": ["us", "us", "us"], "esci_label": ["E", "S", "I"],
        "small_version": ["1", "0", "1"], "large_version": [1, 1, 1], "split": ["train", "train", "test"],
    } | change)
    products = pd.DataFrame({
        "product_id": ["B1", "B2", "B3"], "product_title": ["Anker USB C Cable", "USB C to A", "Blue Mug"],
        "product_description": [None, None, None], "product_bullet_point": [None, None, None],
        "product_brand": [None, None, None], "product_color": [None, None, None], "product_locale": ["us"] * 3,
    })
    examples.to_parquet(tmp_path / "examples.parquet")
    if "product_title" in change:
        products["product_title"] = change["product_title"]
    products.to_parquet(tmp_path / "products.parquet")
    return ["--examples", tmp_path / "examples.parquet", "--products", tmp_path / "products.parquet"]


def test_esci_string_flags_null_ids_and_product_errors(tmp_path):
    code, _, err = run("data", "import", "esci", *_esci(tmp_path), "--out", tmp_path / "o")
    assert code == 0, err
    ids = [json.loads(line)["id"] for n in ("train", "validation", "test")
           for line in (tmp_path / "o" / f"{n}.jsonl").read_text().splitlines()]
    assert sorted(ids) == ["esci-1", "esci-3"]  # small_version "0" is false
    code, _, err = run("data", "import", "esci", *_esci(tmp_path, example_id=[1, None, None],
                                                         small_version=[1, 1, 1]), "--out", tmp_path / "o2")
    assert code == 2 and "examples.parquet:2: example_id: is required" in err and "1 more" in err
    code, _, err = run("data", "import", "esci", *_esci(tmp_path, small_version=["1", "yes", "1"]),
                       "--out", tmp_path / "o3")
    assert code == 2 and "examples.parquet:2: small_version: must be 0 or 1" in err
    argv = _esci(tmp_path, small_version=[1, 1, 1])
    products = pd.read_parquet(tmp_path / "products.parquet")
    products.loc[1, "product_title"] = None
    products.to_parquet(tmp_path / "products.parquet")
    code, _, err = run("data", "import", "esci", *argv, "--out", tmp_path / "o4")
    assert code == 2 and "products.parquet:2: product_title: is required" in err, err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o4").exists()


def test_validate_names_a_repeated_id(tmp_path):
    (tmp_path / "r.jsonl").write_text(_jsonl([GOOD[0], GOOD[1], GOOD[0]]))
    code, out, _ = run("data", "validate", tmp_path / "r.jsonl")
    assert code == 1 and "r.jsonl:3: id: 'a' repeats the id of line 1" in out


def test_baseline_predict_replaces_only_with_force(ws, tmp_path):
    out = tmp_path / "p.jsonl"
    out.write_text("earlier predictions\n")
    code, _, err = run("baseline", "predict", "--model", ws / "b.joblib", "--input", ws / "good.jsonl", "--output", out)
    assert code == 2 and "pass --force" in err and out.read_text() == "earlier predictions\n"
    code, _, err = run("baseline", "predict", "--model", ws / "b.joblib", "--input", ws / "good.jsonl", "--output",
                       out, "--force")
    assert code == 0 and len(out.read_text().splitlines()) == 2, err


# ---------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_get_the_mode_a_plain_write_gives(tmp_path, mask):
    old = os.umask(mask)
    try:
        (tmp_path / "hd.csv.gz").write_bytes(gzip.compress((HD_HEADER + HD_ROWS).encode()))
        code, _, err = run("data", "import", "home-depot", "--input", tmp_path / "hd.csv.gz", "--out", tmp_path / "d")
        assert code == 0, err
        code, _, err = run("model", "init", "--out", tmp_path / "m")
        assert code == 0, err
        plain = tmp_path / "plain"
        plain.write_text("x")
        existing = tmp_path / "kept.txt"
        existing.write_text("old")
        existing.chmod(0o640)
        atomic_write(existing, "new")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(plain) == 0o666 & ~mask
    written = [*(tmp_path / "d").iterdir(), *(tmp_path / "m").iterdir()]
    assert {p.name for p in written} >= {"train.jsonl", "manifest.json", "model.safetensors", "config.json"}
    assert {p.name: mode(p) for p in written} == {p.name: 0o666 & ~mask for p in written}
    assert mode(tmp_path / "m") == 0o777 & ~mask
    assert mode(existing) == 0o640  # a replaced file keeps its mode, as a plain write would


def test_atomic_write_names_the_file_not_its_temp(tmp_path):
    (tmp_path / "out.json").mkdir()
    from agrl.errors import UserError

    with pytest.raises(UserError, match=r"out.json: cannot write it") as caught:
        atomic_write(tmp_path / "out.json", "{}")
    assert ".tmp" not in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_a_trained_model_gets_the_mode_a_plain_write_gives(sft_model_dir):
    """`agrl train` saves weights through safetensors' 0600 temp file: the saved model gets the umask's modes."""
    mask = os.umask(0)
    os.umask(mask)
    saved = [p for p in Path(sft_model_dir).iterdir() if p.is_file()]
    assert {p.name for p in saved} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in saved} == {p.name: 0o666 & ~mask for p in saved}


def test_validate_reports_repeated_pairs_and_conflicting_labels_as_score_sees_them(ws, tiny_model_dir, tmp_path):
    """One pair three times with labels 4, 1, 4 and no ids (issue 28): validate names lines 2 and 3 with the
    importers' rule; a file validate accepts, `agrl score` scores whole (no row rejected as a repeated id)."""
    pair = {"query": "red shoes", "product": {"title": "Nike red shoe"}}
    rows = [GOOD[1] | {"id": None}, pair | {"label": 4}, pair | {"label": 1}, pair | {"label": 4}]
    (tmp_path / "thrice.jsonl").write_text(_jsonl([{k: v for k, v in r.items() if v is not None} for r in rows]))
    code, out, _ = run("data", "validate", tmp_path / "thrice.jsonl")
    assert code == 1, out
    said = "repeats the query-title pair of line 2 (labels 4, 1, 4 on lines 2, 3, 4: the majority label is 4)"
    assert f"thrice.jsonl:3: label: {said}" in out and f"thrice.jsonl:4: pair: {said}" in out
    code, _, err = run("score", "--model", tiny_model_dir, "--input", tmp_path / "thrice.jsonl", "--output",
                       tmp_path / "s3.jsonl")  # score rejects the very lines validate named
    assert code == 0 and "rejected 2" in err, err
    # one pair, case and spacing aside, with one label: a repeat (the importers merge it too)
    (tmp_path / "twice.jsonl").write_text(_jsonl([pair | {"label": 4}, {"query": "Red  Shoes", "label": 4,
                                                                         "product": {"title": "nike red shoe"}}]))
    code, out, _ = run("data", "validate", tmp_path / "twice.jsonl")
    assert code == 1 and "twice.jsonl:2: pair: repeats the query-title pair of line 1 (label 4)" in out, out
    # graded rows (a Home Depot import) conflict by the mean grade
    graded = [pair | {"label": 3, "grade": 3.0}, pair | {"label": 1, "grade": 1.33}, pair | {"label": 2, "grade": 2.0}]
    (tmp_path / "graded.jsonl").write_text(_jsonl(graded))
    code, out, _ = run("data", "validate", tmp_path / "graded.jsonl", "--scheme", "three_level")
    assert code == 1 and "their mean grade 2.11 is label 2" in out, out
    # what validate accepts, score takes whole
    (tmp_path / "once.jsonl").write_text(_jsonl(rows[:2]))
    assert run("data", "validate", tmp_path / "once.jsonl")[0] == 0
    code, _, err = run("score", "--model", tiny_model_dir, "--input", tmp_path / "once.jsonl", "--output",
                       tmp_path / "s.jsonl")
    assert code == 0 and "rejected 0" in err, err


@pytest.mark.parametrize("text, expected", [
    ('query,title,label\n"red shoes,"nike red shoe,4\n', "bad.csv:2: row has 2 fields, the header 3"),
    ("query,title\nsocks,wool socks\nshoes,nike,shoe,42\n", "bad.csv:3: row has 4 fields, the header 2"),
    ('query,title,label\nsocks,"wool\nsocks",4\nshoes,nike\n', "bad.csv:4: row has 2 fields, the header 3"),
])
def test_a_csv_row_with_another_field_count_than_the_header_is_refused_by_line(tmp_path, text, expected):
    (tmp_path / "bad.csv").write_text(text)
    for argv in (["data", "validate"], ["data", "label"]):
        code, _, err = run(*argv, tmp_path / "bad.csv", *([tmp_path / "o.jsonl"] if argv[1] == "label" else []))
        assert code == 2 and expected in err, err


@pytest.mark.parametrize("cell, where", [("wool\x00socks", "product.title"), ("red\x1bshoes", "query"),
                                         ("acme\x7f", "product.brand")])
def test_control_characters_are_refused_in_files(tmp_path, cell, where):
    """One rule (data.check_plain) for JSONL, CSV, the importers and the service's bodies; tab and newline stay."""
    control = next(c for c in cell if ord(c) < 32 or ord(c) == 127)
    row = {"query": "red shoes", "product": {"title": "wool socks", "brand": "acme"}, "label": 4}
    (row["product"] if where.startswith("product.") else row)[where.split(".")[-1]] = cell
    (tmp_path / "c.jsonl").write_text(_jsonl([row]))
    flat = {"query": row["query"], "title": row["product"]["title"], "brand": row["product"]["brand"], "label": 4}
    (tmp_path / "c.csv").write_text("query,title,brand,label\n" + ",".join(str(v) for v in flat.values()) + "\n")
    for name in ("c.jsonl", "c.csv"):
        code, out, _ = run("data", "validate", tmp_path / name)
        assert code == 1 and f"{name}:{1 + name.endswith('csv')}: {where}: control character U+{ord(control):04X}" in out
    (tmp_path / "tab.jsonl").write_text(_jsonl([row | {"query": "red\tshoes\n"} | {"product": {"title": "a\r\nb"}}]))
    assert run("data", "validate", tmp_path / "tab.jsonl")[0] == 0
