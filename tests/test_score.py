"""Prefill scoring (score.py) and the batch command `agrl score`.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_score.py
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from agrl.cli import app
from agrl.data.records import Record
from agrl.core.prompt import prompt_text
from agrl.data.schemes import load_scheme
from agrl.model.score import Scorer, cumpt_tier, parse_shard, score_file

COLORS = ["red", "blue", "black", "white", "green"]
KINDS = ["running shoes", "shoe rack", "phone case", "sofa", "dress shirt"]


def make_rows(n: int) -> list[dict]:
    """Pairs of varied length (so batches need padding); every fourth row has no id."""
    rows = []
    for i in range(n):
        color, kind = COLORS[i % 5], KINDS[(i // 5) % 5]
        product = {
            "title": f"{kind.title()} {i}" + " deluxe edition" * (i % 4),
            "brand": ["nike", "ikea"][i % 2],
        }
        if i % 3 == 0:
            product["attributes"] = {"color": color}
        row = {"query": f"{color} {kind}" + " without logo" * (i % 2), "product": product}
        if i % 4:
            row["id"] = f"r{i}"
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines))
    return path


def reference_probs(model_dir, records: list[Record], codes=(4, 3, 2, 1)) -> list[list[float]]:
    """The posterior computed here from scratch: one unpadded forward pass per pair."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    label_ids = tok.convert_tokens_to_ids([str(c) for c in codes])
    out = []
    with torch.no_grad():
        for record in records:
            ids = tok(
                prompt_text(record, tok) + "<label>", add_special_tokens=False, return_tensors="pt"
            ).input_ids
            logits = model(input_ids=ids).logits[0, -1, label_ids]
            out.append(torch.softmax(logits, -1).tolist())
    return out


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return Scorer(tiny_model_dir, batch_size=8, device="cpu")


def test_probabilities_equal_a_direct_forward_pass_with_and_without_padding(tiny_model_dir, scorer):
    from agrl.data.records import parse_record

    records = [parse_record(r, scorer.scheme) for r in make_rows(12)]
    expected = reference_probs(tiny_model_dir, records)
    lengths = {len(scorer.encode(r)) for r in records[:8]}
    assert len(lengths) > 1  # the first batch really is padded
    # batch 1 with widths rounded to 1: no padding at all; 8 rows rounded to 8 or 32 (the GPU's setting)
    for batch_size, multiple in ((1, 1), (8, 8), (8, 32)):
        scorer.batch_size, scorer.pad_multiple = batch_size, multiple
        got = scorer.score(records)
        for want, result in zip(expected, got):
            assert list(result.probabilities) == [4, 3, 2, 1]
            assert [result.probabilities[c] for c in (4, 3, 2, 1)] == pytest.approx(want, abs=1e-5)
            assert result.score == pytest.approx(sum(c * p for c, p in zip((4, 3, 2, 1), want)), abs=1e-5)
            assert result.label == (4, 3, 2, 1)[max(range(4), key=want.__getitem__)]
    scorer.batch_size, scorer.pad_multiple = 8, 8
    scorer.warmup(max_width=32)  # runs on any device; results are unchanged after it
    assert scorer.score(records[:1])[0].probabilities == pytest.approx(got[0].probabilities, abs=1e-6)


# CumPT over the default scheme (4 Excellent, 3 Related good; 2, 1 not), threshold 0.6.
@pytest.mark.parametrize(
    "probs, tier",
    [
        ({4: 0.7, 3: 0.1, 2: 0.1, 1: 0.1}, "Good"),  # the best level alone reaches 0.6
        ({4: 0.6, 3: 0.0, 2: 0.2, 1: 0.2}, "Good"),  # exactly the threshold counts as reached
        ({4: 0.4, 3: 0.3, 2: 0.2, 1: 0.1}, "Mid"),  # 4+3 reach it: a good level below the best
        ({4: 0.3, 3: 0.2, 2: 0.4, 1: 0.1}, "Bad"),  # needs level 2, not a good level
        ({4: 0.05, 3: 0.05, 2: 0.1, 1: 0.8}, "Bad"),
        # argmax is 3 but CumPT calls it Mid only when mass above reaches 0.6; here 4 is not enough
        ({4: 0.25, 3: 0.45, 2: 0.2, 1: 0.1}, "Mid"),
    ],
)
def test_cumpt_tiers(probs, tier):
    assert cumpt_tier(probs, load_scheme("default"), 0.6) == tier


def test_cumpt_threshold_and_other_schemes():
    probs = {4: 0.5, 3: 0.3, 2: 0.1, 1: 0.1}
    default = load_scheme("default")
    assert [cumpt_tier(probs, default, t) for t in (0.5, 0.8, 0.9)] == ["Good", "Mid", "Bad"]
    three = load_scheme("three_level")  # 3 exact, 2 partial (good), 1 irrelevant
    assert cumpt_tier({3: 0.2, 2: 0.5, 1: 0.3}, three, 0.6) == "Mid"
    assert cumpt_tier({3: 0.2, 2: 0.2, 1: 0.6}, three, 0.6) == "Bad"


def test_score_file_writes_every_row_once_and_rejects_bad_rows(tmp_path, scorer):
    rows = make_rows(20) + [{"id": "r1", "query": "dup", "product": {"title": "x"}}]
    source = write_rows(
        tmp_path / "in.jsonl", rows, ('{"query": "broken\n', '{"query": "q", "product": {}}\n')
    )
    report = score_file(scorer, source, tmp_path / "out.jsonl", progress=False)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (report.scored, report.rejected) == (20, 3) and len(out) == 20
    assert len({o["id"] for o in out}) == 20
    assert all(
        abs(sum(o["probabilities"].values()) - 1) < 1e-5 and o["tier"] in ("Good", "Mid", "Bad") for o in out
    )
    bad = [json.loads(line) for line in (tmp_path / "out.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(b["line"], b["field"]) for b in bad] == [(21, "id"), (22, "json"), (23, "product.title")]
    assert bad[0]["source"] == str(source) and "line 2" in bad[0]["message"]
    assert report.first_rejects[0] == f"{source}:21: id: repeats the id of line 2"
    # The rows without id got a content id: a rerun finds them all done and scores nothing.
    again = score_file(scorer, source, tmp_path / "out.jsonl", progress=False)
    assert (again.scored, again.resumed, again.rejected) == (0, 20, 3)


def test_resume_after_a_cut_line_matches_an_uninterrupted_run(tmp_path, scorer):
    source = write_rows(tmp_path / "in.jsonl", make_rows(30))
    score_file(scorer, source, tmp_path / "full.jsonl", progress=False)
    full = (tmp_path / "full.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    # A kill mid-write leaves 11 whole lines and half of the 12th.
    (tmp_path / "cut.jsonl").write_text("".join(lines[:11]) + lines[11][:40])
    report = score_file(scorer, source, tmp_path / "cut.jsonl", progress=False)
    assert (report.resumed, report.scored) == (11, 19)
    assert_same_results(tmp_path / "cut.jsonl", tmp_path / "full.jsonl")


def assert_same_results(got_path: Path, want_path: Path) -> None:
    got = [json.loads(line) for line in got_path.read_text().splitlines()]
    want = [json.loads(line) for line in want_path.read_text().splitlines()]
    assert [g["id"] for g in got] == [w["id"] for w in want]
    for g, w in zip(got, want):  # batches differ after a resume: equal up to float noise
        assert (g["label"], g["tier"]) == (w["label"], w["tier"])
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-5)


def test_shards_cover_the_input_exactly_once(tmp_path, tiny_model_dir, scorer):
    source = write_rows(tmp_path / "in.jsonl", make_rows(40), ("not json\n",))
    ids, bad_lines = [], []
    for i in range(3):
        out = tmp_path / f"out{i}.jsonl"
        result = CliRunner().invoke(
            app,
            [
                "score",
                "--model",
                str(tiny_model_dir),
                "--input",
                str(source),
                "--output",
                str(out),
                "--shard",
                f"{i}/3",
                "--batch-size",
                "4",
            ],
        )
        assert result.exit_code == 0, result.output
        ids += [json.loads(line)["id"] for line in out.read_text().splitlines()]
        bad_lines += [
            json.loads(line)["line"] for line in Path(f"{out}.rejects.jsonl").read_text().splitlines()
        ]
    everything = [json.loads(line)["id"] for line in score_all(scorer, source, tmp_path)]
    assert sorted(ids) == sorted(everything) and len(ids) == 40
    assert bad_lines == [41]
    with pytest.raises(ValueError):
        parse_shard("3/3")


def score_all(scorer, source, tmp_path) -> list[str]:
    score_file(scorer, source, tmp_path / "all.jsonl", progress=False)
    return (tmp_path / "all.jsonl").read_text().splitlines()


def test_cli_killed_and_rerun_gives_the_uninterrupted_output(tmp_path, tiny_model_dir, scorer):
    source = write_rows(tmp_path / "in.jsonl", make_rows(800))
    output = tmp_path / "out.jsonl"
    model, data = str(tiny_model_dir), str(source)
    cmd = [sys.executable, "-m", "agrl", "score", "--model", model, "--input", data, "--output", str(output)]
    cmd += ["--batch-size", "2", "--device", "cpu"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not output.exists() or output.stat().st_size < 5000):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(output.read_text().splitlines())
    assert 0 < partial < 800, "the run was not interrupted mid-way"
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    score_file(scorer, source, tmp_path / "full.jsonl", progress=False)
    assert_same_results(output, tmp_path / "full.jsonl")


def test_label_tokens_are_found_for_other_tokenizers_or_refused_clearly():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from agrl.model.score import label_token_ids

    corpus = ["<label>4</label> <label>3</label> <label>2</label> <label>1</label> query title brand"] * 20
    # GPT-2 style byte-level BPE, no added tags: `<label>` is several tokens, the code its own.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    gpt2_like = PreTrainedTokenizerFast(tokenizer_object=bpe)
    assert len(gpt2_like.encode("<label>", add_special_tokens=False)) > 1
    ids = label_token_ids(gpt2_like, load_scheme("default"))
    assert [gpt2_like.decode([ids[c]]) for c in (4, 3, 2, 1)] == ["4", "3", "2", "1"]
    # A word-level vocabulary that swallows `<label>4</label>` whole cannot be prefill-scored.
    words = Tokenizer(models.WordLevel({"<label>4</label>": 0, "[UNK]": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    with pytest.raises(ValueError, match="label code 4"):
        label_token_ids(PreTrainedTokenizerFast(tokenizer_object=words), load_scheme("default"))


def test_cli_reports_graded_metrics_and_the_elapsed_time_on_labelled_input(tmp_path, tiny_model_dir):
    """On labelled input with a grade, `agrl score` closes with macro-F1, accuracy, RMSE and Spearman; its
    progress, in a log, ends with the time the run took (it showed 0:00:00 remaining instead)."""
    import numpy as np

    from agrl.evaluation.metrics import spearman

    rows = [r | {"id": f"g{i}", "label": 1 + i % 4, "grade": 1 + (i % 7) / 2} for i, r in enumerate(make_rows(12))]
    source = write_rows(tmp_path / "graded.jsonl", rows)
    out = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(app, ["score", "--model", str(tiny_model_dir), "--input", str(source),
                                      "--output", str(out), "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    scored = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
    score, grade = np.array([scored[r["id"]]["score"] for r in rows]), np.array([r["grade"] for r in rows])
    line = next(x for x in result.stdout.splitlines() if x.startswith("against the labels of 12/12 scored pairs"))
    assert f"RMSE {np.sqrt(np.mean((score - grade) ** 2)):.3f}" in line
    assert f"Spearman {spearman(score, grade):.3f}" in line
    assert re.search(r"scoring: 12/12 \(100%\), [\d.]+/s, done in 0:00:\d\d", result.stderr)
