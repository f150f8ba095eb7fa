"""One YAML file per training run: `method`, agrl's own keys (`RunArgs`) and the TRL config's keys, flat.

The TRL config class follows the method (train/methods.py); `--set key=value` overrides any key, its
value read as YAML (`--set reward_weights.step=0.3` sets one entry of a mapping). Every value goes
through the TRL/HF argument parser and then the range checks below, so an unknown key or a value
TRL would reject later is a ConfigError naming the file and key before anything is loaded or written.
`reward_weights` is a mapping by reward name (the name TRL logs as rewards/<name>); TRL gets it as
its list, in the order of `reward_funcs`. A key that transformers renamed is read under the name
the installed version knows (RENAMED_BY_TRANSFORMERS), so one config runs on either side of it.

    method, run, args = load_config("grpo", ["learning_rate=1e-5", "max_steps=4"])  # a shipped stage, or a file
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import shutil
import typing
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers.integrations.integration_utils import (
    INTEGRATION_TO_CALLBACK,
    get_available_reporting_integrations,
)
from trl import TrlParser

from agrl.data.records import check_source, resolve_scheme
from agrl.errors import UserError
from agrl.files import atomic_write, model_dir, shipped_stage, shipped_stages, yaml_file
from agrl.core.rewards import check_weights, default_weights, reward_name
from agrl.core.rules import load_config as load_rules
from agrl.core.rules import resolve_rule
from agrl.data.schemes import load_scheme
from agrl.train.args import RunArgs
from agrl.train.common import load_train_records
from agrl.train.methods import METHODS

DEMO_OUT = "runs/demo/"  # the shipped stages (recipes/stages/*.yaml) read their model and data from the demo's output
# Keys agrl no longer takes: a config that sets one is told the new key.
REPLACED = {"w_out": "reward_weights.outcome", "w_step": "reward_weights.step", "w_adh": "reward_weights.adherence",
            "dynamic_sampling": "method: grpo_dynamic"}
# (old, new): transformers renamed these after 5.17 (our GPU host's version); 5.24 (pinned) knows both.
RENAMED_BY_TRANSFORMERS = (
    ("gradient_checkpointing", "activation_checkpointing"),
    ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
)


class ConfigError(UserError):
    """A bad training config (unknown key, bad value); raised before any work starts."""


class _Parser(TrlParser):
    """TrlParser whose errors raise ConfigError (argparse would print and exit)."""

    def error(self, message: str):
        raise ConfigError(message)


def _yaml_value(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}={text}: not a YAML value ({err})") from None


def _merge(config_path: str | Path | None, overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values, raw --set texts): file values, then overrides read as YAML; `a.b=v` sets key b of mapping a."""
    values: dict[str, Any] = {}
    raw: dict[str, str] = {}
    if config_path is not None:
        if not Path(config_path).is_file():
            raise ConfigError(f"{config_path}: no such config file (nor a shipped stage: {', '.join(shipped_stages())})")
        loaded = yaml_file(config_path, "training config")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: a config must be a YAML mapping of key: value")
        values.update(loaded)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        value = _yaml_value(key, text)
        *path, last = key.split(".")
        target = values
        for part in path:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[last] = value
        if not path:
            raw[key] = text
    return values, raw


def _renamed(values: dict[str, Any], known: set[str], where: str) -> None:
    """Read a key transformers renamed under the name the installed version knows."""
    for old, new in RENAMED_BY_TRANSFORMERS:
        if old in values and new in values:
            raise ConfigError(f"{where}: set {new} or {old} (its old name), not both")
        have, want = (old, new) if new in known else (new, old)
        if have in values and want in known:
            values[want] = values.pop(have)


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


def _check(values: dict[str, Any], raw: dict[str, str], parser: _Parser, config_class: type, where: str) -> None:
    """Unknown keys (with the nearest known one), YAML booleans for words, lists for one-value keys."""
    for key in values.keys() & REPLACED.keys():
        name = REPLACED[key].partition(".")[2]
        example = f" (in YAML `reward_weights: {{{name}: {values[key]}}}`)" if name else ""
        raise ConfigError(f"{where}: {key} is no longer a key; set {REPLACED[key]}{example}")
    known = {action.dest for action in parser._actions}
    unknown = [key for key in values if key not in known]
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        text = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ConfigError(f"{where}: unknown key(s) {text}")
    hints = typing.get_type_hints(RunArgs) | typing.get_type_hints(config_class)
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


def _rewards(values: dict[str, Any], method: str, where: str) -> dict[str, float] | None:
    """The run's reward_funcs (the method's unless set) and {name: weight}, checked; None for sft/dpo.
    Takes `reward_weights` out of `values`: TRL's key is a list, ours a mapping by name."""
    weights = values.pop("reward_weights", None)
    preset = METHODS[method].rewards
    if not preset:
        for key, value in (("reward_funcs", values.get("reward_funcs")), ("reward_weights", weights)):
            if value is not None:
                raise ConfigError(f"{where}: {key}: method {method} trains on no rewards (a GRPO-family key)")
        return None
    specs = values.setdefault("reward_funcs", list(preset))
    if not isinstance(specs, list) or not specs or not all(isinstance(s, str) and s for s in specs):
        raise ConfigError(f"{where}: reward_funcs: a list of reward names or module:function, got {specs!r}")
    if weights is not None and not isinstance(weights, dict):
        raise ConfigError(f"{where}: reward_weights: a mapping of reward name to weight "
                          f"(e.g. {{outcome: 1.0, step: 0.5}}), got {weights!r}")
    try:
        default_weights(specs)
    except ValueError as err:
        raise ConfigError(f"{where}: reward_funcs: {err}") from None
    try:
        return check_weights(specs, weights or {})
    except ValueError as err:
        raise ConfigError(f"{where}: reward_weights: {err}") from None


def load_config(
    config_path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[str, RunArgs, Any]:
    """(method, RunArgs, TRL config) from a YAML file and `key=value` overrides; ConfigError on any bad key."""
    if config_path is not None and not Path(config_path).is_file():
        config_path = shipped_stage(config_path) or config_path  # a stage name: `sft` is recipes/stages/sft.yaml
    where = str(config_path or "<overrides>")
    values, raw = _merge(config_path, list(overrides))
    method = values.get("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {list(METHODS)}, got {method!r}")
    config_class = METHODS[method].config
    parser = _Parser((RunArgs, config_class))
    known = {action.dest for action in parser._actions}
    _renamed(values, known, where)
    weights = _rewards(values, method, where)
    _check(values, raw, parser, config_class, where)
    if isinstance(values.get("num_generations"), int) and values["num_generations"] < 1:  # TRL divides by it
        raise ConfigError(f"{where}: num_generations: must be >= 2 (GRPO compares rollouts within a group), "
                          f"got {values['num_generations']}")
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
    if weights is not None:
        args.reward_weights = list(weights.values())
    _check_ranges(run, args, where)
    # the data's scheme by the rule every command uses: an import's train.jsonl trains without `scheme:`
    run.scheme = resolve_scheme(run.train_file, run.scheme, option="scheme")
    run.trl_keys = tuple(key for key in values if key not in {f.name for f in fields(RunArgs)})
    return method, run, args


# key: (test, what it must be). Values the parser's types let through but TRL, transformers, torch or PEFT
# reject only once the run folder is written (or with which a stage trains nothing); an unset key (None) passes.
RANGES = {
    **dict.fromkeys(("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                     "max_length", "max_completion_length", "num_iterations", "steps_per_generation",
                     "generation_batch_size", "pad_to_multiple_of", "dataset_num_proc", "max_train_records",
                     "dpo_samples", "dpo_max_new_tokens"), (lambda v: v >= 1, ">= 1")),
    **dict.fromkeys(("learning_rate", "weight_decay", "adam_epsilon", "warmup_steps", "top_k", "seed", "data_seed",
                     "dataloader_num_workers", "lora_r"), (lambda v: v >= 0, ">= 0")),
    **dict.fromkeys(("temperature", "dpo_temperature", "repetition_penalty"), (lambda v: v > 0, "> 0")),
    **dict.fromkeys(("adam_beta1", "adam_beta2", "lora_dropout"), (lambda v: 0 <= v < 1, "in [0, 1)")),
    **dict.fromkeys(("step_credit_when_wrong", "sft_guided_share", "min_p"), (lambda v: 0 <= v <= 1, "in [0, 1]")),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "num_generations": (lambda v: v >= 2, ">= 2 (GRPO compares rollouts within a group)"),
    "max_steps": (lambda v: v >= 1 or v == -1, ">= 1 (or -1: num_train_epochs decides)"),
    "sft_label_weight": (lambda v: v >= 1, ">= 1"),
    "sft_anchor": (lambda v: v >= 0, ">= 0"),
    **dict.fromkeys(("r_invalid", "num_train_epochs", "max_grad_norm", "beta", "epsilon"), (lambda v: True, "")),
}


def _check_ranges(run: RunArgs, args: Any, where: str) -> None:
    """RANGES (every number there finite too) and the rules between keys."""

    def bad(key: str, want: str) -> ConfigError:
        value = getattr(run, key) if hasattr(run, key) else getattr(args, key)
        return ConfigError(f"{where}: {key}: must be {want}, got {value}")

    for key, (test, want) in RANGES.items():
        value = getattr(run, key) if hasattr(run, key) else getattr(args, key, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise bad(key, "a finite number")
        if not test(value):
            raise bad(key, want)
    anchored = [name for name, m in METHODS.items() if m.anchored]
    if METHODS[run.method].anchored and not run.sft_anchor > 0:
        raise bad("sft_anchor", f"> 0 for method {run.method} (the SFT loss's weight, e.g. 0.2)")
    if not METHODS[run.method].anchored and run.sft_anchor:
        raise bad("sft_anchor", f"0 for method {run.method} (an anchored method takes it: {', '.join(anchored)})")
    if args.max_steps == -1 and args.num_train_epochs <= 0:  # else it "trains" 0 steps and exits 0
        raise bad("num_train_epochs", "> 0 (or set max_steps)")
    if run.lora_r:
        if run.lora_alpha <= 0:
            raise bad("lora_alpha", "> 0")
        if not run.lora_target_modules or not all(run.lora_target_modules):
            raise bad("lora_target_modules", "at least one module name (or all-linear)")
    unsupported = [name for name in args.report_to if name not in INTEGRATION_TO_CALLBACK]
    if unsupported:
        raise ConfigError(f"{where}: report_to: {unsupported[0]!r} is not a backend transformers knows "
                          f"(none, all, {', '.join(INTEGRATION_TO_CALLBACK)})")
    missing = sorted(set(args.report_to) - set(get_available_reporting_integrations()) - {"kubeflow"})
    if missing:
        raise ConfigError(f"{where}: report_to: {missing[0]} is not installed (pip install {missing[0]}), "
                          "or report_to: none")


def resolved_dict(run: RunArgs, args: Any) -> dict[str, Any]:
    """Every agrl key, and the TRL keys the run set, with their parsed values: re-loadable as is.

    (Only the set TRL keys: TRL derives some keys from others in __post_init__ and refuses both set.
    The full TRL config is in `trl_args.json` beside it and in each checkpoint's training_args.bin.)
    """
    ours = {k: v for k, v in asdict(run).items() if k != "trl_keys"}
    if run.reward_funcs:  # by name, as a config sets them (TRL's list follows reward_funcs)
        ours["reward_weights"] = {reward_name(spec): w for spec, w in zip(run.reward_funcs, args.reward_weights)}
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
    for key in ("model", "train_file"):  # the shipped configs' paths are the demo's outputs
        path = getattr(run, key)
        if path.startswith(DEMO_OUT) and not Path(path).exists():
            raise UserError(f"{key} {path}: not there yet; `make demo` (agrl demo --out {DEMO_OUT.rstrip('/')}) makes it, "
                            f"or pass --set {key}=PATH")
    if Path(run.model).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", run.model):  # else a hub id
        model_dir(run.model, "model")
        width = _model_width(run.model)
        if run.lora_r and width and run.lora_r > width:
            raise UserError(f"lora_r {run.lora_r}: above the width of {run.model} ({width}); "
                            f"a LoRA rank is at most the layer width (e.g. 8-64)")
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


def _model_width(path: str) -> int | None:
    """The hidden size of a checked local model folder (an adapter's: its base's), or None."""
    folder = Path(path)
    try:
        if (folder / "adapter_config.json").is_file():
            folder = Path(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"])
        settings = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return next((settings[k] for k in ("hidden_size", "n_embd", "d_model") if isinstance(settings.get(k), int)), None)

