"""The GPU path on CPU (issue 19), so it cannot rot before a session with a device runs it: the speed
levers that must not change results don't (the label-weighted loss on TRL's fused LM head, padding-free
batches), every run of both GPU recipes (full and `--profile dry`) is a valid `agrl train` config, and the
staging script's dry run (bench/gpu_stage.sh dry: the speed ladder, then `agrl run` of both study recipes
with `--profile dry`: a tiny model, a few records and steps) writes its JSONs. The dry run takes ~3 min
on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from agrl.core.output import LABEL_OPEN
from agrl.run.recipe import check_recipe, expand, load_recipe, stage_config
from agrl.core.rules import RulesEngine
from agrl.core.synth import generate
from agrl.model.tiny import init_model
from agrl.train import sft

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return init_model(tmp_path_factory.mktemp("model"), size="tiny", seed=0)


def sft_trainer(model_dir, out, peft_config=None, **config):
    records = generate(seed=0, sizes={"sft": 12, "rl": 0, "eval_balanced": 0, "eval_wild": 0})["sft"]
    rows = sft.sft_rows(records, RulesEngine.from_records(records))
    args = SFTConfig(output_dir=str(out), use_cpu=True, report_to="none", per_device_train_batch_size=6,
                     gradient_checkpointing=False, **config)
    torch.manual_seed(0)
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=Dataset.from_list(rows),
                         peft_config=peft_config)
    trainer.model.eval()  # no dropout: the two losses compare the same function
    return trainer, trainer.processing_class.encode(LABEL_OPEN, add_special_tokens=False)


def batch_of(trainer, count=6):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(count)])


def forwards(trainer):
    calls = []
    trainer.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


@pytest.mark.parametrize("lora", [False, True])
def test_the_fused_label_loss_is_the_full_logits_loss_in_one_forward(tiny, tmp_path, lora):
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM") if lora else None
    trainer, ids = sft_trainer(tiny, tmp_path, peft_config)
    batch = batch_of(trainer)
    calls = forwards(trainer)
    plain = trainer.compute_loss(trainer.model, dict(batch)).item()
    trainer.compute_loss_func = sft.label_weighted_loss(ids, 10.0)  # the run: full logits + a 2nd pass
    reference = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert len(calls) == 3  # one for the plain loss, two for the compute_loss_func
    trainer.compute_loss_func = None
    sft.weigh_label_token(trainer, ids, 10.0)
    fused = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert len(calls) == 4  # one forward
    assert fused == pytest.approx(reference, rel=1e-5)
    assert fused > plain * 1.05  # the label token's loss counts 10x: the hook is what changed the loss


def test_padding_free_batches_give_the_padded_loss(tiny, tmp_path):
    """Same rows, padded or flattened into one row with position ids: the same weighted loss (transformers
    reads the sequence boundaries from the position ids)."""
    losses = []
    for padding_free in (False, True):
        trainer, ids = sft_trainer(tiny, tmp_path / str(padding_free), padding_free=padding_free, max_length=None)
        sft.weigh_label_token(trainer, ids, 10.0)
        batch = batch_of(trainer)
        assert ("attention_mask" in batch) != padding_free
        losses.append(trainer.compute_loss(trainer.model, dict(batch)).item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


@pytest.mark.parametrize("recipe", ["configs/gpu/home_depot.yaml", "configs/gpu/synthetic.yaml"])
@pytest.mark.parametrize("profile", [None, "dry"])
def test_every_run_of_a_gpu_recipe_is_a_valid_training_config(recipe, profile, tmp_path):
    """Each run of the recipe (every seed and grid point) loads as an `agrl train` config (check_recipe: the
    TRL parser checks every key and type), with no key the GPU host's transformers 5.17 lacks; every RL run
    starts from the one SFT run."""
    imported = tmp_path / "import"
    imported.mkdir()
    for split in ("train", "validation", "test"):
        (imported / f"{split}.jsonl").write_text("")
    from agrl.model.tiny import base_judge_dir

    sets = [f"model.path={base_judge_dir('tiny-base')}", *([f"data.dir={imported}"] if "home_depot" in recipe else [])]
    spec = load_recipe(ROOT / recipe, profile, sets)
    check_recipe(spec, tmp_path / "out")
    runs = expand(spec)
    assert {run["from"] for name, run in runs.items() if name != "sft"} == {"sft"}
    for name in runs:
        keys = stage_config(spec, name, tmp_path / "out", runs)
        assert "activation_checkpointing" not in keys and keys["gradient_checkpointing"] is False
        assert keys["bf16"] is (profile is None)


def test_the_dry_run_of_the_staging_script_writes_every_json(tmp_path):
    env = os.environ | {"PYTHON": sys.executable, "WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out"),
                        "DRY_ONLY": "sft,grpo,agrl", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "bench/gpu_stage.sh", "dry"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    speed = json.loads((tmp_path / "out" / "gpu_speed.json").read_text())
    assert set(speed["sft"]) == {"issue", "fused_label_loss"}
    for row in speed["sft"].values():
        assert 0 < row["pad_share"] < 1 and row["tokens_per_s"] > 0 and row["tflops"] > 0
    assert speed["grpo"]["agrl"]["median_step_s"] > 0
    hd = json.loads((tmp_path / "out" / "results_home_depot_dry.json").read_text())
    runs = {run["name"]: run for run in hd["runs"]}
    assert set(runs) == {"sft", "grpo-learning_rate=1e-05-s0", "agrl-learning_rate=1e-05-s0", "grpo-s1", "agrl-s1"}
    assert hd["choices"] == {"grpo": {"learning_rate": 1e-05}, "agrl": {"learning_rate": 1e-05}}
    for run in runs.values():  # every final run scored on validation and test, every RL seed from the one SFT
        assert set(run["scores"]) == {"validation", "test"} and run["scores"]["test"]["metrics"]["scored"] > 0
        assert run["config"]["model"].endswith("/sft") or run["name"] == "sft"
    assert hd["baselines"]["tfidf"]["test"]["metrics"]["n"] == runs["sft"]["scores"]["test"]["metrics"]["n"] > 0
    report = (tmp_path / "work" / "dry_home_depot" / "report" / "report.md").read_text()
    assert "## test (one-pass scores): pooled over seeds" in report and "| baseline:tfidf | 1 |" in report
    assert "- agrl - grpo, macro_f1:" in report
    synthetic = json.loads((tmp_path / "out" / "results_synthetic_dry.json").read_text())
    runs = {run["name"]: run for run in synthetic["runs"]}
    agrl_seed0 = runs["agrl-learning_rate=1e-05-s0"]
    assert set(agrl_seed0["evals"]) == {"eval_balanced", "eval_wild"}
    assert "agr/flagged_share" in agrl_seed0["counters"] and "macro_f1" in agrl_seed0["evals"]["eval_wild"]["metrics"]
    sft_rows = (tmp_path / "work" / "dry_synthetic" / "data" / "sft.jsonl").read_text().splitlines()
    assert len(sft_rows) == 80 and sum("-add1" in row for row in sft_rows) == 40  # the clean set, then the noisy rows
