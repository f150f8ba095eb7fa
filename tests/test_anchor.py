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

from agrl.core import synth
from agrl.core.output import LABEL_OPEN
from agrl.core.rewards import completion_text, reward_funcs
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme
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


# ---------------------------------------------------------------------------- the study's report (bench/anchor.py)


def _bench_anchor():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "anchor.py"
    spec = importlib.util.spec_from_file_location("bench_anchor", path)
    module = sys.modules.setdefault("bench_anchor", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def _run(method: str, seed: int, pred: list[int], weight: float | None = None, sweep: bool = False) -> dict:
    gold = [1, 2, 3, 4] * (len(pred) // 4)
    cols = {"gold": gold, "pred": pred, "family": ["brand", "negation"] * (len(pred) // 2),
            "adheres": [1] * len(pred), "step_accuracy": [0.5] * len(pred)}
    metrics = {"macro_f1": sum(g == p for g, p in zip(gold, pred)) / len(pred), "step_accuracy": 0.5}
    config = {"method": method, "seed": seed, "learning_rate": 2e-4, "max_steps": 50,
              "per_device_train_batch_size": 32, "num_generations": 4} | ({"sft_anchor": weight} if weight else {})
    counters = {} if method == "sft" else {"groups/all_wrong": [[s, 0.3 if s <= 3 else 0.1] for s in range(1, 10)],
                                          "step_time": [[1, 2.0], [2, 4.0], [3, 3.0]]}
    if weight:
        counters |= {"anchor/nll": [[s, 0.2] for s in range(1, 10)], "anchor/share": [[s, 0.5] for s in range(1, 10)]}
    return {"name": f"{method}-s{seed}", "stage": method, "seed": seed, "sweep": sweep, "config": config,
            "counters": counters, "cost": {"train": {"wall_s": 60.0}},
            "eval": {s: {"metrics": metrics, "columns": cols} for s in ("eval_balanced", "eval_wild", "validation")},
            "choices": {"grpo_anchored": {"sft_anchor": 0.2}, "agrl_anchored": {"sft_anchor": 0.05}},
            "date": "2026-12-06T14:00:00", "machine": {"platform": "test", "cpus": 2}, "threads": 1, "resamples": 20}


def test_the_report_names_counters_collapse_and_the_sweep():
    bench = _bench_anchor()
    right = [1, 2, 3, 4] * 10
    collapsed = [4] * 30 + [1, 2, 3, 4] * 2 + [1, 1]  # 32 of 40 predictions the label 4
    runs = [_run("sft", s, right) for s in (0, 1)] + [_run("grpo", s, collapsed) for s in (0, 1)]
    runs += [_run("agrl", s, right) for s in (0, 1)]
    runs += [_run("grpo_anchored", s, right, 0.2, sweep=s == 0) for s in (0, 1)]
    runs += [_run("agrl_anchored", s, right, 0.05, sweep=s == 0) for s in (0, 1)]
    runs.append(_run("grpo_anchored", 0, collapsed, 0.05, sweep=True) | {"eval": {"validation": runs[2]["eval"]["validation"]}})
    text = bench.report(runs, "test")
    counters = text.split("## Mechanism counters")[1].split("## Anchor weight sweep")[0]
    row = {line.split(" | ")[0]: line for line in counters.splitlines() if line.startswith("| ")}
    assert "| 80.0% / 80.0% |" in row["| grpo"] and "| 25.0% / 25.0% |" in row["| grpo_anchored"]
    assert "30.0% / 10.0%" in row["| grpo"] and "| 3.0 |" in row["| grpo"]  # all-wrong thirds, median s/step
    assert "0.200 / 0.200 | 50% |" in row["| grpo_anchored"] and "| – | – |" in row["| grpo"]
    assert "- grpo_anchored - grpo: macro_f1 +" in text  # the anchored run is right where GRPO collapsed
    assert "| grpo_anchored | 17.5 | 100.0 | 0.2 |" in text  # the sweep: validation macro-F1 by weight


def test_the_committed_anchor_study_gives_the_docs_cells():
    """docs/results.md's SFT-anchor table: each macro-F1 and step-accuracy cell's mean ±std is the library's
    pooled cell over the committed per-run files (the interval needs the full bootstrap, bench/anchor.py)."""
    import re
    from pathlib import Path

    bench = _bench_anchor()
    groups = bench.finals(bench.load(bench.RESULTS))
    assert set(groups) == set(bench.METHODS)
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    section = text.split("## Quality: the SFT anchor")[1].split("\n## ")[0]
    names = {"SFT (start)": "sft", "GRPO": "grpo", "GRPO + anchor 0.2": "grpo_anchored", "AGRL": "agrl",
             "AGRL + anchor 0.2": "agrl_anchored"}
    for name, method in names.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {name} |")).split(" | ")
        stats = {split: bench.table({method: groups[method]}, split, 0)[method] for split in ("eval_balanced", "eval_wild")}
        for split, cell in (("eval_balanced", row[1]), ("eval_wild", row[2])):
            mean, std = re.match(r"([\d.]+) \[.*\] ±([\d.]+)", cell).groups()
            pooled = stats[split]["macro_f1"]
            assert (f"{100 * pooled['mean']:.1f}", f"{100 * pooled['std']:.1f}") == (mean, std), (name, split)
        steps = " / ".join(f"{100 * stats[s]['step_accuracy']['mean']:.1f}" for s in ("eval_balanced", "eval_wild"))
        assert row[-1].rstrip(" |") == steps, name
