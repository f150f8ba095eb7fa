"""Training configs: YAML + typed --set overrides, errors before any work, the resolved config on disk."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agrl.cli import app
from agrl.train.config import ConfigError, load_config, write_resolved

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
            "w_step=0.1",
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
    weights = run.reward_weights()
    assert (weights.step, weights.ordinal, weights.invalid, weights.out) == (0.1, True, -2.0, 1.0)


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
        (["reward_weights=[1, 2]"], "not reward_weights"),  # derived from w_* keys, never set twice
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
    _, run, args = load_config(grpo_yaml, ["max_steps=5", "dynamic_sampling=true"])
    path = write_resolved(run, args, tmp_path / "out")
    assert (tmp_path / "out" / "trl_args.json").exists()
    saved = yaml.safe_load(path.read_text())
    assert saved["max_steps"] == 5 and saved["dynamic_sampling"] is True and saved["w_out"] == 1.0
    _, run2, args2 = load_config(path)
    assert run2 == run and args2.to_dict() == args.to_dict()


def test_cli_rejects_a_bad_config_before_any_work(grpo_yaml, tmp_path):
    result = CliRunner().invoke(app, ["train", str(grpo_yaml), "--set", "max_stepz=3"])
    assert result.exit_code == 2
    assert "max_stepz" in result.output
    assert not (tmp_path / "out").exists()  # nothing written, no model loaded


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    if name in ("agrl", "agr_only"):
        pytest.importorskip("agrl.train.agr")
    method, run, args = load_config(CONFIGS / f"{name}.yaml")
    assert method == run.method and args.output_dir.startswith("runs/demo/")
    if method in ("grpo", "grpo_pr", "agrl", "agr_only"):
        assert not args.use_vllm and not args.use_transformers_continuous_batching  # plain HF generate


def test_sft_guided_share_adds_guided_copies_with_the_same_targets():
    # AGRL's guidance only helps a model that has seen guided prompts: the extra rows must carry
    # guidance in the prompt and keep the record's own target.
    from agrl.rules import RulesEngine
    from agrl.synth import generate
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
    # a new user's first `agrl train configs/X.yaml`: one line naming the missing demo output, exit 2
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(CONFIGS / f"{name}.yaml")])
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
