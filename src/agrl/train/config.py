"""One YAML file per training run: `method`, agrl's own keys (`RunArgs`) and the TRL config's keys, flat.

The TRL config class follows the method (SFTConfig, DPOConfig, GRPOConfig, or AGRLConfig for
agr_only/agrl); `--set key=value` overrides any key, its value read as YAML. Every value goes through
the TRL/HF argument parser, so an unknown key or a badly typed value is a ValueError naming the key
before any model or data is loaded.

    method, run, args = load_config("configs/grpo.yaml", ["learning_rate=1e-5", "max_steps=4"])
"""

from __future__ import annotations

import argparse
import difflib
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from trl import DPOConfig, GRPOConfig, SFTConfig, TrlParser

from agrl.errors import UserError
from agrl.files import atomic_write, yaml_file
from agrl.rewards import RewardWeights

METHODS = ("sft", "dpo", "grpo", "grpo_pr", "agr_only", "agrl")
DEMO_OUT = "runs/demo/"  # configs/*.yaml read their model and data from the demo's output


@dataclass
class RunArgs:
    """agrl's keys: what TRL's configs do not hold (model and data paths, scheme, rules, reward weights)."""

    method: Literal["sft", "dpo", "grpo", "grpo_pr", "agr_only", "agrl"] = field(
        metadata={"help": "training stage: sft | dpo | grpo | grpo_pr | agr_only | agrl"}
    )
    model: str = field(metadata={"help": "HF-format model directory (or hub id) to start from"})
    train_file: str = field(metadata={"help": "training records: JSONL/CSV/Parquet or hf:NAME"})
    scheme: str = field(default="default", metadata={"help": "label scheme: built-in name or YAML file"})
    rules_config: str | None = field(
        default=None, metadata={"help": "rules/decision-table YAML (None: default)"}
    )
    max_train_records: int | None = field(default=None, metadata={"help": "use only the first N records"})
    on_bad_row: Literal["error", "skip"] = field(
        default="error", metadata={"help": "bad data rows: error | skip"}
    )
    # Rule-aware Reward Shaping (spec section 5)
    w_out: float = field(default=1.0, metadata={"help": "weight of the outcome reward"})
    w_step: float = field(default=0.5, metadata={"help": "weight of the step reward (grpo_pr, agrl)"})
    w_adh: float = field(
        default=0.25, metadata={"help": "weight of the rule-adherence reward (grpo_pr, agrl)"}
    )
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
    # GRPO baseline option (TaoSR1/DAPO)
    dynamic_sampling: bool = field(
        default=False, metadata={"help": "drop groups whose rollouts all score the same"}
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

    def __post_init__(self):
        # ValueError here reaches the user as a ConfigError naming the key (load_config)
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0 (0: no adapter), got {self.lora_r}")
        if self.lora_r and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_r and (not self.lora_target_modules or not all(self.lora_target_modules)):
            raise ValueError("lora_target_modules must name at least one module (or all-linear)")

    def reward_weights(self) -> RewardWeights:
        return RewardWeights(
            self.w_out,
            self.w_step,
            self.w_adh,
            self.r_invalid,
            self.step_credit_when_wrong,
            self.ordinal_outcome,
        )


def trl_config_class(method: str) -> type:
    if method == "sft":
        return SFTConfig
    if method == "dpo":
        return DPOConfig
    if method in ("grpo", "grpo_pr"):
        return GRPOConfig
    from agrl.train.agr import AGRLConfig  # T2's GRPOConfig subclass with the AGR fields

    return AGRLConfig


class ConfigError(UserError):
    """A bad training config (unknown key, bad value); raised before any work starts."""


class _Parser(TrlParser):
    """TrlParser whose errors raise ValueError (argparse would print and exit)."""

    def error(self, message: str):
        raise ConfigError(message)


def _yaml_value(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}={text}: not a YAML value ({err})") from None


def _merge(config_path: str | Path | None, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, raw --set texts): file values, then overrides read as YAML."""
    values: dict[str, Any] = {}
    raw: dict[str, str] = {}
    if config_path is not None:
        if not Path(config_path).is_file():
            raise ConfigError(f"{config_path}: no such config file")
        loaded = yaml_file(config_path, "training config")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: a config must be a YAML mapping of key: value")
        values.update(loaded)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        values[key.strip()] = _yaml_value(key, text)
        raw[key.strip()] = text
    return values, raw


def _as_argv(values: dict[str, Any], list_keys: set[str]) -> tuple[list[str], dict[str, Any]]:
    """Scalars (and lists of list-typed keys) become CLI strings, so argparse checks their type; None,
    dicts and the lists of str-or-list keys (report_to) are set as parsed defaults."""
    argv: list[str] = []
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, list) and value and key in list_keys:
            argv += [f"--{key}", *(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)]
        elif value is None or isinstance(value, (dict, list)):
            defaults[key] = value
        else:
            argv.append(f"--{key}=" + (str(value).lower() if isinstance(value, bool) else str(value)))
    return argv, defaults


def _check(values: dict[str, Any], raw: dict[str, str], parser: _Parser, method: str, where: str) -> None:
    """Unknown keys (with the nearest known one), YAML booleans for words, lists for one-value keys."""
    known = {action.dest for action in parser._actions}
    unknown = [key for key in values if key not in known]
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        text = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ConfigError(f"{where}: unknown key(s) {text}")
    hints = typing.get_type_hints(RunArgs) | typing.get_type_hints(trl_config_class(method))
    for key, value in values.items():  # YAML 1.1 reads no/yes/off/on as booleans
        if isinstance(value, bool) and "bool" not in str(hints[key]):
            if key not in raw:
                raise ConfigError(
                    f'{where}: {key}: {value} is a YAML boolean; quote the word, e.g. {key}: "no"'
                )
            values[key] = raw[key]
    single = [k for k, v in values.items() if isinstance(v, list) and "list" not in str(hints[k])]
    if single:
        raise ConfigError(f"{where}: key(s) {single} take one value, not a list")
    if "reward_weights" in values:
        raise ConfigError(
            f"{where}: set w_out/w_step/w_adh/r_invalid, not reward_weights (derived from them)"
        )


def load_config(
    config_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[str, RunArgs, Any]:
    """(method, RunArgs, TRL config) from a YAML file and `key=value` overrides; ValueError on any bad key."""
    where = str(config_path or "<overrides>")
    values, raw = _merge(config_path, list(overrides))
    method = values.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {list(METHODS)}, got {method!r}")
    parser = _Parser((RunArgs, trl_config_class(method)))
    _check(values, raw, parser, method, where)
    argv, defaults = _as_argv(values, {a.dest for a in parser._actions if a.nargs in ("+", "*")})
    if not torch.cuda.is_available():
        # Without use_cpu, TrainingArguments starts no gloo process group under torchrun on a CPU-only host
        # (world_size stays 1 and GRPO sizes its generation batch for one process).
        defaults.setdefault("use_cpu", True)
    parser.set_defaults(**defaults)
    try:
        run, args = parser.parse_args_into_dataclasses(args=argv)
    except (ValueError, TypeError, argparse.ArgumentError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if not values.get("output_dir"):  # checked on the raw values: TRL's default ("trainer_output") fills it
        raise ConfigError(f"{where}: output_dir is required (where the run's checkpoints and model go)")
    _check_ranges(run, args, method, where)
    run.trl_keys = tuple(key for key in values if key not in {f.name for f in fields(RunArgs)})
    return method, run, args


def _check_ranges(run: RunArgs, args: Any, method: str, where: str) -> None:
    """Values the parser's types let through but no stage can use (negative sizes, NaN weights, ...)."""
    import math

    def bad(key: str, want: str) -> ConfigError:
        value = getattr(run, key) if hasattr(run, key) else getattr(args, key)
        return ConfigError(f"{where}: {key}: must be {want}, got {value}")

    for key in ("w_out", "w_step", "w_adh", "r_invalid", "dpo_temperature"):
        if not math.isfinite(getattr(run, key)):
            raise bad(key, "a finite number")
    for key in ("w_out", "w_step", "w_adh"):
        if getattr(run, key) < 0:
            raise bad(key, ">= 0 (a weight)")
    for key in ("step_credit_when_wrong", "sft_guided_share"):
        if not 0.0 <= getattr(run, key) <= 1.0:
            raise bad(key, "in [0, 1]")
    if not (math.isfinite(run.sft_label_weight) and run.sft_label_weight >= 1.0):
        raise bad("sft_label_weight", "a finite number >= 1")
    if run.dpo_samples < 1 or run.dpo_max_new_tokens < 1:
        raise bad("dpo_samples" if run.dpo_samples < 1 else "dpo_max_new_tokens", ">= 1")
    if run.dpo_temperature <= 0:
        raise bad("dpo_temperature", "> 0")
    if run.max_train_records is not None and run.max_train_records < 1:
        raise bad("max_train_records", ">= 1 (or unset for all)")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            raise bad(key, ">= 1")
    if not (math.isfinite(args.learning_rate) and args.learning_rate >= 0):
        raise bad("learning_rate", "a finite number >= 0")
    if args.max_steps == 0 or args.max_steps < -1:
        raise bad("max_steps", ">= 1 (or -1 for num_train_epochs)")
    if method not in ("sft", "dpo") and (args.num_generations or 2) < 2:
        raise bad("num_generations", ">= 2 (GRPO compares rollouts within a group)")


def resolved_dict(run: RunArgs, args: Any) -> dict[str, Any]:
    """Every agrl key, and the TRL keys the run set, with their parsed values: re-loadable as is.

    (Only the set TRL keys: TRL derives some keys from others in __post_init__ and refuses both set.
    The full TRL config is in `trl_args.json` beside it and in each checkpoint's training_args.bin.)
    """
    ours = {k: v for k, v in asdict(run).items() if k != "trl_keys"}
    theirs = args.to_dict()
    return ours | {key: theirs[key] for key in run.trl_keys}


def write_resolved(run: RunArgs, args: Any, out_dir: str | Path) -> Path:
    """config.yaml (re-loadable) and trl_args.json (every TRL value) in out_dir."""
    out_dir = Path(out_dir)
    atomic_write(out_dir / "trl_args.json", args.to_json_string())
    return atomic_write(out_dir / "config.yaml", yaml.safe_dump(resolved_dict(run, args), sort_keys=False))


# What makes a run the same run: a rerun that differs in these is another run, not a resume.
IDENTITY = ("method", "model", "train_file", "scheme", "rules_config")


def preflight(method: str, run: RunArgs, args: Any, force: bool = False, main_process: bool = True) -> None:
    """Check every path and file the run names before anything is written (UserError naming it).

    output_dir may be missing, empty, or hold a run with the same IDENTITY (a resume). Anything else
    needs `force`, which clears the old run's checkpoints and metrics so nothing resumes from them.
    """
    import re
    import shutil

    from agrl.data import check_source
    from agrl.files import model_dir
    from agrl.rules import load_config as load_rules
    from agrl.rules import resolve_rule
    from agrl.schemes import load_scheme
    from agrl.train.common import load_train_records

    for key in ("model", "train_file"):  # the shipped configs' paths are the demo's outputs
        path = getattr(run, key)
        if path.startswith(DEMO_OUT) and not Path(path).exists():
            raise UserError(f"{key} {path}: not there yet; `make demo` (agrl demo --out {DEMO_OUT.rstrip('/')}) makes it, "
                            f"or pass --set {key}=PATH")
    if Path(run.model).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", run.model):  # else a hub id
        model_dir(run.model, "model")
    check_source(run.train_file)
    scheme = load_scheme(run.scheme)
    for name in load_rules(run.rules_config)["rules"]:
        resolve_rule(name)
    # Bad rows fail here, before output_dir is touched (the stage reads the file again, it is cheap).
    load_train_records(run, scheme, report=lambda *_: None)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out}: is a file, expected a run directory")
    if Path(run.model).exists() and out.exists() and out.resolve() == Path(run.model).resolve():
        raise UserError(f"output_dir {out}: is the model it starts from; choose another output_dir")
    # Only the main process judges output_dir's contents: it alone writes there, and another rank looking
    # while it writes its config would see "files that are not an agrl run" (a race seen under torchrun).
    if not main_process or not out.is_dir() or not any(out.iterdir()):
        return
    previous = out / "config.yaml"
    old = yaml_file(previous, "run config") if previous.is_file() else None
    mine = resolved_dict(run, args)
    if isinstance(old, dict) and all(old.get(k) == mine.get(k) for k in IDENTITY):
        return  # the same run: resume it
    if not force:
        why = "another run's" if isinstance(old, dict) else "files that are not an agrl run"
        raise UserError(f"output_dir {out}: holds {why} ({', '.join(sorted(p.name for p in out.iterdir())[:4])}); "
                        "pass --force to replace it, or choose another output_dir")
    for stale in [*out.glob("checkpoint-*"), out / "metrics.jsonl"]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
