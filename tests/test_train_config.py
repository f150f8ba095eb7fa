"""Training configs: YAML + typed --set overrides, errors before any work, the resolved config on disk."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agrl.cli import app
from agrl.errors import UserError
from agrl.train.args import RunArgs
from agrl.train.config import ConfigError, _Parser, _renamed, load_config, write_resolved
from agrl.train.methods import METHODS

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "agrl" / "recipes" / "stages"  # the shipped stages


@pytest.fixture
def grpo_yaml(tmp_path):
    path = tmp_path / "grpo.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grpo",
                "model": "m",
                "train_file": "rl.jsonl",
                "output_dir": str(tmp_path / "out"),
                "max_steps": 3,
                "num_generations": 2,
                "per_device_train_batch_size": 2,
                "bf16": False,
                "report_to": "none",
            }
        )
    )
    return path


def test_yaml_and_typed_overrides(grpo_yaml):
    method, run, args = load_config(
        grpo_yaml,
        [
            "max_steps=7",
            "learning_rate=3e-4",
            "reward_funcs=[format_gate, outcome, step]",
            "reward_weights.step=0.1",  # one entry of the mapping, by the reward's name
            "ordinal_outcome=true",
            "report_to=[tensorboard]",
            'lr_scheduler_kwargs={"min_lr": 0.0}',
            "r_invalid=-2",
        ],
    )
    assert method == "grpo"
    assert args.max_steps == 7 and isinstance(args.max_steps, int)  # --set beats the file, typed by the field
    assert args.learning_rate == pytest.approx(3e-4)  # "3e-4" is a string to YAML: argparse makes it a float
    assert args.report_to == ["tensorboard"] and args.lr_scheduler_kwargs == {"min_lr": 0.0}
    assert args.num_generations == 2  # untouched file value
    assert args.reward_weights == [1.0, 1.0, 0.1]  # TRL's list, in reward_funcs order; the rest at defaults
    assert run.reward_settings() == {"r_invalid": -2.0, "step_credit_when_wrong": 0.5, "ordinal_outcome": True}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["learnng_rate=1e-5"], "did you mean 'learning_rate'"),  # a typo is named, with the near key
        (["colour=red"], "unknown key(s) 'colour'"),
        (["max_steps=abc"], "invalid int value: 'abc'"),  # typed through argparse
        (["max_steps=2.5"], "invalid int value: '2.5'"),
        (["bf16=maybe"], "Truthy value expected"),
        (["num_generations=[2, 4]"], "take one value, not a list"),
        (["method=ppo"], "method must be one of"),
        (["on_bad_row=ignore"], "invalid choice"),
        (["max_steps"], "expected key=value"),
        (["num_generations=1"], "at least 2 generations"),  # TRL's own validation also runs first
        (["num_generations=0"], "num_generations: must be >= 2"),  # TRL's own check divides by it first
        (["reward_weights=[1, 2]"], "a mapping of reward name to weight"),  # TRL's list form: by name here
        (["reward_weights.step=0.5"], "['step'] not among this run's rewards"),  # grpo has no step term
        (["reward_weights.outcome=-1"], "reward_weights: outcome: must be a finite number >= 0"),
        (["reward_funcs=[outcome, brevity]"], "reward_funcs: unknown reward 'brevity'"),
        (["reward_funcs=[outcome, 'no_such_module:f']"], "cannot import"),
        (["w_step=0.5"], "w_step is no longer a key; set reward_weights.step"),  # the old keys say the new one
        (["w_out=1"], "set reward_weights.outcome"),
        (["dynamic_sampling=true"], "set method: grpo_dynamic"),
        (["method=sft", "reward_funcs=[outcome]"], "method sft trains on no rewards"),
        (["gradient_checkpointing=false", "activation_checkpointing=false"], "not both"),
    ],
)
def test_bad_keys_and_values_raise(grpo_yaml, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(grpo_yaml, overrides)
    assert message in str(err.value)


def test_yaml_booleans_for_words(grpo_yaml, tmp_path):
    # YAML 1.1 reads a bare `no` as false: on the command line the word is kept, in a file it must be quoted
    _, _, args = load_config(grpo_yaml, ["save_strategy=no"])
    assert args.save_strategy == "no"
    path = tmp_path / "c.yaml"
    path.write_text(grpo_yaml.read_text() + "save_strategy: no\n")
    with pytest.raises(ConfigError, match="quote the word"):
        load_config(path)
    path.write_text(grpo_yaml.read_text() + 'save_strategy: "no"\n')
    assert load_config(path)[2].save_strategy == "no"


def test_missing_required_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: sft\noutput_dir: out\n")
    with pytest.raises(ConfigError, match="--model"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_config(path)


def test_resolved_config_reloads_to_the_same_run(grpo_yaml, tmp_path):
    _, run, args = load_config(grpo_yaml, ["max_steps=5", "method=grpo_pr", "reward_weights.adherence=0.5"])
    path = write_resolved(run, args, tmp_path / "out")
    assert (tmp_path / "out" / "trl_args.json").exists()
    saved = yaml.safe_load(path.read_text())
    assert saved["max_steps"] == 5 and saved["method"] == "grpo_pr"
    assert saved["reward_funcs"] == ["format_gate", "outcome", "step", "adherence"]
    assert saved["reward_weights"] == {"format_gate": 1.0, "outcome": 1.0, "step": 0.5, "adherence": 0.5}
    _, run2, args2 = load_config(path)
    assert run2 == run and args2.to_dict() == args.to_dict()


def test_cli_rejects_a_bad_config_before_any_work(grpo_yaml, tmp_path):
    result = CliRunner().invoke(app, ["train", str(grpo_yaml), "--set", "max_stepz=3"])
    assert result.exit_code == 2
    assert "max_stepz" in result.output
    assert not (tmp_path / "out").exists()  # nothing written, no model loaded


# Every stage config shipped in the package (agrl/recipes/stages: a YAML with a `method`)
STAGE_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")
                       if "method" in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("name", STAGE_CONFIGS)
def test_shipped_configs_load(name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated key either
        method, run, args = load_config(CONFIGS / name)
    assert method == run.method and args.output_dir.startswith("runs/demo/")
    assert Path(name).stem == method  # recipes/stages/METHOD.yaml
    assert args.gradient_checkpointing is False and args.activation_checkpointing is False
    if METHODS[method].rewards:
        assert not args.use_vllm and not args.use_transformers_continuous_batching  # plain HF generate
        assert len(args.reward_weights) == len(run.reward_funcs)


# What transformers 5.17 (our GPU host's) lacks of the pinned 5.24's TrainingArguments: the only difference
# between the two wheels' training_args.py dataclass fields (measured 2026-12-04); 5.17 names them gradient_*.
LACKS_IN_5_17 = {"activation_checkpointing", "activation_checkpointing_kwargs"}


@pytest.mark.parametrize("name", STAGE_CONFIGS)
def test_shipped_configs_load_where_transformers_is_5_17(name):
    # every `agrl train STAGE` failed on the GPU host: the key was unknown there
    values = yaml.safe_load((CONFIGS / name).read_text())
    config_class = METHODS[values["method"]].config
    known_in_5_17 = {a.dest for a in _Parser((RunArgs, config_class))._actions} - LACKS_IN_5_17
    _renamed(values, known_in_5_17, name)
    assert "gradient_checkpointing" in values and set(values) - {"reward_weights"} <= known_in_5_17
    values = {"gradient_checkpointing": False, "gradient_checkpointing_kwargs": {"offload": True}}
    _renamed(values, known_in_5_17 | LACKS_IN_5_17, name)  # and the old names where the new ones exist
    assert values == {"activation_checkpointing": False, "activation_checkpointing_kwargs": {"offload": True}}


def test_sft_guided_share_adds_guided_copies_with_the_same_targets():
    # AGRL's guidance only helps a model that has seen guided prompts: the extra rows must carry
    # guidance in the prompt and keep the record's own target.
    from agrl.core.rules import RulesEngine
    from agrl.core.synth import generate
    from agrl.train.sft import sft_rows

    records = generate(seed=0, sizes={"sft": 40, "rl": 8, "eval_balanced": 4, "eval_wild": 8})["sft"]
    engine = RulesEngine.from_records(records)
    plain = sft_rows(records, engine)
    mixed = sft_rows(records, engine, guided_share=0.5, seed=1)
    assert len(plain) == 40 and len(mixed) == 60
    assert mixed[:40] == plain
    targets = {row["prompt"][0]["content"]: row["completion"] for row in plain}
    for row in mixed[40:]:
        text = row["prompt"][0]["content"]
        assert "\nguidance: " in text
        assert targets[text.split("\nguidance: ")[0]] == row["completion"]


@pytest.mark.parametrize("name", ["sft", "grpo", "agrl"])
def test_shipped_config_before_the_demo_names_the_missing_file(name, tmp_path, monkeypatch):
    # a new user's first `agrl train X` (a shipped stage, by name): one line naming the missing demo output, exit 2
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", name])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "runs/demo/" in lines[0] and "make demo" in lines[0], result.output
    assert not (tmp_path / "runs").exists()


def test_key_value_options_are_overrides_like_set(grpo_yaml):
    # `--key value` as TRL's and accelerate's CLIs take it, beside `--set key=value`
    from agrl.cli import key_value_overrides

    assert key_value_overrides(["--max_steps", "4", "--learning-rate=1e-4"]) == ["max_steps=4", "learning_rate=1e-4"]
    result = CliRunner().invoke(app, ["train", str(grpo_yaml), "--max_stepz", "3"])
    assert result.exit_code == 2 and "max_stepz" in result.output  # checked like a --set key
    result = CliRunner().invoke(app, ["train", str(grpo_yaml), "--max_steps"])
    assert result.exit_code == 2 and "--max_steps: needs a value" in result.output


GRPO = ["method=grpo", "num_generations=2"]


@pytest.mark.parametrize(
    "sets, key",
    [
        (["max_length=0"], "max_length"),  # each of these gave a traceback after config.yaml was written
        ([*GRPO, "max_completion_length=0"], "max_completion_length"),
        ([*GRPO, "temperature=-1"], "temperature"),
        (["max_steps=-1", "num_train_epochs=-2"], "num_train_epochs"),  # "trained" 0 steps, exit 0
        (["max_steps=-1", "num_train_epochs=0"], "num_train_epochs"),
        (["lora_r=100000"], "lora_r"),  # on a 128-wide model: accepted before
        (["report_to=[nosuchbackend]"], "report_to"),
        (["weight_decay=-1"], "weight_decay"),  # torch's AdamW refuses it when training starts
        (["adam_beta1=1.5"], "adam_beta1"),
        (["seed=-1"], "seed"),  # numpy's seeding refuses it inside the trainer
        (["dataloader_num_workers=-1"], "dataloader_num_workers"),
        ([*GRPO, "top_p=0"], "top_p"),
        ([*GRPO, "reward_funcs=[outcome, 'no_such_module:f']"], "reward_funcs"),
    ],
)
def test_values_trl_would_reject_fail_before_any_file(sets, key, tiny_model_dir, small_bench, tmp_path):
    # issue 20: one line naming the config file and the key, exit 2, no run folder
    config = tmp_path / "c.yaml"
    out = tmp_path / "run"
    config.write_text(yaml.safe_dump({"method": "sft", "model": str(tiny_model_dir), "output_dir": str(out),
                                      "train_file": str(small_bench / "rl.jsonl"), "max_steps": 1,
                                      "per_device_train_batch_size": 4, "report_to": "none"}))
    result = CliRunner().invoke(app, ["train", str(config), *(f"--set={s}" for s in sets)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert key in lines[0] and (str(config) in lines[0] or str(tiny_model_dir) in lines[0]), lines[0]
    assert not out.exists()


def test_a_key_twice_in_a_config_is_refused(tmp_path):
    # YAML keeps the last of two equal keys silently: which learning rate did the run use?
    config = tmp_path / "c.yaml"
    config.write_text("method: sft\nmodel: m\nlearning_rate: 1e-4\noutput_dir: out\nlearning_rate: 1e-5\n")
    with pytest.raises(UserError, match=r"c.yaml:5: .*key .learning_rate. given twice"):
        load_config(config)


def test_a_custom_reward_by_import_path_trains_and_is_logged(tiny_model_dir, small_bench, tmp_path, monkeypatch):
    # a reward term named `module:function` in a YAML stage config, as TRL's scripts take them; its weight
    # is keyed by the name TRL logs it under (rewards/<name>)
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(completions, **kwargs):\n"
        "    return [-len(c[0]['content'] if isinstance(c, list) else c) / 100 for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)  # the working directory is importable, as for TRL's scripts
    out = tmp_path / "run"
    config = tmp_path / "custom.yaml"
    config.write_text(yaml.safe_dump({
        "method": "grpo", "model": str(tiny_model_dir), "train_file": str(small_bench / "rl.jsonl"),
        "output_dir": str(out), "reward_funcs": ["format_gate", "outcome", "my_rewards:brevity"],
        "reward_weights": {"brevity": 0.1}, "max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2,
        "max_completion_length": 8, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "disable_tqdm": True}))
    from agrl.files import read_jsonl_tolerant
    from agrl.train import train

    train(config)
    rows = [row for row in read_jsonl_tolerant(out / "metrics.jsonl") if "reward" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert all(row["rewards/brevity/mean"] < 0 and "rewards/outcome/mean" in row for row in rows)
    assert json.loads((out / "trl_args.json").read_text())["reward_weights"] == [1.0, 1.0, 0.1]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["reward_weights"] == {"format_gate": 1.0, "outcome": 1.0, "brevity": 0.1}
    assert load_config(out / "config.yaml")[2].reward_weights == [1.0, 1.0, 0.1]  # re-loadable as written
