"""agrl's own keys of a training config (`RunArgs`): what TRL's configs do not hold.

Model and data paths, scheme, rules, the reward terms and their settings, DPO pair mining, LoRA. A
config file sets them flat beside the TRL config's keys (config.py reads both).

    RunArgs(method="sft", model="runs/demo/model", train_file="runs/demo/data/sft.jsonl")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class RunArgs:
    """agrl's keys: what TRL's configs do not hold (model and data paths, scheme, rules, reward weights)."""

    method: str = field(metadata={"help": "training method: a name in train/methods.py (sft, dpo, grpo, agrl, ...)"})
    model: str = field(metadata={"help": "HF-format model directory (or hub id) to start from"})
    train_file: str = field(metadata={"help": "training records: JSONL/CSV/Parquet or hf:NAME"})
    scheme: str | None = field(default=None, metadata={
        "help": "label scheme: built-in name or YAML file (default: the one train_file's manifest.json names, "
                "else default; data.resolve_scheme, as every command)"})
    rules_config: str | None = field(
        default=None, metadata={"help": "rules/decision-table YAML (None: default)"}
    )
    max_train_records: int | None = field(default=None, metadata={"help": "use only the first N records"})
    on_bad_row: Literal["error", "skip"] = field(
        default="error", metadata={"help": "bad data rows: error | skip"}
    )
    # GRPO family: the reward terms (their weights: `reward_weights: {name: w}`, a TRL key read by name)
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "reward terms: names in agrl.core.rewards.REWARDS or module:function (None: the method's)"},
    )
    # Rule-aware Reward Shaping (spec section 5): the built-in terms' settings
    r_invalid: float = field(default=-1.0, metadata={"help": "reward of a completion the parser rejects"})
    step_credit_when_wrong: float = field(
        default=0.5, metadata={"help": "g: dense-term scale when the label is wrong"}
    )
    ordinal_outcome: bool = field(default=False, metadata={"help": "outcome credit 1-|yhat-y|/(K-1)"})
    # SFT: teach the model to read AGR's guidance (our reading; bench/README.md, Quality)
    sft_guided_share: float = field(
        default=0.0,
        metadata={"help": "extra SFT rows, as a share of the data, whose prompt carries guidance level 1-3"},
    )
    sft_label_weight: float = field(
        default=1.0,
        metadata={"help": "SFT loss weight of the label token (the one after <label>); 1: plain token mean"},
    )
    # GRPO family: the SFT anchor (train/anchor.py), for the anchored methods only
    sft_anchor: float = field(
        default=0.0,
        metadata={"help": "weight of SFT's loss (its target, label weighted by sft_label_weight) added to each "
                  "RL step; required > 0 by grpo_anchored / agrl_anchored, 0 elsewhere"},
    )
    # DPO pair mining (TaoSR1 recipe)
    dpo_samples: int = field(default=4, metadata={"help": "N completions sampled per prompt (pass@N)"})
    dpo_temperature: float = field(default=1.0, metadata={"help": "sampling temperature for pair mining"})
    dpo_max_new_tokens: int = field(default=160, metadata={"help": "max new tokens per sampled completion"})
    auto_resume: bool = field(
        default=True, metadata={"help": "continue from the last checkpoint in output_dir"}
    )
    # LoRA via PEFT, every stage (train/lora.py). lora_r 0 trains all weights.
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0: full fine-tuning, no adapter"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch, in [0, 1)"})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "module names LoRA wraps (e.g. q_proj v_proj), or all-linear"},
    )
    # the TRL keys the config file and overrides set (filled by load_config; what `resolved_dict` writes)
    trl_keys: tuple[str, ...] = field(default=(), init=False, repr=False)

    def reward_settings(self) -> dict[str, float | bool]:
        """The built-in reward terms' settings, by the keyword names they take (agrl.core.rewards._Reward)."""
        return {"r_invalid": self.r_invalid, "step_credit_when_wrong": self.step_credit_when_wrong,
                "ordinal_outcome": self.ordinal_outcome}
