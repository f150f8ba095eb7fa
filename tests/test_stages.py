"""Each training stage end to end on the tiny model and a small synthetic benchmark, via the shipped
configs with --set overrides; plus kill-and-resume. The SFT stage runs in the `sft_model_dir` fixture
(conftest.py), which the other stages start from. About a minute: pytest tests/test_stages.py
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from training import ONE_THREAD, one_thread_env, train_command, train_one_thread

from agrl.files import read_jsonl_tolerant
from agrl.train import train
from agrl.train.common import METRICS_FILE

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[1] / "src" / "agrl" / "recipes" / "stages"  # the shipped stages
SMALL = ["disable_tqdm=true", "report_to=none", "logging_steps=1", "save_steps=2"]


def changed(before: Path, after: Path) -> bool:
    start, end = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    return any(not start[name].equal(end[name]) for name in start)


def test_sft(tiny_model_dir, sft_model_dir):
    assert changed(tiny_model_dir, sft_model_dir)
    rows = [row for row in read_jsonl_tolerant(sft_model_dir / METRICS_FILE) if "loss" in row]
    assert [row["step"] for row in rows] == [20, 40, 60, 80, 100, 120]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns the format
    assert (sft_model_dir / "config.yaml").exists() and (
        sft_model_dir / "checkpoint-120" / "trainer_state.json"
    ).exists()


def test_dpo(sft_model_dir, small_bench, tmp_path):
    out = tmp_path / "dpo"
    train(
        CONFIGS / "dpo.yaml",
        [
            f"model={sft_model_dir}",
            f"train_file={small_bench / 'rl.jsonl'}",
            f"output_dir={out}",
            "max_train_records=8",
            "dpo_samples=4",
            "dpo_max_new_tokens=96",
            "max_steps=2",
            "per_device_train_batch_size=2",
            *SMALL,
        ],
    )
    assert changed(sft_model_dir, out)
    summary = json.loads((out / "pairs_summary.json").read_text())
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert summary["self_correction"] + summary["oracle"] == len(pairs) > 0
    assert summary["self_correction"] + summary["oracle"] + summary["no_wrong_sample"] == 8
    for pair in pairs:  # an oracle pair's chosen answer is the gold rendering, never a wrong sample
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
    rows = read_jsonl_tolerant(out / METRICS_FILE)
    assert rows[0]["step"] == 0 and rows[0]["dpo_pairs/oracle"] == summary["oracle"]
    assert any("rewards/margins" in row for row in rows)


RL_TERMS = {
    "grpo": ["format_gate", "outcome"],
    "grpo_dynamic": ["format_gate", "outcome"],
    "grpo_pr": ["format_gate", "outcome", "step", "adherence"],
    "agr_only": ["format_gate", "outcome"],
    "agrl": ["format_gate", "outcome", "step", "adherence"],
}


@pytest.mark.parametrize("name", list(RL_TERMS))
def test_rl_stages(name, sft_model_dir, small_bench, tmp_path):
    if name in ("agr_only", "agrl"):
        pytest.importorskip("agrl.train.agr")
    out = tmp_path / name
    train(
        CONFIGS / f"{name}.yaml",
        [
            f"model={sft_model_dir}",
            f"train_file={small_bench / 'rl.jsonl'}",
            f"output_dir={out}",
            "max_steps=2",
            "per_device_train_batch_size=8",
            "num_generations=4",
            "max_completion_length=96",
            "temperature=0.7",
            *SMALL,
            *(["report_to=[tensorboard]"] if name == "grpo" else []),
        ],
    )
    rows = [row for row in read_jsonl_tolerant(out / METRICS_FILE) if "reward" in row]
    assert [row["step"] for row in rows] == [1, 2]
    for term in RL_TERMS[name]:
        assert all(f"rewards/{term}/mean" in row for row in rows), term
    assert all(-1.0 <= row["rewards/format_gate/mean"] <= 0.0 for row in rows)
    # some completion passed the parser: TRL's decoding (skip_special_tokens) kept our <label>/<think> tags
    assert any(row["rewards/format_gate/mean"] > -1.0 for row in rows)
    if name == "grpo_dynamic":  # the dropped share is exactly the share of zero-variance groups
        assert all(
            row["dynamic_sampling/dropped_groups"] == pytest.approx(row["frac_reward_zero_std"])
            for row in rows
        )
    # the mechanism counters the method study reads from metrics.jsonl, for every GRPO-family run
    assert all(0.0 <= row["groups/all_wrong"] <= 1.0 and 0.0 <= row["groups/all_right"] <= 1.0 for row in rows)
    assert all("groups/all_wrong_hard" in row or "groups/all_wrong_common" in row for row in rows)
    if name in ("agr_only", "agrl"):
        assert all(any(key.startswith("agr/") for key in row) for row in rows)
    # the SFT'd model samples some well-formed answers: some group has an advantage to learn from
    assert any(row["frac_reward_zero_std"] < 1.0 for row in rows)
    assert changed(sft_model_dir, out)
    assert json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["global_step"] == 2
    if name == "grpo":
        assert list(out.glob("runs/*/events.out.tfevents.*"))  # report_to=tensorboard


def _command(config: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "agrl", "train", config] + [
        item for o in overrides for item in ("--set", o)
    ]


def test_kill_and_resume(sft_model_dir, small_bench, tmp_path, kill_after_first_checkpoint):
    """SIGKILL after the first checkpoint; the same command resumes from it and ends where an unbroken run ends."""
    common = [
        f"model={sft_model_dir}",
        f"train_file={small_bench / 'rl.jsonl'}",
        "max_steps=4",
        "per_device_train_batch_size=8",
        "num_generations=4",
        "max_completion_length=96",
        "temperature=0.7",
        *SMALL,
        "save_steps=1",
    ]
    out = tmp_path / "killed"
    cmd = _command(str(CONFIGS / "grpo_pr.yaml"), common + [f"output_dir={out}"])
    env = dict(os.environ, **ONE_THREAD)
    kill_after_first_checkpoint(cmd, out, env)
    last = max(
        int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()
    )

    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from {out / f'checkpoint-{last}'}" in result.stderr
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    resumed = [row for row in read_jsonl_tolerant(out / METRICS_FILE) if "reward" in row]
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]  # rows past the checkpoint were not duplicated

    # An unbroken run of the same config: same data order and sampling after the resume point.
    straight = tmp_path / "straight"  # in a subprocess with the killed run's thread count
    train_one_thread(CONFIGS / "grpo_pr.yaml", common + [f"output_dir={straight}"])
    expected = [row for row in read_jsonl_tolerant(straight / METRICS_FILE) if "reward" in row]
    for got, want in zip(resumed[last:], expected[last:]):
        assert got["completions/mean_length"] == want["completions/mean_length"]
        assert got["reward"] == pytest.approx(want["reward"])


# ---------------------------------------------------------------------------- kills inside a save, at random

KILLABLE = {  # a short run of each trainer, a checkpoint every step (TRL's SFT, DPO, and AGRL on TRL's GRPO)
    "sft": ("sft.yaml", "sft.jsonl", ["per_device_train_batch_size=8", "learning_rate=5e-3", "warmup_steps=0"]),
    "dpo": ("dpo.yaml", "rl.jsonl", ["max_train_records=6", "dpo_samples=2", "dpo_max_new_tokens=48",
                                     "per_device_train_batch_size=2"]),
    "agrl": ("agrl.yaml", "rl.jsonl", ["per_device_train_batch_size=8", "num_generations=4", "agr_k=2",
                                       "max_completion_length=48", "temperature=0.7"]),
}


def _kill_overrides(stage, model, bench, out) -> list[str]:
    _, data, extra = KILLABLE[stage]
    return [f"model={model}", f"train_file={bench / data}", f"output_dir={out}", "max_steps=3", "save_steps=1",
            "disable_tqdm=true", "report_to=none", "logging_steps=1", *extra]


@pytest.fixture(scope="module")
def straight_run(sft_model_dir, small_bench, tmp_path_factory):
    """`straight_run(stage)`: (the stage's unbroken run, one thread in a subprocess, its wall seconds), once."""
    done = {}

    def run(stage: str) -> tuple[Path, float]:
        if stage not in done:
            out, started = tmp_path_factory.mktemp("straight") / stage, time.time()
            train_one_thread(CONFIGS / KILLABLE[stage][0], _kill_overrides(stage, sft_model_dir, small_bench, out))
            done[stage] = out, time.time() - started
        return done[stage]

    return run


def _final_weights(out: Path) -> dict:
    return load_file(out / "model.safetensors")


def _resume_and_compare(stage, out, straight, overrides) -> str:
    """Rerun the killed command to the end; it equals the unbroken run. Returns the checkpoint it resumed."""
    result = subprocess.run(train_command(CONFIGS / KILLABLE[stage][0], overrides), env=one_thread_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    picked = re.search(r"resuming from (\S+)", result.stderr)
    got, want = _final_weights(out), _final_weights(straight)
    assert all(got[name].equal(want[name]) for name in want), f"{stage}: resumed != unbroken"
    steps = [row["step"] for row in read_jsonl_tolerant(out / METRICS_FILE) if "loss" in row]
    assert steps == sorted(set(steps)), steps  # no step logged twice
    return picked.group(1) if picked else ""


@pytest.mark.parametrize("stage, point", [("sft", "state"), ("dpo", "state"), ("agrl", "state"),
                                          ("agrl", "weights"), ("sft", "optimizer")])
def test_a_kill_inside_a_checkpoint_save_resumes_from_a_complete_one(stage, point, sft_model_dir, small_bench,
                                                                     tmp_path, straight_run):
    """SIGKILL inside checkpoint-2's save. A checkpoint counts once complete, the trainer's own state
    included (AGRL's agr_state.json): a cut one is skipped for checkpoint-1, and either way the run ends
    on the unbroken run's weights."""
    straight, _ = straight_run(stage)
    out = tmp_path / "killed"
    overrides = _kill_overrides(stage, sft_model_dir, small_bench, out)
    killer = [sys.executable, str(Path(__file__).parent / "kill_in_save.py"), point, "2", "--",
              *train_command(CONFIGS / KILLABLE[stage][0], overrides)[3:]]
    killed = subprocess.run(killer, env=one_thread_env(), capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    expected = out / ("checkpoint-2" if point == "state" else "checkpoint-1")
    resumed = {p.name for p in expected.iterdir()}  # now: the rerun's save_total_limit rotates it away
    picked = _resume_and_compare(stage, out, straight, overrides)
    assert picked == str(expected)
    last = max(straight.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = {p.name for p in last.iterdir()}
    assert complete <= resumed, f"resumed from a checkpoint without {sorted(complete - resumed)}"


def test_a_kill_at_random_points_resumes_to_the_unbroken_result(sft_model_dir, small_bench, tmp_path, straight_run):
    """AGRL killed twice at seeded random moments of its run (anywhere: loading, generating, mid-save,
    mid-log), then run to the end: the unbroken run's weights, and each step logged once."""
    straight, span = straight_run("agrl")
    out = tmp_path / "killed"
    overrides = _kill_overrides("agrl", sft_model_dir, small_bench, out)
    cmd = train_command(CONFIGS / "agrl.yaml", overrides)
    rng = random.Random(28)
    for _ in range(2):
        proc = subprocess.Popen(cmd, env=one_thread_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.95) * span)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    _resume_and_compare("agrl", out, straight, overrides)
