"""`agrl compare`: judges, baselines and reference rows on the same pairs; the user's whole path at small size.

Scores files written here with known quality (perfect, always the lowest level) pin the table, the paired
differences and the warning rule; the whole path imports a tiny Home Depot-shaped CSV (tests/data), splits
it, trains the shipped base judge 2 steps, fits a baseline and compares them.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_compare.py
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agrl.cli import app
from agrl.evaluation.compare import LOWER_IS_BETTER
from agrl.data.records import load_records
from agrl.data.schemes import load_scheme

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "home_depot_tiny.csv"
BASE_JUDGE = ROOT / "src" / "agrl" / "judges" / "tiny-base"


def run(*argv):
    result = CliRunner().invoke(app, [str(a) for a in argv])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The tiny Home Depot CSV imported (three_level records with grades), test share 0.3."""
    out = tmp_path_factory.mktemp("hd") / "hd"
    code, _, err = run("data", "import", "home-depot", "--input", FIXTURE, "--out", out, "--validation", "0",
                       "--test", "0.3")
    assert code == 0, err
    return out


def write_scores(path: Path, records, label, score) -> Path:
    path.write_text("".join(json.dumps({"id": r.id, "label": label(r), "score": score(r)}) + "\n" for r in records))
    return path


def test_compare_table_differences_and_warnings(imported, tmp_path):
    scheme = load_scheme("three_level")
    test = load_records(imported / "test.jsonl", scheme)
    perfect = write_scores(tmp_path / "perfect.jsonl", test, lambda r: r.label, lambda r: r.extra["grade"])
    lowest = write_scores(tmp_path / "lowest.jsonl", test, lambda r: 1, lambda r: 1.0)
    code, _, err = run("baseline", "fit", "--kind", "tfidf", "--train", imported / "train.jsonl",
                       "--out", tmp_path / "tfidf.joblib")
    assert code == 0, err
    out = tmp_path / "cmp"
    code, stdout, err = run("compare", perfect, f"lowest={lowest}", tmp_path / "tfidf.joblib", "--data",
                            imported / "test.jsonl", "--prior", imported / "train.jsonl", "--out", out,
                            "--resamples", "50")
    assert code == 0, err
    result = json.loads((out / "compare.json").read_text())
    majority = max(scheme.codes, key=lambda c: sum(r.label == c for r in load_records(imported / "train.jsonl", scheme)))
    names = [row["name"] for row in result["rows"]]
    assert names == ["perfect", "lowest", "tfidf", "class prior", f"always {scheme.name_of(majority)}"]
    assert [row["kind"] for row in result["rows"]] == ["scores", "scores", "baseline", "reference", "reference"]
    assert result["metrics"] == ["macro_f1", "accuracy", "good_f1", "rmse", "spearman", "ndcg@10"]
    rows = {row["name"]: row["metrics"] for row in result["rows"]}
    assert rows["perfect"]["accuracy"]["value"] == 1.0 and rows["perfect"]["rmse"]["value"] == 0.0
    assert rows["perfect"]["spearman"]["value"] == pytest.approx(1.0)
    assert rows["lowest"]["accuracy"]["value"] == pytest.approx(np.mean([r.label == 1 for r in test]))
    lo, hi = rows["tfidf"]["macro_f1"]["interval"]
    assert lo <= rows["tfidf"]["macro_f1"]["value"] <= hi
    # paired differences are taken against the baseline by default
    assert result["reference"] == "tfidf" and "tfidf" not in result["differences"]
    delta = result["differences"]["perfect"]["accuracy"]
    assert delta["delta"] == pytest.approx(1.0 - rows["tfidf"]["accuracy"]["value"])
    # the warning rule: flagged exactly where a row is not above the best reference row
    assert "perfect" not in result["warnings"]
    assert {n["metric"] for n in result["warnings"]["lowest"]} >= {"good_f1", "rmse", "spearman"}
    for name, metrics in rows.items():
        if name in ("class prior", names[-1]):
            continue
        expected = set()
        for metric in result["metrics"]:
            refs = [rows[r][metric]["value"] for r in ("class prior", names[-1])]
            value = metrics[metric]["value"]
            lower = metric in LOWER_IS_BETTER
            if (value >= min(refs)) if lower else (value <= max(refs)):
                expected.add(metric)
        assert {n["metric"] for n in result["warnings"].get(name, [])} == expected, name
    markdown = (out / "compare.md").read_text()
    assert "**lowest is not above the references**" in markdown and "perfect is not above" not in markdown
    assert "| tfidf | baseline |" in markdown and "| perfect | scores |" in stdout
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_scores_missing_pairs_and_duplicate_names(imported, tmp_path):
    scheme = load_scheme("three_level")
    test = load_records(imported / "test.jsonl", scheme)
    partial = write_scores(tmp_path / "partial.jsonl", test[1:], lambda r: r.label, lambda r: 2.0)
    code, _, err = run("compare", partial, "--data", imported / "test.jsonl", "--out", tmp_path / "c1")
    assert code == 2 and f"no row for 1 of the {len(test)} pairs compared (e.g. id {test[0].id!r})" in err
    assert len(err.strip().splitlines()) == 1
    full = write_scores(tmp_path / "full.jsonl", test, lambda r: r.label, lambda r: 2.0)
    code, _, err = run("compare", f"a={full}", f"a={full}", "--data", imported / "test.jsonl", "--out", tmp_path / "c2")
    assert code == 2 and "'a' names two of the compared things" in err


def test_compare_reads_eval_predictions_without_grades(tmp_path):
    """Records without a grade: label metrics and NDCG@10 only; `agrl eval` predictions (pred, expected_relevance)."""
    data = tmp_path / "pairs.jsonl"
    rows = [{"id": f"r{i}", "query": f"q{i // 4}", "product": {"title": f"item {i}"}, "label": 1 + i % 4}
            for i in range(16)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "eval.predictions.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "pred": r["label"] if i % 2 else None,
                                         "expected_relevance": float(r["label"])}) + "\n" for i, r in enumerate(rows)))
    code, _, err = run("compare", preds, "--data", data, "--out", tmp_path / "c", "--resamples", "20")
    assert code == 0, err
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert result["metrics"] == ["macro_f1", "accuracy", "good_f1", "ndcg@10"] and result["reference"] == "class prior"
    row = result["rows"][0]["metrics"]
    assert row["accuracy"]["value"] == 0.5  # a rejected completion (pred None) is wrong
    assert row["ndcg@10"]["value"] == pytest.approx(1.0)


def test_user_path_import_split_train_compare(imported, tmp_path):
    """The user's whole path at small size: import -> split -> train (2 steps) -> compare with a baseline."""
    code, _, err = run("data", "split", imported / "train.jsonl", "--out", tmp_path / "sp", "--test", "0.25",
                            "--validation", "0")
    assert code == 0, err
    split = {name: load_records(tmp_path / "sp" / f"{name}.jsonl") for name in ("train", "test")}
    assert not {r.query for r in split["train"]} & {r.query for r in split["test"]}
    assert json.loads((tmp_path / "sp" / "manifest.json").read_text())["scheme"] == "three_level"
    judge = tmp_path / "judge"
    code, _, err = run("train", "sft", "--set", f"model={BASE_JUDGE}", "--set",
                       f"train_file={tmp_path / 'sp' / 'train.jsonl'}", "--set", "scheme=three_level", "--set",
                       f"output_dir={judge}", "--set", "max_steps=2", "--set", "per_device_train_batch_size=4",
                       "--set", "max_train_records=16", "--set", "save_steps=100", "--set", "disable_tqdm=true")
    assert code == 0, err
    code, _, err = run("baseline", "fit", "--kind", "tfidf", "--train", tmp_path / "sp" / "train.jsonl",
                       "--out", tmp_path / "tfidf.joblib")
    assert code == 0, err
    code, _, err = run("compare", f"judge={judge}", tmp_path / "tfidf.joblib", "--data",
                            imported / "test.jsonl", "--prior", tmp_path / "sp" / "train.jsonl", "--out",
                            tmp_path / "cmp", "--resamples", "50")
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [(r["name"], r["kind"]) for r in result["rows"]][:3] == [("judge", "judge"), ("tfidf", "baseline"),
                                                                      ("class prior", "reference")]
    assert result["rows"][3]["name"].startswith("always ") and result["graded"]
    assert result["n"] == len(load_records(imported / "test.jsonl"))
    judged = result["rows"][0]["metrics"]
    assert all(judged[m]["value"] is not None for m in result["metrics"])
    for name, notes in result["warnings"].items():  # each warning names a reference row that is at least as good
        for note in notes:
            better = note["reference_value"] <= note["value"] if note["metric"] in LOWER_IS_BETTER \
                else note["reference_value"] >= note["value"]
            assert better and note["reference"] in ("class prior", result["rows"][3]["name"]), (name, note)
    assert ("not above the references" in (tmp_path / "cmp" / "compare.md").read_text()) == bool(result["warnings"])
