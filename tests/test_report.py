"""The report reads run directories and writes Markdown/HTML/PNGs that hold the runs' numbers."""

import base64
import json
import re

import pytest
import yaml

from agrl.evaluation.metrics import Prediction, summarize
from agrl.evaluation.report import curve_keys, load_run, write_report
from agrl.data.schemes import load_scheme

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _eval(right: int, total: int = 8) -> dict:
    """An eval JSON with `right` of `total` labels correct (summarize's real output, few resamples)."""
    preds = [Prediction(4, 4 if i < right else 1, str(i), f"q{i // 4}", "brand" if i % 2 else "negation",
                        True, 1.0, {4: 0.7, 1: 0.3}) for i in range(total)]
    return {"model": "m", "data": "d", **summarize(preds, load_scheme("default"), resamples=20)}


def _run(root, name, method, seed, right, log_keys=("loss", "reward")):
    path = root / name
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"method": method, "seed": seed, "learning_rate": 1e-5}))
    rows = [{"step": step, **{key: 1.0 / step for key in log_keys}} for step in (1, 2, 3)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (path / "eval" / "balanced.json").write_text(json.dumps(_eval(right)))
    return path


def test_report_holds_the_runs_numbers(tmp_path):
    runs = [
        _run(tmp_path, "a", "grpo", 0, right=4),  # accuracy 0.5, single run: value [interval]
        _run(tmp_path, "b", "agrl", 0, right=6, log_keys=("loss", "reward", "agr/guided_group_share")),
        _run(tmp_path, "c", "agrl", 1, right=8, log_keys=("loss", "reward", "agr/guided_group_share")),
    ]
    paths = write_report(runs, tmp_path / "report")
    markdown = paths["markdown"].read_text()
    rows: dict[str, str] = {}  # first table row per method: the comparison table comes before the slices
    for line in markdown.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert re.search(r"\| 0\.500 \[0\.\d{3}, 0\.\d{3}\]", rows["grpo"])  # grpo accuracy with its interval
    # agrl pooled over two seeds: accuracy mean .875, std of (.75, 1.0) = .177
    assert "0.875 ± 0.177 (2 seeds)" in rows["agrl"]
    assert "| method | brand | negation |" in markdown  # the per-family table
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["comparison_balanced.png", "confusion_balanced.png", "curves.png"]
    for name in pngs:
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"]({name})" in markdown
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3  # self-contained
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(embedded).startswith(PNG_MAGIC)
    assert "0.875 ± 0.177 (2 seeds)" in page
    summary = json.loads(paths["summary"].read_text())
    assert summary["comparison"]["balanced"]["grpo"]["accuracy"]["mean"] == pytest.approx(0.5)


def test_curve_keys_pick_logged_terms_in_order(tmp_path):
    keys = ("learning_rate", "kl", "rewards/outcome/mean", "rewards/outcome/std", "reward", "agr/replay_acc",
            "mean_token_accuracy")
    run = load_run(_run(tmp_path, "a", "agrl", 0, right=4, log_keys=keys))
    # learning rate and std terms are not plotted; the rest follow the report's order
    assert curve_keys([run]) == ["reward", "rewards/outcome/mean", "mean_token_accuracy", "agr/replay_acc", "kl"]


def test_method_falls_back_to_directory_name(tmp_path):
    path = _run(tmp_path, "sft_run", "x", 0, right=4)
    (path / "config.yaml").unlink()
    assert load_run(path).method == "sft_run"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"step": 1, "loss": 1.0}\nnot json\n', "metrics.jsonl:2: bad JSON"),  # names the line
        ('{"loss": 1.0}\n', "metrics.jsonl:1: step"),  # a row without its step cannot be plotted
    ],
)
def test_bad_log_rows_name_file_and_line(tmp_path, content, message):
    path = _run(tmp_path, "a", "grpo", 0, right=4)
    (path / "metrics.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_run(path)


def test_empty_run_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither metrics.jsonl nor eval"):
        load_run(tmp_path / "empty")


def test_agrl_report_command(tmp_path):
    from typer.testing import CliRunner

    from agrl.cli import app

    runs = [str(_run(tmp_path, "a", "grpo", 0, right=2)), str(_run(tmp_path, "b", "agrl", 0, right=6))]
    result = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| grpo | 0.250 [" in markdown and "| agrl | 0.750 [" in markdown
