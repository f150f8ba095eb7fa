"""Whatever `agrl data validate` accepts, every later command handles (issue 11).

Rows that used to pass validation and then crash later stages (attribute names with spaces and
capitals, Parquet rows whose attribute keys differ, list and timestamp columns, huge prices) go
through validate, label, train (one SFT step), eval and score; rows no stage can use are named.

    .venv/bin/python -m pytest -q tests/test_validated_pipeline.py
"""

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from agrl.cli import app

ODD_BUT_GOOD = [
    {"id": 1, "query": "15 inch laptop", "label": 4, "tags": ["a", "b"],
     "product": {"title": "Dell laptop 15 inch", "category": "Laptops", "attributes": {"Screen Size": "15 inch"}}},
    {"id": "x-2", "query": "red phone case", "label": None,
     "product": {"title": "Phone case, red", "attributes": {"COLOR": "red", "screen-size": 6}, "price": 1e20}},
]
BAD = [  # (JSONL line, field named in the report)
    ('{"query": "q", "product": {"title": "t", "attributes": {"9 lives": "x"}}}', "product.attributes.9 lives"),
    ('{"query": "q", "product": {"title": "t", "attributes": {"Color": "red", "color": "blue"}}}', "product.attributes.color"),
    ('{"query": "q", "product": {"title": "t", "price": Infinity}}', "product.price"),
    ('{"query": "q", "product": {"title": "t"}, "label": NaN}', "label"),
    ('{"query": "q", "product": {"title": "t"}, "label": 1' + "0" * 5000 + "}", "label"),
    ('{"query": "q", "product": {"title": "t"}, "reasoning": 42}', "reasoning"),
    ('{"query": "q", "product": {"title": "t"}, "label": 4, "reasoning": "<label>4</label> no think"}', "reasoning"),
    (('{"query": "q", "product": {"title": "t"}, "label": 2, "reasoning": "<label>4</label>\\n<think>\\n'
      'category: match\\ndecision: 4\\n</think>"}'), "reasoning"),
    ('{"query": "q \\udc80", "product": {"title": "t"}}', "query"),
    ('{"query": "q", "product": {"title": "t"}, "notes": {"a": "\\ud83d"}}', "notes.a"),
    ('{"query": "q", "product": {"title": "t"}, "steps": {"attribute.Screen Size": "maybe"}}', "steps.attribute.screen_size"),
]


def test_validate_names_every_row_no_stage_could_use(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(line for line, _ in BAD) + "\n").encode() + b'{"query": "caf\xe9"}\n')
    result = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    for number, (_, field) in enumerate(BAD, start=1):
        assert any(line.startswith(f"{path}:{number}: {field}") for line in lines), (number, field, lines)
    assert f"{path}:{len(BAD) + 1}: row: not UTF-8: byte 0xe9" in result.stdout


def test_what_validate_accepts_runs_through_label_train_eval_and_score(tmp_path, tiny_model_dir):
    runner = CliRunner()
    jsonl = tmp_path / "odd.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ODD_BUT_GOOD))
    # Parquet: attribute keys differ by row (Arrow fills the gaps with null), list and timestamp columns.
    frame = pd.DataFrame({"query": ["red shoes", "blue shoes"], "title": ["Red shoe", "Blue shoe"],
                          "product": [None, None], "seen": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                          "tags": [["x"], ["y", "z"]]}).drop(columns="product")
    frame["product"] = [{"title": "Red shoe", "attributes": {"color": "red"}},
                        {"title": "Blue shoe", "attributes": {"Shoe Size": "42"}}]
    parquet = tmp_path / "odd.parquet"
    frame.drop(columns=["title"]).to_parquet(parquet)
    for source in (jsonl, parquet):
        result = runner.invoke(app, ["data", "validate", str(source)])
        assert result.exit_code == 0, result.output
    labelled = tmp_path / "labelled.jsonl"
    both = tmp_path / "both.jsonl"
    both.write_text(jsonl.read_text())
    result = runner.invoke(app, ["data", "label", str(parquet), str(tmp_path / "p_labelled.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "p_labelled.jsonl").read_text().splitlines()]
    assert rows[0]["seen"].startswith("2024-01-01") and rows[1]["tags"] == ["y", "z"]
    assert rows[1]["product"]["attributes"] == {"shoe_size": "42"}  # no nulls from the other row's keys
    with both.open("a") as handle:
        handle.write((tmp_path / "p_labelled.jsonl").read_text())
    result = runner.invoke(app, ["data", "label", str(both), str(labelled)])
    assert result.exit_code == 0, result.output
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump({"method": "sft", "model": str(tiny_model_dir), "train_file": str(labelled),
                                      "output_dir": str(tmp_path / "run"), "max_steps": 1, "report_to": "none",
                                      "per_device_train_batch_size": 2, "save_strategy": "no",
                                      "disable_tqdm": True}))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--model", str(run), "--data", str(labelled), "--out",
                                 str(tmp_path / "eval.json"), "--max-new-tokens", "8", "--resamples", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 4
    for source in (labelled, parquet):
        out = tmp_path / f"scores_{source.suffix[1:]}.jsonl"
        result = runner.invoke(app, ["score", "--model", str(run), "--input", str(source), "--output", str(out)])
        assert result.exit_code == 0, result.output
        assert len(out.read_text().splitlines()) == (4 if source == labelled else 2)
