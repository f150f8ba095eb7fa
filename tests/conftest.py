"""Shared fixtures. Tests never reach a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import signal
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Llama model + tokenizer in HF format (tokenizer from the synthetic benchmark), once per session."""
    from agrl.model.tiny import init_model

    return init_model(tmp_path_factory.mktemp("tiny_model"), size="tiny", seed=0)


# ---------------------------------------------------------------------------- training (Helper T1)


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory):
    """A small synthetic benchmark written as sft/rl/eval_*.jsonl (the demo's layout)."""
    from agrl.core import synth

    out = tmp_path_factory.mktemp("bench")
    synth.write(out, synth.generate(seed=0, sizes={"sft": 192, "rl": 48, "eval_balanced": 8, "eval_wild": 8}))
    return out


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir, small_bench, tmp_path_factory):
    """The tiny model after 120 SFT steps (~30 s on one core) through the shipped `sft` stage: some of its samples
    are well-formed, so RL groups have reward variance. The run dir also holds metrics.jsonl and checkpoints."""
    from agrl.train import train

    out = tmp_path_factory.mktemp("sft") / "run"
    config = "sft"  # the shipped stage, by its name (agrl/recipes/stages/sft.yaml)
    train(config, [f"model={tiny_model_dir}", f"train_file={small_bench / 'sft.jsonl'}", f"output_dir={out}",
                   "max_steps=120", "per_device_train_batch_size=16", "learning_rate=3e-3", "warmup_steps=5",
                   "save_steps=60", "logging_steps=20", "disable_tqdm=true", "report_to=none"])
    return out


@pytest.fixture
def kill_after_first_checkpoint():
    """Start a training command and SIGKILL it once OUT/checkpoint-1 is complete (before checkpoint-4)."""

    def run(cmd: list[str], out, env: dict, timeout: float = 180) -> None:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while not (out / "checkpoint-1" / "trainer_state.json").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "checkpoint-4").exists(), "killed too late to test a resume"

    return run


# ---------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def start_service():
    """`url = start_service(app)`: the app under uvicorn on a free 127.0.0.1 port in a thread, stopped with
    the module. Extra keyword arguments go to uvicorn.Config."""
    import socket
    import threading

    import uvicorn

    running = []

    def start(app, **config) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)
