"""Atomic writes and resuming from what a kill leaves (files.py, train/common.py, score.py).

Each test kills or truncates at the bad moment: mid-write, mid-append, mid-checkpoint.

    .venv/bin/python -m pytest -q tests/test_files.py
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from agrl.data.records import write_jsonl
from agrl.errors import UserError
from agrl.files import atomic_write, read_jsonl_tolerant
from agrl.model.score import done_ids
from agrl.train.common import METRICS_FILE, JsonlMetrics, last_good_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_a_kill_mid_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    child = textwrap.dedent(f"""
        import sys, time
        from agrl.files import atomic_open
        with atomic_open({str(target)!r}) as handle:
            handle.write("new line\\n" * 100_000)
            handle.flush()
            print("half written", flush=True)
            time.sleep(60)
            handle.write("the rest\\n")
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], env=dict(os.environ, PYTHONPATH=SRC),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_text() == "old\n"  # the half-written data went to a temporary file only


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "records.jsonl"
    write_jsonl([{"a": 1}], target)

    def rows():  # like a full disk: the write fails after some rows
        yield {"a": 2}
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_jsonl(rows(), target)
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]
    atomic_write(target, b"bytes")
    assert target.read_bytes() == b"bytes"


def test_metrics_log_cut_mid_line_is_read_and_repaired_on_resume(tmp_path):
    log = tmp_path / METRICS_FILE
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')  # killed mid-append
    assert [row["step"] for row in read_jsonl_tolerant(tmp_path / METRICS_FILE)] == [1, 2]
    state = SimpleNamespace(is_world_process_zero=True, global_step=1)  # resumed from checkpoint-1
    JsonlMetrics(tmp_path).on_train_begin(None, state, None)
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n'


def test_metrics_log_is_json_even_when_a_value_is_not_finite(tmp_path):
    """A NaN loss or an Inf reward mean is null in metrics.jsonl: JSON has no NaN or Infinity."""
    state = SimpleNamespace(is_world_process_zero=True, global_step=3, epoch=1.0)
    JsonlMetrics(tmp_path).on_log(None, state, None, logs={"loss": float("nan"), "reward": float("inf"),
                                                             "grad_norm": 0.5})
    text = (tmp_path / METRICS_FILE).read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl")) == {
        "step": 3, "epoch": 1.0, "loss": None, "reward": None, "grad_norm": 0.5}


def test_a_bad_line_that_a_kill_cannot_explain_names_file_and_line(tmp_path):
    log = tmp_path / METRICS_FILE
    log.write_text('{"step": 1}\ngarbage\n{"step": 2}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: bad JSON line"):
        read_jsonl_tolerant(log)


def test_score_output_cut_mid_line_resumes_and_a_corrupt_middle_line_is_named(tmp_path):
    out = tmp_path / "scores.jsonl"
    out.write_text('{"id": "a", "label": 4}\n{"id": "b", "label": 3}\n{"id": "c", "la')
    assert done_ids(out) == {"a", "b"}
    assert out.read_text().endswith('"label": 3}\n')  # the cut line is gone, so it is redone
    out.write_text('{"id": "a", "label": 4}\n{"id": "b", "lab\n{"id": "c", "label": 3}\n')
    with pytest.raises(UserError, match=r"scores.jsonl:2: not a score result line"):
        done_ids(out)


@pytest.mark.parametrize("damage", ["truncate_weights", "truncate_optimizer", "no_state", "cut_state"])
def test_resume_skips_a_truncated_last_checkpoint_for_the_one_before(sft_model_dir, tmp_path, damage):
    """The real checkpoints of the SFT fixture (60 and 120), the last one cut short the ways a kill can."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint-60", "checkpoint-120"):
        shutil.copytree(sft_model_dir / name, run / name)
    assert last_good_checkpoint(run) == str(run / "checkpoint-120")
    last = run / "checkpoint-120"
    if damage == "truncate_weights":
        weights = last / "model.safetensors"
        os.truncate(weights, weights.stat().st_size - 100)
    elif damage == "truncate_optimizer":
        optimizer = last / "optimizer.pt"
        os.truncate(optimizer, optimizer.stat().st_size // 2)
    elif damage == "no_state":
        (last / "trainer_state.json").unlink()
    else:
        state = last / "trainer_state.json"
        state.write_text(state.read_text()[:40])
    assert last_good_checkpoint(run) == str(run / "checkpoint-60")
    assert json.loads((run / "checkpoint-60" / "trainer_state.json").read_text())["global_step"] == 60


@pytest.mark.parametrize("err, argv, expected", [
    (PermissionError(13, "Permission denied", "/srv/out/a.json"), ["eval", "--out", "/srv/out"],
     "--out /srv/out: permission denied: /srv/out/a.json"),
    (OSError(28, "No space left on device"), ["score", "--output", "x"], "No space left on device"),
    (OSError(98, "error while attempting to bind on address ('127.0.0.1', 8080): address already in use"),
     ["serve", "--port", "8080"], "error while attempting to bind on address ('127.0.0.1', 8080): address"),
    (FileNotFoundError(2, "No such file or directory", "/proc/x"), ["run", "r.yaml", "--out=/proc/x"],
     "--out /proc/x: no such file or directory"),
    (FileNotFoundError(2, "No such file or directory", "/elsewhere"), ["run", "--out", "/proc/x"],
     "/elsewhere: no such file or directory"),
])
def test_an_os_error_is_said_in_words_naming_the_option(err, argv, expected):
    from agrl.files import os_error_line

    assert os_error_line(err, argv).startswith(expected)
