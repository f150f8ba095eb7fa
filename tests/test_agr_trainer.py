"""AGRLTrainer on the tiny model: scripted rollouts for the AGR mechanics, a few real steps end to end.

The scripted generator answers a hard pair wrongly unless its prompt carries guidance at or above
a set level, and an easy pair rightly, so flagging, replacement, advantages and the Guide-GRPO
log-probs can be checked exactly.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_agr_trainer.py
"""

import faulthandler
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from agrl.data.records import Product, Record
from agrl.core.output import Step, render
from agrl.core.prompt import prompt_messages
from agrl.core.rewards import completion_text, reward_funcs
from agrl.core.rules import RulesEngine
from agrl.data.schemes import load_scheme
from agrl.train.agr import STATE_FILE, AGRLConfig, AGRLTrainer
from agrl.train.methods import trainer_class

SCHEME = load_scheme("default")
G = 4

HARD = Record(
    "red nike running shoes",
    Product("Adidas Ultraboost Running Shoe", "Shoes > Running", "adidas", {"color": "red"}),
    id="hard",
    label=2,
    steps={"category": "match", "brand": "mismatch", "attribute.color": "match"},
)
EASY = [
    Record(
        f"shoe rack {i}",
        Product(f"Wooden Shoe Rack {i}", "Home > Storage", "ikea"),
        id=f"easy{i}",
        label=4,
        steps={"category": "match"},
    )
    for i in range(4)
]

ENGINE = RulesEngine.from_records([HARD, *EASY], SCHEME)


def row(record: Record) -> dict:
    return {
        "prompt": prompt_messages(record),
        "label": record.label,
        "steps": json.dumps(record.steps),
        "record": json.dumps(record.to_dict()),
        "id": record.id,
    }


def answer(record: Record, label: int) -> str:
    return render(label, [Step(name, verdict) for name, verdict in record.steps.items()], "")


def brevity(completions, **kwargs) -> list[float]:
    return [-len(completion_text(c)) / 100 for c in completions]


class ScriptedGenerator:
    """Stands in for `_generate_single_turn`: deterministic completions chosen from the prompt text."""

    def __init__(self, tokenizer, solve_level: int = 1):
        self.tokenizer, self.solve_level, self.calls = tokenizer, solve_level, 0

    def level(self, text: str) -> int:
        if "guidance:" not in text:
            return 0
        return 1 + ("verdicts:" in text) + ("| label:" in text)

    def __call__(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        self.calls += 1
        out = []
        for ids in prompt_ids:
            text = self.tokenizer.decode(ids)
            hard = HARD.query in text
            right = not hard or self.level(text) >= self.solve_level
            record = HARD if hard else EASY[0]
            label = record.label if right else 4
            ids = self.tokenizer(answer(record, label), add_special_tokens=False)["input_ids"]
            out.append(ids + [self.tokenizer.eos_token_id])
        return out, None


def build_trainer(model, tokenizer, funcs, args, dataset) -> AGRLTrainer:
    return trainer_class("agrl", args)(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        rules_engine=ENGINE,
        scheme=SCHEME,
    )


def make_trainer(model_dir, tmp_path, mode: str, solve_level: int = 1, **overrides):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    funcs, weights = reward_funcs(["format_gate", "outcome", "step", "adherence"], SCHEME)
    settings = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 2 * G,
        "num_generations": G,
        "max_completion_length": 48,
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
        "temperature": 1.0,
        "reward_weights": weights,
        "agr_mode": mode,
        "agr_k": 2,
        "agr_ratio_clip": 1e6,
        "agr_replay_share": 0.5,
        "save_strategy": "no",
    }
    args = AGRLConfig(**(settings | overrides))
    dataset = Dataset.from_list([row(r) for r in [HARD, *EASY]])
    trainer = build_trainer(model, tokenizer, funcs, args, dataset)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the train loop, which these tests bypass
    generator = ScriptedGenerator(tokenizer, solve_level)
    trainer._generate_single_turn = generator
    return trainer, generator


def batch(*records: Record) -> list[dict]:
    return [row(r) for r in records for _ in range(G)]


def completion_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log p(completion | prompt) per token, from a plain forward pass (independent of TRL)."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
    return logits.log_softmax(-1).gather(1, torch.tensor(completion_ids)[:, None]).squeeze(1)


def chat_ids(tokenizer, messages) -> list[int]:
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def rows_of(output, key_ids, key_mask, i) -> list[int]:
    return output[key_ids][i][output[key_mask][i].bool()].tolist()


def check_guided_rows(trainer, output, guided: list[int], unguided: list[int], level: int, truncated=False):
    """Guided rows: trained on the unguided prompt ids, against old log-probs from a forward pass
    under the guided prompt; the other rows against their own (on-policy) log-probs. Checked on
    what the loss actually uses: the inputs after the parent's _compute_loss has run."""
    tok, model = trainer.processing_class, trainer.model
    plain = chat_ids(tok, prompt_messages(HARD))
    hinted = chat_ids(tok, prompt_messages(HARD, guidance=ENGINE.guidance(HARD, level)))
    assert hinted != plain
    assert output["agr_guided_old"][unguided].isnan().all()  # set by the loss pass
    inputs = dict(output)
    loss = trainer._compute_loss(model, inputs)
    assert torch.isfinite(loss) and "agr_guided_old" not in inputs
    for i in guided + unguided:
        assert rows_of(output, "prompt_ids", "prompt_mask", i) == plain
        completion = rows_of(output, "completion_ids", "completion_mask", i)
        expected = completion_logps(model, hinted if i in guided and not truncated else plain, completion)
        old = inputs["old_per_token_logps"][i, : len(completion)]
        torch.testing.assert_close(old, expected, atol=1e-4, rtol=1e-4)
    right = tok(answer(HARD, HARD.label), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    for i in guided:
        assert rows_of(output, "completion_ids", "completion_mask", i) == right


def test_immediate_replaces_k_lowest_with_guided_rollouts(tiny_model_dir, tmp_path):
    trainer, generator = make_trainer(tiny_model_dir, tmp_path, "immediate")
    output = trainer._generate_and_score_completions(batch(HARD, EASY[0]))
    assert generator.calls == 2  # the normal pass + one guided pass
    adv = output["advantages"]
    # all-wrong group: ties broken by row, so rows 0 and 1 were replaced; its advantages are no longer zero
    assert adv[:2].min() > 0 and adv[2:4].max() < 0
    assert torch.allclose(adv[G:], torch.zeros(G), atol=1e-3)
    check_guided_rows(trainer, output, guided=[0, 1], unguided=[2, 3], level=1)
    metrics = trainer._metrics["train"]
    assert metrics["agr/guided_group_share"] == [0.5] and metrics["agr/level_1"] == [1.0]
    assert metrics["agr/group_acc_before"] == [0.0] and metrics["agr/group_acc_after"] == [0.5]
    assert list(trainer.replay.buffer) == ["hard"]


@pytest.mark.parametrize(
    "overrides, truncated",
    [
        (
            {"num_iterations": 2},
            False,
        ),  # off-policy setup: the parent's old log-probs, recomputed after replacement
        (
            {"agr_ratio_clip": 1.0},
            True,
        ),  # c = 1 truncates the guided ratio to 1: old = the unguided log-probs
    ],
)
def test_immediate_old_logps_variants(tiny_model_dir, tmp_path, overrides, truncated):
    trainer, _ = make_trainer(tiny_model_dir, tmp_path, "immediate", **overrides)
    output = trainer._generate_and_score_completions(batch(HARD, EASY[0]))
    assert ("old_per_token_logps" in output) == ("num_iterations" in overrides)
    check_guided_rows(trainer, output, guided=[0, 1], unguided=[2, 3], level=1, truncated=truncated)


def test_deferred_reenters_next_batch_without_extra_generation(tiny_model_dir, tmp_path):
    trainer, generator = make_trainer(tiny_model_dir, tmp_path, "deferred")
    first = trainer._generate_and_score_completions(batch(HARD, EASY[0]))
    assert generator.calls == 1 and torch.allclose(first["advantages"][:G], torch.zeros(G))
    assert "old_per_token_logps" not in first  # nothing guided yet: the parent's on-policy path
    second = trainer._generate_and_score_completions(batch(EASY[1], EASY[2]))
    assert generator.calls == 2  # still one generation pass per step
    # the hard prompt took the last group slot: rows 4, 5 unguided (wrong), rows 6, 7 guided (right)
    assert trainer._metrics["train"]["agr/guided_group_share"] == [0.0, 0.5]
    assert second["advantages"][6:].min() > 0 and second["advantages"][4:6].max() < 0
    check_guided_rows(trainer, second, guided=[6, 7], unguided=[4, 5], level=1)


def test_escalation_follows_failure_count(tiny_model_dir, tmp_path):
    # guidance helps only at level 3; the unguided rollouts keep failing, so each round escalates
    trainer, generator = make_trainer(
        tiny_model_dir, tmp_path, "deferred", solve_level=3, agr_replay_delay=50
    )
    trainer._generate_and_score_completions(batch(HARD, EASY[0]))
    for _ in range(4):  # the hard pair now comes back only through replay
        trainer._generate_and_score_completions(batch(EASY[1], EASY[2]))
    metrics = trainer._metrics["train"]
    levels = [[int(metrics[f"agr/level_{n}"][step]) for n in (1, 2, 3)] for step in range(5)]
    assert levels == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert trainer.replay.failures["hard"] == 4
    # only the level-3 round's guided rollouts were right
    assert metrics["agr/group_acc_after"] == [0.0, 0.0, 0.5]
    assert generator.calls == 5


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_real_steps_end_to_end_and_resume(tiny_model_dir, tmp_path, mode):
    """A few real AGRL steps (real sampling) with a checkpoint; resuming restores the replay state.
    An untrained model never writes the format, so a brevity reward gives the groups some spread."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    funcs, weights = reward_funcs(["format_gate", "outcome", "step", "adherence"], SCHEME)
    funcs, weights = [*funcs, brevity], [*weights, 1.0]
    args = AGRLConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2 * G,
        num_generations=G,
        max_completion_length=12,
        max_steps=2,
        save_steps=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        seed=0,
        reward_weights=weights,
        agr_mode=mode,
        agr_threshold_cap=0.0,
    )
    dataset = Dataset.from_list([row(r) for r in [HARD, *EASY]])
    trainer = build_trainer(model, tokenizer, funcs, args, dataset)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "agr/threshold" in entry]
    assert len(logged) == 2 and all(entry["agr/flagged_share"] >= 0 for entry in logged)
    # random init: nothing is ever right, every group is flagged
    assert logged[0]["agr/flagged_share"] == 1.0
    shares = [entry["agr/guided_group_share"] for entry in logged]
    assert shares == ([1.0, 1.0] if mode == "immediate" else [0.0, 0.5])  # deferred: next batch, 1 slot
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    checkpoint = tmp_path / "checkpoint-2"
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    assert saved["round"] == 2 and saved["buffer"]
    args.max_steps = 3
    resumed = build_trainer(AutoModelForCausalLM.from_pretrained(checkpoint), tokenizer, funcs, args, dataset)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.replay.round == 3  # restored 2 rounds + 1 new one (a fresh state would say 1)
    assert set(saved["failures"]) <= set(resumed.replay.failures)


def test_config_validates_agr_knobs(tmp_path):
    with pytest.raises(ValueError, match="agr_k"):
        AGRLConfig(
            output_dir=str(tmp_path),
            num_generations=4,
            per_device_train_batch_size=4,
            agr_k=4,
            use_cpu=True,
            bf16=False,
        )
    with pytest.raises(ValueError, match="agr_mode"):
        AGRLConfig(
            output_dir=str(tmp_path),
            num_generations=4,
            per_device_train_batch_size=4,
            agr_mode="later",
            use_cpu=True,
            bf16=False,
        )


def test_trainer_refuses_repeated_ids_and_the_other_mode(tiny_model_dir, tmp_path):
    # replay looks rows up by id in the training dataset: an id must name one row
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    funcs, weights = reward_funcs(["format_gate", "outcome"], SCHEME)
    args = AGRLConfig(output_dir=str(tmp_path), per_device_train_batch_size=G, num_generations=G, use_cpu=True,
                      bf16=False, report_to="none", reward_weights=weights)
    with pytest.raises(ValueError, match="not unique"):
        build_trainer(model, tokenizer, funcs, args, Dataset.from_list([row(HARD), row(HARD)]))
    args.agr_mode = "immediate"
    with pytest.raises(ValueError, match="methods.trainer_class"):
        AGRLTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list([row(HARD)]),
                    processing_class=tokenizer, rules_engine=ENGINE, scheme=SCHEME)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_two_processes_flag_globally_and_keep_one_state(tiny_model_dir, tmp_path, mode):
    """torchrun, 2 CPU processes (gloo), 6 rows each: the hard group (rows 4-7) straddles the ranks.
    Both ranks must flag it, replace the same rows, end with identical replay state, and train."""
    with socket.socket() as sock:  # a free port: torchrun's static rendezvous hangs on port 0
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        __file__,
        str(tiny_model_dir),
        str(tmp_path),
        mode,
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["state"] == ranks[1]["state"]
    # deferred: the guided re-entry's unguided rollouts fail again, a second failure
    assert ranks[0]["state"]["failures"] == {"hard": 1 if mode == "immediate" else 2}
    advantages = ranks[0]["advantages"] + ranks[1]["advantages"]
    if mode == "immediate":  # rows 4, 5 (rank 0) replaced by guided rollouts, 6, 7 (rank 1) kept
        assert min(advantages[4:6]) > 0 and max(advantages[6:8]) < 0
        assert ranks[0]["guided_share"] == ranks[1]["guided_share"] == [1 / 3]
    else:  # the next batch's last group (rows 8-11, rank 1) carries the hard prompt, rows 10, 11 guided
        assert min(advantages[10:12]) > 0 and max(advantages[8:10]) < 0
        assert ranks[0]["guided_share"] == ranks[1]["guided_share"] == [0.0, 1 / 3]
    assert all(r["loss_finite"] for r in ranks)


def _worker(model_dir: str, out_dir: str, mode: str) -> None:
    """One torchrun process of the test above: its slice of the global batch, then a loss pass."""
    trainer, _ = make_trainer(model_dir, out_dir, mode, per_device_train_batch_size=6)
    rank = trainer.accelerator.process_index
    rounds = [batch(EASY[0], HARD, EASY[1])] + (
        [batch(EASY[2], EASY[3], EASY[1])] if mode == "deferred" else []
    )
    for global_rows in rounds:
        output = trainer._generate_and_score_completions(global_rows[rank * 6 : (rank + 1) * 6])
    loss = trainer._compute_loss(trainer.model, dict(output))
    result = {
        "state": trainer.replay.state_dict(),
        "advantages": output["advantages"].tolist(),
        "guided_share": trainer._metrics["train"]["agr/guided_group_share"],
        "loss_finite": bool(torch.isfinite(loss)),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    trainer.accelerator.wait_for_everyone()  # leave together: a rank exiting mid-teardown aborts gloo
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    faulthandler.dump_traceback_later(120, exit=True)  # a hung collective fails with stacks, not a timeout
    _worker(*sys.argv[1:4])
