"""The private TRL internals our trainers override or call: fail loudly when TRL changes them.

Overridden: CountingGRPOTrainer (every GRPO-family run) `_calculate_rewards` and `compute_loss` (the SFT anchor,
train/anchor.py), it and DynamicSamplingGRPOTrainer `_generate_and_score_completions`; AGRLTrainer
`_generate_and_score_completions`, `_compute_loss`, `_get_per_token_logps_and_entropies`,
`_save_optimizer_and_scheduler`, `_load_optimizer_and_scheduler`. Called:
the rest of HOOKS (ImmediateAGRLTrainer: `_generate`, `_calculate_rewards`). Read: `_logs["rewards"]`.

TRL is pinned (pyproject); bumping it must go through these checks and then train/agr.py.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_trl_contract.py
"""

import inspect
import json

import pytest
import torch
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from agrl.data.records import Product, Record
from agrl.core.prompt import prompt_messages
from agrl.core.rewards import reward_funcs
from agrl.data.schemes import load_scheme
from agrl.train.agr import AGRLConfig, AGRLTrainer
from agrl.train.agr_immediate import advantages

# hook -> its parameters after self, exactly as our trainers call or override it
HOOKS = {
    "_generate_and_score_completions": ["inputs"],
    "_calculate_rewards": ["inputs", "prompts", "completions", "completion_ids_list"],
    "_generate": ["prompts"],
    "_generate_single_turn": [
        "prompt_ids",
        "images",
        "multimodal_fields",
        "num_generations",
        "has_tool_images",
    ],
    "_tokenize_prompts": ["prompts"],
    "_get_per_token_logps_and_entropies": [
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "spatial_shapes",
        "num_tiles",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "image_position_ids",
    ],
    "_compute_loss": ["model", "inputs"],
    "compute_loss": ["model", "inputs", "return_outputs", "num_items_in_batch"],
    "_save_optimizer_and_scheduler": ["output_dir"],
    "_load_optimizer_and_scheduler": ["checkpoint"],
}
ATTRIBUTES = [
    "num_generations",
    "reward_weights",
    "scale_rewards",
    "multi_objective_aggregation",
    "mask_truncated_completions",
    "eos_token_ids",
    "_tokenizer",
    "pad_to_multiple_of",
    "_metrics",
    "_pending_extra_logs",
    "_logs",
    "use_vllm",
    "tools",
    "rollout_func",
    "environment_factories",
    "beta",
]
OUTPUT_KEYS = {
    "prompt_ids",
    "prompt_mask",
    "completion_ids",
    "completion_mask",
    "advantages",
    "num_items_in_batch",
}


def test_trl_version_is_the_pinned_one():
    assert trl.__version__ == "1.16.0"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_signatures(name):
    params = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
    assert params[0] == "self" and params[1:] == HOOKS[name], f"GRPOTrainer.{name} changed: {params}"


def test_loss_reads_old_logps_after_computing_current_ones():
    """Guided rows rely on _compute_loss using inputs['old_per_token_logps'] when present, and on the
    parent skipping it (None) when on-policy; the GRPOConfig defaults must keep that on-policy path."""
    source = inspect.getsource(GRPOTrainer._compute_loss)
    # AGRLTrainer fills old_per_token_logps from inside the one log-prob pass that precedes the read
    assert source.count("self._get_per_token_logps_and_entropies(") == 1
    assert source.index("self._get_per_token_logps_and_entropies(") < source.index(
        'inputs.get("old_per_token_logps")'
    )
    assert "per_token_logps.detach() if old_per_token_logps is None" in source
    assert "log_ratio = per_token_logps - old_per_token_logps" in source


def test_compute_loss_is_the_loss_and_shuffles_with_torch():
    """The SFT anchor adds its loss to compute_loss's return (TRL's whole loss, scaled for accumulation)
    and carries its tensors in the batch: they must be split and shuffled with the rollouts, by torch's
    RNG (so a weight-0 run draws the same numbers as before)."""
    assert "return self._compute_loss(model, inputs)" in inspect.getsource(GRPOTrainer.compute_loss)
    from trl.trainer.utils import shuffle_sequence_dict, split_tensor_dict

    assert "torch.randperm(batch_size)" in inspect.getsource(shuffle_sequence_dict)
    chunks = split_tensor_dict({"a": torch.arange(4), "anchor_labels": torch.arange(8).view(4, 2)}, 2)
    assert chunks[1]["anchor_labels"].tolist() == [[4, 5], [6, 7]]


def test_helpers_we_import_exist():
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import nanstd, pad

    assert callable(disable_gradient_checkpointing) and callable(nanstd) and callable(pad)
    assert list(inspect.signature(pad).parameters) == [
        "tensors",
        "padding_value",
        "padding_side",
        "pad_to_multiple_of",
    ]
    # train/lora.py loads the base of an adapter run the way TRL loads a model path
    from trl.trainer.utils import create_model_from_path

    assert list(inspect.signature(create_model_from_path).parameters) == ["model_id", "architecture", "kwargs"]


def test_tiny_run_shapes_attributes_and_advantages(tiny_model_dir, tmp_path):
    """One generation round of the plain parent: the dict keys, padding sides and the gathered reward
    matrix AGRL post-processes, and that immediate mode's advantages reproduce the parent's."""
    scheme = load_scheme("default")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    funcs, weights = reward_funcs(["format_gate", "outcome"], scheme)
    length = type(
        "Length",
        (),
        {
            "__name__": "length",
            "__call__": lambda self, completions, **kw: [float(len(str(c))) for c in completions],
        },
    )()
    record = Record(
        "red running shoes",
        Product("Nike Pegasus Running Shoe", "Shoes > Running", "nike"),
        id="r",
        label=4,
        steps={"category": "match"},
    )
    row = {
        "prompt": prompt_messages(record),
        "label": 4,
        "steps": json.dumps(record.steps),
        "record": json.dumps(record.to_dict()),
        "id": "r",
    }
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        reward_weights=[*weights, 0.1],
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[*funcs, length],
        args=args,
        train_dataset=Dataset.from_list([row]),
        processing_class=tokenizer,
    )
    for name in ATTRIBUTES:
        assert hasattr(trainer, name), name
    assert trainer.multi_objective_aggregation == "sum_then_normalize" and trainer.beta == 0.0
    scored = {}
    original = trainer._calculate_rewards

    def spy(*call_args):
        scored["rewards"] = original(*call_args)
        return scored["rewards"]

    trainer._calculate_rewards = spy
    trainer.model.train()
    out = trainer._generate_and_score_completions([dict(row) for _ in range(4)])
    assert OUTPUT_KEYS <= set(out) and "old_per_token_logps" not in out  # on-policy default
    assert set(out) - OUTPUT_KEYS <= {"old_per_token_logps", "ref_per_token_logps"}
    assert out["prompt_ids"].shape == out["prompt_mask"].shape and out["prompt_mask"][:, -1].all()  # left pad
    assert out["completion_ids"].shape == out["completion_mask"].shape and out["completion_mask"][:, 0].all()
    assert out["advantages"].shape == (4,) and scored["rewards"].shape == (4, 3)
    assert out["advantages"].abs().sum() > 0  # the length reward spreads the group: a real comparison
    agrl_args = AGRLConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        use_cpu=True,
        bf16=False,
        report_to="none",
        reward_weights=[*weights, 0.1],
    )
    agrl = AGRLTrainer(
        model=model,
        reward_funcs=[*funcs, length],
        args=agrl_args,
        train_dataset=Dataset.from_list([row]),
        processing_class=tokenizer,
        rules_engine=None,
        scheme=scheme,
    )
    assert type(agrl) is AGRLTrainer
    # CountingGRPOTrainer and AGR read the reward columns TRL keeps for its completions table
    assert trainer._logs["rewards"]["outcome"] and list(trainer._logs["rewards"]["outcome"]) == scored["rewards"][:, 1].tolist()
    torch.testing.assert_close(
        advantages(scored["rewards"], agrl.reward_weights, agrl.num_generations, agrl.scale_rewards), out["advantages"]
    )


def test_overridden_hooks_are_the_documented_ones():
    """docs/paper.md names these hooks: a new override must be added here, to docs/paper.md and to HOOKS."""
    from agrl.train.agr_immediate import ImmediateAGRLTrainer
    from agrl.train.grpo import CountingGRPOTrainer, DynamicSamplingGRPOTrainer

    def own(cls):
        return sorted(n for n, v in vars(cls).items() if callable(v) and hasattr(GRPOTrainer, n) and n != "__init__")

    assert own(CountingGRPOTrainer) == ["_calculate_rewards", "_generate_and_score_completions", "compute_loss"]
    assert own(DynamicSamplingGRPOTrainer) == ["_generate_and_score_completions"]
    assert own(AGRLTrainer) == [
        "_compute_loss",
        "_generate_and_score_completions",
        "_get_per_token_logps_and_entropies",
        "_load_optimizer_and_scheduler",
        "_save_optimizer_and_scheduler",
    ]
    assert own(ImmediateAGRLTrainer) == []
