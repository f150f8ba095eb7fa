"""The SFT anchor (train/anchor.py, `sft_anchor`) on the tiny model: SFT's target and tokens, weight 0
is today's trainer bit for bit, and a weight > 0 adds exactly the weighted SFT loss's gradient.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_anchor.py
"""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, SFTConfig, SFTTrainer

from agrl import synth
from agrl.output import LABEL_OPEN
from agrl.rewards import completion_text, reward_funcs
from agrl.rules import RulesEngine
from agrl.schemes import load_scheme
from agrl.train import anchor
from agrl.train.config import ConfigError, load_config
from agrl.train.grpo import CountingGRPOTrainer, grpo_rows
from agrl.train.sft import label_weighted_loss, sft_rows

SCHEME = load_scheme("default")
G = 4


@pytest.fixture(scope="module")
def records():
    return synth.generate(seed=3, sizes={"sft": 0, "rl": 8, "eval_balanced": 0, "eval_wild": 0})["rl"]


def brevity(completions, **kwargs) -> list[float]:
    return [-len(completion_text(c)) / 100 for c in completions]


def make_trainer(model_dir, out, records, weight: float | None, anchored: bool, **overrides):
    """A CountingGRPOTrainer as methods.build_trainer makes it; weight None: today's call (no anchor keywords)."""
    torch.manual_seed(0)
    engine = RulesEngine.from_records(records, SCHEME)
    funcs, weights = reward_funcs(["format_gate", "outcome"], SCHEME)
    funcs, weights = [*funcs, brevity], [*weights, 1.0]  # reward variance from the untrained model's samples
    args = GRPOConfig(**({"output_dir": str(out), "per_device_train_batch_size": 2 * G, "num_generations": G,
                          "max_completion_length": 24, "report_to": "none", "use_cpu": True, "bf16": False,
                          "seed": 0, "reward_weights": weights, "save_strategy": "no", "max_steps": 2,
                          "learning_rate": 1e-3, "beta": 0.0, "logging_steps": 1, "disable_tqdm": True} | overrides))
    extra = {} if weight is None else {"sft_anchor": weight, "sft_label_weight": 10.0}
    return CountingGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=funcs, args=args,
                               train_dataset=Dataset.from_list(grpo_rows(records, engine, anchored=anchored)),
                               processing_class=AutoTokenizer.from_pretrained(model_dir), **extra)


def test_target_is_sfts_text_and_tokens(tiny_model_dir, records, tmp_path):
    """The anchor's (prompt, completion) ids are SFTTrainer's for the same record and text."""
    engine = RulesEngine.from_records(records, SCHEME)
    sft = sft_rows(records[:2], engine)
    rows = grpo_rows(records[:2], engine, anchored=True)
    assert [r["sft_target"] for r in rows] == [r["completion"][0]["content"] for r in sft]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), processing_class=tokenizer,
                         args=SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True),
                         train_dataset=Dataset.from_list(sft))
    for row, example in zip(rows, trainer.train_dataset):
        prompt, completion = anchor.target_ids(tokenizer, row["prompt"], row["sft_target"])
        assert prompt + completion == example["input_ids"]
        assert [-100] * len(prompt) + completion == example["labels"], sorted(example)


def test_weight_zero_is_todays_trainer_bit_for_bit(tiny_model_dir, records, tmp_path):
    torch.set_num_threads(1)
    finals = []
    for name, weight, anchored in (("today", None, False), ("zero", 0.0, True)):
        trainer = make_trainer(tiny_model_dir, tmp_path / name, records, weight, anchored)
        trainer.train()
        finals.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        assert not any("anchor" in key for key in trainer._metrics["train"])
    assert finals[0].keys() == finals[1].keys()
    for key in finals[0]:
        assert torch.equal(finals[0][key], finals[1][key]), key
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert any(not torch.equal(start[k], finals[0][k]) for k in start)  # two steps did train


def sft_loss_sum(model, tokenizer, rows, weight: float) -> tuple[torch.Tensor, int]:
    """SFT's label-weighted NLL, summed over the rows' target tokens, one unpadded row at a time, and the count."""
    loss = label_weighted_loss(tokenizer.encode(LABEL_OPEN, add_special_tokens=False), weight)
    total, count = 0.0, 0
    for row in rows:
        prompt, completion = anchor.target_ids(tokenizer, row["prompt"], row["sft_target"])
        ids = torch.tensor([prompt + completion])
        labels = torch.tensor([[-100] * len(prompt) + completion])
        total = total + loss(model(input_ids=ids), labels, num_items_in_batch=1)
        count += len(completion)
    return total, count


def test_gradient_is_the_sum_of_both_losses(tiny_model_dir, records, tmp_path):
    torch.set_num_threads(1)
    weight = 0.3
    trainer = make_trainer(tiny_model_dir, tmp_path, records, weight, True)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the train loop, which this test bypasses
    rows = [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(G)]  # two prompts, a group each
    inputs = trainer._generate_and_score_completions(rows)
    assert (inputs["anchor_labels"] != -100).any(dim=1).tolist() == [True, False, False, False] * 2
    model = trainer.model

    def grads(loss_of) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    total, g_total = grads(lambda: trainer.compute_loss(model, dict(inputs)))
    rl, g_rl = grads(lambda: trainer._compute_loss(model, dict(inputs)))
    _, count = sft_loss_sum(model, trainer.processing_class, rows[::G], 10.0)
    sft, g_sft = grads(lambda: sft_loss_sum(model, trainer.processing_class, rows[::G], 10.0)[0] / count)
    torch.testing.assert_close(total, rl + weight * sft, atol=1e-5, rtol=1e-5)
    assert g_total.keys() == g_sft.keys()
    for name, grad in g_total.items():
        expected = g_rl.get(name, torch.zeros_like(grad)) + weight * g_sft[name]
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4, msg=name)
    logged = trainer._metrics["train"]
    assert logged["anchor/nll"][-1] == pytest.approx(sft.item(), rel=1e-5)
    assert 0 < logged["anchor/share"][-1] <= 1


def test_anchor_weight_belongs_to_the_anchored_methods(tmp_path):
    base = [f"output_dir={tmp_path}", "model=m", "train_file=t.jsonl"]
    with pytest.raises(ConfigError, match="sft_anchor: must be > 0 for method grpo_anchored"):
        load_config(None, ["method=grpo_anchored", *base])
    with pytest.raises(ConfigError, match="sft_anchor: must be 0 for method grpo"):
        load_config(None, ["method=grpo", "sft_anchor=0.2", *base])
    with pytest.raises(ConfigError, match="sft_anchor: must be >= 0"):
        load_config(None, ["method=agrl_anchored", "sft_anchor=-1", *base])
    method, run, args = load_config(None, ["method=agrl_anchored", "sft_anchor=0.2", *base])
    assert (method, run.sft_anchor, type(args).__name__) == ("agrl_anchored", 0.2, "AGRLConfig")
    assert json.dumps(run.sft_anchor) == "0.2"
