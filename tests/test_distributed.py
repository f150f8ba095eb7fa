"""GRPO-family training under torchrun: 2 CPU processes (gloo), prompt groups straddling the ranks.

per_device_train_batch_size=3 with num_generations=2 puts 3 groups on 2 ranks, so group 1 has one
completion on each rank: rewards, advantages, dynamic sampling and AGR must all work on gathered groups.
    pytest -m slow tests/test_distributed.py
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agrl.files import read_jsonl_tolerant
from agrl.train.common import METRICS_FILE

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGES = Path(__file__).resolve().parents[1] / "src" / "agrl" / "recipes" / "stages"


def torchrun(config: str, overrides: list[str]) -> subprocess.CompletedProcess:
    torchrun_bin = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    sets = [item for o in overrides for item in ("--set", o)]
    # --standalone: a local rendezvous on a free port, so parallel sessions do not collide
    cmd = [torchrun_bin, "--standalone", "--nproc_per_node", "2", "-m", "agrl", "train", config, *sets]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    # a session of its own, so a hung run's workers are killed with it
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("name", ["grpo_dynamic", "agrl"])
def test_two_processes_with_straddling_groups(name, sft_model_dir, small_bench, tmp_path):
    if name == "agrl":
        pytest.importorskip("agrl.train.agr")
    out = tmp_path / name
    result = torchrun(
        str(STAGES / f"{name}.yaml"),
        [
            f"model={sft_model_dir}",
            f"train_file={small_bench / 'rl.jsonl'}",
            f"output_dir={out}",
            "max_steps=2",
            "per_device_train_batch_size=3",
            "num_generations=2",
            "agr_k=1" if name == "agrl" else "seed=0",
            "max_completion_length=96",
            "temperature=0.7",
            "logging_steps=1",
            "save_steps=2",
            "disable_tqdm=true",
        ],
    )
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-3000:]
    rows = [row for row in read_jsonl_tolerant(out / METRICS_FILE) if "reward" in row]
    assert [row["step"] for row in rows] == [1, 2]  # rank 0 alone writes metrics.jsonl
    for row in rows:
        # 6 completions over 2 ranks = 3 groups per step: shares come in thirds
        assert round(row["frac_reward_zero_std"] * 3, 4) == round(row["frac_reward_zero_std"] * 3)
        if name == "grpo_dynamic":
            assert row["dynamic_sampling/dropped_groups"] == pytest.approx(
                row["frac_reward_zero_std"], abs=1e-6
            )
        else:
            assert any(key.startswith("agr/") for key in row)
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and (out / "model.safetensors").exists()


def test_accelerate_ddp_config_with_lora(sft_model_dir, small_bench, tmp_path):
    """configs/accelerate/ddp.yaml as users launch it (accelerate launch, torch's launcher underneath), on 2
    CPU processes with gloo: LoRA AGRL, groups straddling the ranks, one adapter saved by rank 0."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    with socket.socket() as sock:  # a free port: parallel sessions must not share a rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "agrl_lora"
    sets = [f"model={sft_model_dir}", f"train_file={small_bench / 'rl.jsonl'}", f"output_dir={out}", "max_steps=2",
            "per_device_train_batch_size=3", "num_generations=2", "agr_k=1", "max_completion_length=64",
            "logging_steps=1", "save_steps=2", "disable_tqdm=true", "lora_r=8"]
    cmd = [accelerate, "launch", "--config_file", str(CONFIGS / "accelerate" / "ddp.yaml"), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", str(port), "-m", "agrl", "train",
           str(STAGES / "agrl.yaml"), *[item for o in sets for item in ("--set", o)]]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-1500:] + stderr[-3000:]
    rows = [row for row in read_jsonl_tolerant(out / METRICS_FILE) if "reward" in row]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:  # 3 groups over 2 ranks per step: the gathered share comes in thirds
        assert round(row["frac_reward_zero_std"] * 3, 4) == round(row["frac_reward_zero_std"] * 3)
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert (out / "checkpoint-2" / "agr_state.json").exists()
