"""LoRA via PEFT in every stage (train/lora.py) and adapter directories as models (models.py).

The keys are checked in milliseconds; the rest trains the tiny model a few steps: LoRA SFT from the
SFT'd tiny model, then DPO and AGRL continuing that adapter, a kill-and-resume of a LoRA run, the
merge, and eval/score/serve on an adapter directory.
    pytest -m slow tests/test_lora.py          (about 2 minutes on 2 cores)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training import ONE_THREAD, train_one_thread
from typer.testing import CliRunner

from agrl.model import load as models
from agrl.cli import app
from agrl.files import read_jsonl_tolerant
from agrl.train import train
from agrl.train.common import METRICS_FILE
from agrl.train.config import ConfigError, load_config
from agrl.train.lora import lora_config

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "agrl" / "recipes" / "stages"  # the shipped stages
SMALL = ["disable_tqdm=true", "report_to=none", "logging_steps=1"]
LORA = ["lora_r=8", "lora_alpha=16", "lora_dropout=0.0"]


# ---------------------------------------------------------------------------- keys


def test_lora_keys_parse_and_build_a_peft_config():
    _, run, _ = load_config(CONFIGS / "sft.yaml", ["lora_r=16", "lora_target_modules=[q_proj, v_proj]"])
    config = lora_config(run)
    assert (config.r, config.lora_alpha, sorted(config.target_modules)) == (16, 32, ["q_proj", "v_proj"])
    _, run, _ = load_config(CONFIGS / "grpo.yaml", ["lora_r=4"])
    assert lora_config(run).target_modules == "all-linear"  # the default, as PEFT's shorthand
    _, run, _ = load_config(CONFIGS / "dpo.yaml")
    assert run.lora_r == 0 and lora_config(run) is None  # no key: full fine-tuning, as before


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lora_r=-1"], "lora_r: must be >= 0"),
        (["lora_r=8", "lora_alpha=0"], "lora_alpha: must be > 0"),
        (["lora_dropout=1.0"], "lora_dropout: must be in [0, 1)"),
        (["lora_r=8", "lora_target_modules=[]"], "must be at least one module"),
        (["lora_alhpa=8"], "did you mean 'lora_alpha'"),
        (["lora_r=eight"], "invalid int value"),
    ],
)
def test_bad_lora_keys_fail_before_any_work(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "agrl.yaml", overrides)
    assert message in str(err.value)


# ---------------------------------------------------------------------------- training (slow)


def adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def lora_sft(sft_model_dir, small_bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "sft"
    train(CONFIGS / "sft.yaml", [f"model={sft_model_dir}", f"train_file={small_bench / 'sft.jsonl'}",
                                 f"output_dir={out}", "max_steps=4", "per_device_train_batch_size=8",
                                 "learning_rate=5e-3", "warmup_steps=0", "save_steps=4", *SMALL, *LORA])
    return out


@pytest.mark.slow
def test_lora_sft_saves_an_adapter_on_the_absolute_base(lora_sft, sft_model_dir):
    assert models.is_adapter(lora_sft) and not (lora_sft / "model.safetensors").exists()
    assert models.adapter_base(lora_sft) == str(Path(sft_model_dir).resolve())
    weights = adapter(lora_sft)
    # PEFT starts lora_B at zero: non-zero B matrices mean the adapter, and only it, trained
    assert any(w.abs().sum() > 0 for name, w in weights.items() if "lora_B" in name)
    assert {name.split(".")[-3] for name in weights} >= {"q_proj", "v_proj", "down_proj"}  # all-linear
    rows = [row for row in read_jsonl_tolerant(lora_sft / METRICS_FILE) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert models.is_adapter(lora_sft / "checkpoint-4")


@pytest.mark.slow
def test_lora_dpo_continues_the_sft_adapter(lora_sft, small_bench, tmp_path):
    out = tmp_path / "dpo"
    train(CONFIGS / "dpo.yaml", [f"model={lora_sft}", f"train_file={small_bench / 'rl.jsonl'}",
                                 f"output_dir={out}", "max_train_records=6", "dpo_max_new_tokens=64",
                                 "max_steps=2", "per_device_train_batch_size=2", "save_steps=2", *SMALL, *LORA])
    assert models.adapter_base(out) == models.adapter_base(lora_sft)  # still one adapter on the same base
    before, after = adapter(lora_sft), adapter(out)
    assert any(not before[name].equal(after[name]) for name in before)
    assert any("rewards/margins" in row for row in read_jsonl_tolerant(out / METRICS_FILE))


@pytest.mark.slow
def test_lora_agrl_trains_the_adapter_and_guided_logps_go_through_it(lora_sft, small_bench, tmp_path):
    from agrl.train.methods import build_trainer

    out = tmp_path / "agrl"
    overrides = [f"model={lora_sft}", f"train_file={small_bench / 'rl.jsonl'}", f"output_dir={out}",
                 "max_steps=2", "per_device_train_batch_size=8", "num_generations=4", "agr_k=2",
                 "max_completion_length=64", "save_steps=2", *SMALL, *LORA]
    # The trainer's own log-prob pass (the one AGR's guided old log-probs use) runs the adapter.
    method, run, args = load_config(CONFIGS / "agrl.yaml", overrides)
    trainer = build_trainer(method, run, args)
    ids = torch.tensor([[5, 17, 40, 9, 33, 12, 7, 8]])
    mask = torch.ones_like(ids)
    with_adapter = trainer._logps(ids[:, :4], mask[:, :4], ids[:, 4:], mask[:, 4:])
    with trainer.model.disable_adapter():
        without = trainer._logps(ids[:, :4], mask[:, :4], ids[:, 4:], mask[:, 4:])
    assert not torch.allclose(with_adapter, without)
    del trainer

    train(CONFIGS / "agrl.yaml", overrides)
    rows = [row for row in read_jsonl_tolerant(out / METRICS_FILE) if "reward" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert all(any(key.startswith("agr/") for key in row) for row in rows)
    before, after = adapter(lora_sft), adapter(out)
    assert any(not before[name].equal(after[name]) for name in before)
    assert (out / "checkpoint-2" / "agr_state.json").exists() and models.is_adapter(out / "checkpoint-2")


@pytest.mark.slow
def test_lora_run_resumes_after_a_kill(sft_model_dir, small_bench, tmp_path, kill_after_first_checkpoint):
    """SIGKILL after the first adapter checkpoint; the rerun resumes and ends on an unbroken run's adapter."""
    common = [f"model={sft_model_dir}", f"train_file={small_bench / 'sft.jsonl'}", "max_steps=4",
              "per_device_train_batch_size=8", "learning_rate=5e-3", "warmup_steps=0", "save_steps=1",
              *SMALL, *LORA]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "agrl", "train", str(CONFIGS / "sft.yaml")]
    cmd += [item for o in common + [f"output_dir={out}"] for item in ("--set", o)]
    env = dict(os.environ, **ONE_THREAD)
    kill_after_first_checkpoint(cmd, out, env)
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stderr
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4

    straight = tmp_path / "straight"  # the same thread count as the killed run: the same sums, bit for bit
    train_one_thread(CONFIGS / "sft.yaml", common + [f"output_dir={straight}"])
    resumed, expected = adapter(out), adapter(straight)
    assert all(resumed[name].equal(expected[name]) for name in expected)


@pytest.mark.slow
def test_merge_equals_the_adapter_and_scoring_takes_an_adapter_dir(lora_sft, sft_model_dir, small_bench, tmp_path):
    from fastapi.testclient import TestClient

    from agrl.model.score import Scorer
    from agrl.serve.app import create_app

    runner = CliRunner()
    merged = tmp_path / "merged"
    result = runner.invoke(app, ["model", "merge", str(lora_sft), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert not models.is_adapter(merged) and (merged / "model.safetensors").exists()
    peft_model = models.load_model(lora_sft).eval()  # base + adapter, unmerged
    plain = models.load_model(merged).eval()
    ids = torch.tensor([[2, 40, 17, 5, 9, 33, 12, 7, 8, 1]])
    with torch.no_grad():
        gap = (peft_model(ids).logits - plain(ids).logits).abs().max().item()
    assert gap < 1e-5
    bad = runner.invoke(app, ["model", "merge", str(sft_model_dir), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a LoRA adapter directory" in bad.output

    records = small_bench / "eval_wild.jsonl"
    result = runner.invoke(app, ["score", "--model", str(lora_sft), "--input", str(records),
                                 "--output", str(tmp_path / "scores.jsonl")])
    assert result.exit_code == 0, result.output
    from_adapter = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    from agrl.data.records import load_records

    rows = load_records(records)
    from_merged = Scorer(merged, device="cpu").score(rows)
    from_base = Scorer(sft_model_dir, device="cpu").score(rows)
    assert len(from_adapter) == len(rows)
    for got, want, base in zip(from_adapter, from_merged, from_base):
        for code, p in want.probabilities.items():
            assert got["probabilities"][str(code)] == pytest.approx(p, abs=1e-5)
    assert any(abs(b.score - m.score) > 1e-4 for b, m in zip(from_base, from_merged))  # the adapter counts

    with TestClient(create_app(Scorer(lora_sft, device="cpu"), model_name=str(lora_sft))) as client:
        item = {"title": rows[0].product.title}
        response = client.post("/v1/score", json={"query": rows[0].query, "items": [item]})
    assert response.status_code == 200 and set(response.json()["results"][0]["probabilities"]) == {"1", "2", "3", "4"}

    result = runner.invoke(app, ["eval", "--model", str(lora_sft), "--data", str(records), "--out",
                                 str(tmp_path / "eval.json"), "--limit", "4", "--max-new-tokens", "48",
                                 "--resamples", "10"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == min(4, len(rows))
