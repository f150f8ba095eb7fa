"""Hostile input: every command on a table of bad inputs (issue 11).

Each case must exit 2 with one line on stderr (`error: ...` naming the file / line / field or
option), no traceback, and leave every input and earlier output byte for byte as it was.

    .venv/bin/python -m pytest -q tests/test_hostile.py
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from mistakes import mistake_failures

GOOD = [
    {"id": "a", "query": "red nike running shoes", "label": 4,
     "product": {"title": "Nike Pegasus running shoes, red", "brand": "nike", "category": "Shoes > Running Shoes",
                 "attributes": {"color": "red"}, "price": 80}},
    {"id": "b", "query": "adidas running shoes", "label": 2,
     "product": {"title": "Nike Pegasus running shoes", "brand": "nike", "category": "Shoes > Running Shoes"}},
]
CONFIG = {"method": "sft", "max_steps": 1, "per_device_train_batch_size": 2, "report_to": "none"}


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model_dir):
    """A workspace of good and bad inputs, and outputs of earlier runs that must survive."""
    root = tmp_path_factory.mktemp("hostile")
    files = {
        "good.jsonl": _jsonl(GOOD),
        "bad_rows.jsonl": _jsonl(GOOD) + '{"query": "x"}\n',
        "empty.csv": "",
        "unclosed.csv": 'query,title\nsocks,wool socks\n"shoes,nike shoe\n',
        "ragged.csv": "query,title\nsocks,wool socks\nshoes,nike,shoe,42\n",
        "corrupt.parquet": "PAR1 this is not parquet",
        "pairs.txt": "query\ttitle\n",
        "broken.yaml": "method: sft\nmodel: [unclosed\n",
        "scheme_dupe.yaml": yaml.safe_dump({"name": "x", "levels": [{"code": 1, "name": "good"}, {"code": 0, "name": "Good"}],
                                            "good": [1], "outcomes": {"all_match": 1, "uncertain": 1, "violation": 0,
                                                                      "off_category": 0}}),
        "scheme_nogood.yaml": yaml.safe_dump({"name": "x", "levels": [{"code": 1, "name": "a"}, {"code": 0, "name": "b"}],
                                              "good": [], "outcomes": {"all_match": 1, "uncertain": 1, "violation": 0,
                                                                       "off_category": 0}}),
        "rules_empty.yaml": "rules: []\n",
        "rules_notarule.yaml": "rules: [category, 'json:dumps']\n",
        "rules_notcallable.yaml": "rules: [category, 'os:sep']\n",
        "rules_broken.yaml": "rules: [category\n",
        "recipe_broken.yaml": "data: {seed: 0\n",
        "scored.jsonl": '{"id": "a", "label": 4}\nnot json at all\n{"id": "b", "label": 2}\n',
        "no_output_dir.yaml": yaml.safe_dump(CONFIG),
        "hd_bad.csv": "id,product_uid,product_title,search_term,relevance\n2,1,Angle,angle,4.5\n",
        "fake.joblib": "not a pickle",
        "rules_title_facts.yaml": "title_facts: maybe\n",
        "rules_threshold.yaml": "gold_step_confidence: 2\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    for name, extra in {"neg_batch": {"per_device_train_batch_size": -1},
                        "nan_weight": {"method": "grpo", "reward_weights": {"outcome": float("nan")}},
                        "credit": {"step_credit_when_wrong": 1.5}, "dpo": {"method": "dpo", "dpo_samples": 0},
                        "share": {"sft_guided_share": 2.0}, "lr": {"learning_rate": float("inf")},
                        "label_weight": {"sft_label_weight": 0.5}}.items():
        config = CONFIG | {"model": str(tiny_model_dir), "train_file": str(root / "good.jsonl"),
                           "output_dir": str(root / f"run_{name}")} | extra
        (root / f"cfg_{name}.yaml").write_text(yaml.safe_dump(config))
    (root / "cfg_badrows.yaml").write_text(yaml.safe_dump(CONFIG | {
        "model": str(tiny_model_dir), "train_file": str(root / "bad_rows.jsonl"), "output_dir": str(root / "run_x")}))
    # An earlier run of another config in the output_dir, and a model directory with trained weights.
    other = root / "other_run"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({"method": "grpo", "model": "elsewhere", "train_file": "x"}))
    (root / "cfg_clobber.yaml").write_text(yaml.safe_dump(CONFIG | {
        "model": str(tiny_model_dir), "train_file": str(root / "good.jsonl"), "output_dir": str(other)}))
    (root / "cfg_into_model.yaml").write_text(yaml.safe_dump(CONFIG | {
        "model": str(root / "model"), "train_file": str(root / "good.jsonl"), "output_dir": str(root / "model")}))
    shutil.copytree(tiny_model_dir, root / "model")
    (root / "model" / "config.yaml").write_text("scheme: default\nmethod: sft\n")  # as `agrl train` leaves it
    shutil.copytree(tiny_model_dir, root / "truncated_model")
    weights = root / "truncated_model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "not_a_model").mkdir()
    (root / "config_only").mkdir()
    (root / "config_only" / "config.json").write_text("{}")
    (root / "synth_out").mkdir()
    (root / "synth_out" / "sft.jsonl").write_text("earlier data\n")
    run = root / "run_a"
    (run / "eval").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    (run / "eval" / "eval_wild.json").write_text("{}")
    demo = root / "demo_out"
    (demo / "data").mkdir(parents=True)
    (demo / "data" / "eval_wild.jsonl").write_text(_jsonl(GOOD))
    (demo / "stamps.json").write_text('{"data": "made-by-the-quick-recipe"}')
    return root


def cases(ws: Path) -> list[tuple[str, list[str], str]]:
    """(case id, argv, text the one-line message must contain)."""
    w = lambda name: str(ws / name)
    model = w("model")
    score = ["score", "--model", model, "--input", w("good.jsonl")]
    evals = ["eval", "--model", model, "--data", w("good.jsonl")]
    return [
        # -- paths: missing, a directory, unknown format
        ("validate-missing", ["data", "validate", w("nope.jsonl")], "nope.jsonl: no such records file"),
        ("validate-dir", ["data", "validate", str(ws)], "is a directory"),
        ("validate-format", ["data", "validate", w("pairs.txt")], "unknown format '.txt'"),
        ("label-missing", ["data", "label", w("nope.jsonl"), w("out.jsonl")], "nope.jsonl: no such"),
        ("score-missing", ["score", "--model", model, "--input", w("nope.jsonl"), "--output", w("o.jsonl")],
         "nope.jsonl: no such"),
        ("eval-missing", ["eval", "--model", model, "--data", w("nope.csv"), "--out", w("e.json")], "nope.csv"),
        ("train-missing", ["train", w("nope.yaml")], "nope.yaml: no such"),
        ("report-missing", ["report", w("no_run"), "--out", w("rep")], "no_run: not a run directory"),
        ("init-corpus-missing", ["model", "init", "--out", w("m2"), "--corpus", w("nope.txt")], "nope.txt"),
        # -- tables: empty, malformed, corrupt
        ("validate-empty-csv", ["data", "validate", w("empty.csv")], "empty CSV"),
        ("validate-unclosed-csv", ["data", "validate", w("unclosed.csv")], "malformed CSV"),
        ("validate-ragged-csv", ["data", "validate", w("ragged.csv")], "ragged.csv:3: row has 4 fields, the header 2"),
        ("eval-ragged-csv", [*evals[:4], w("ragged.csv"), "--out", w("e.json")], "ragged.csv:3: row has 4 fields"),
        ("validate-corrupt-parquet", ["data", "validate", w("corrupt.parquet")], "not a readable Parquet"),
        ("score-corrupt-parquet", [*score[:4], w("corrupt.parquet"), "--output", w("o.jsonl")], "corrupt.parquet"),
        # -- nothing overwritten: outputs that are inputs, non-empty directories, runs given twice
        ("score-output-is-input", [*score, "--output", w("good.jsonl")], "--output"),
        ("score-rejects-is-output", [*score, "--output", w("o.jsonl"), "--rejects", w("o.jsonl")], "--rejects"),
        ("score-rejects-is-input", [*score, "--output", w("o.jsonl"), "--rejects", w("good.jsonl")], "--rejects"),
        ("eval-predictions-is-data", [*evals, "--out", w("e.json"), "--predictions", w("good.jsonl")], "--predictions"),
        ("eval-out-is-data", [*evals, "--out", w("good.jsonl")], "--out"),
        ("label-in-place", ["data", "label", w("good.jsonl"), w("good.jsonl")], "OUT"),
        ("init-over-model", ["model", "init", "--out", model], "not empty; pass --force"),
        ("synth-over-data", ["data", "synth", "--out", w("synth_out")], "not empty; pass --force"),
        ("train-over-other-run", ["train", w("cfg_clobber.yaml")], "another run's"),
        ("train-into-its-model", ["train", w("cfg_into_model.yaml")], "is the model it starts from"),
        ("report-same-run-twice", ["report", w("run_a"), w("run_a/../run_a"), "--out", w("rep")], "given twice"),
        ("report-out-is-run", ["report", w("run_a"), "--out", w("run_a")], "--out"),
        ("demo-other-recipe", ["demo", "--out", w("demo_out"), "--quick"], "not made by a recipe"),
        ("score-corrupt-output", [*score, "--output", w("scored.jsonl")], "scored.jsonl:2:"),
        # -- malformed YAML: configs, schemes, rules, recipes
        ("train-broken-yaml", ["train", w("broken.yaml")], "broken.yaml:3: malformed YAML"),
        ("validate-broken-scheme", ["data", "validate", w("good.jsonl"), "--scheme", w("broken.yaml")],
         "malformed YAML"),
        ("label-broken-rules", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules", w("rules_broken.yaml")],
         "rules_broken.yaml:2: malformed YAML"),
        ("demo-broken-recipe", ["demo", "--out", w("d2"), "--recipe", w("recipe_broken.yaml")], "malformed YAML"),
        # -- schemes and rules checked as data
        ("scheme-duplicate-names", ["data", "validate", w("good.jsonl"), "--scheme", w("scheme_dupe.yaml")],
         "names must be distinct"),
        ("scheme-no-good", ["data", "validate", w("good.jsonl"), "--scheme", w("scheme_nogood.yaml")],
         "good: must list"),
        ("scheme-unknown", ["data", "validate", w("good.jsonl"), "--scheme", "nine_level"], "unknown label scheme"),
        ("rules-empty", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules", w("rules_empty.yaml")],
         "rules: must list at least one rule"),
        ("rules-not-a-rule", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules", w("rules_notarule.yaml")],
         "'json:dumps' is not a rule"),
        ("rules-not-callable", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules",
                                w("rules_notcallable.yaml")], "'os:sep' is not a rule"),
        ("score-other-scheme", [*score, "--output", w("o.jsonl"), "--scheme", "three_level"],
         "trained with scheme 'default'"),
        # -- model directories that are not models
        ("score-empty-model-dir", ["score", "--model", w("not_a_model"), "--input", w("good.jsonl"), "--output",
                                   w("o.jsonl")], "not a model directory"),
        ("eval-config-only-model", ["eval", "--model", w("config_only"), "--data", w("good.jsonl"), "--out",
                                    w("e.json")], "no weights"),
        ("score-truncated-weights", ["score", "--model", w("truncated_model"), "--input", w("good.jsonl"),
                                     "--output", w("o.jsonl")], "truncated"),
        ("serve-model-is-file", ["serve", "--model", w("good.jsonl")], "is a file"),
        # -- devices, sizes, out-of-range values
        ("score-bogus-device", [*score, "--output", w("o.jsonl"), "--device", "tpu9"], "--device tpu9"),
        ("init-unknown-size", ["model", "init", "--out", w("m3"), "--size", "huge"], "'--size': 'huge' is not one of"),
        ("synth-unknown-size", ["data", "synth", "--out", w("s2"), "--size", "giant"], "'--size': 'giant' is not one of"),
        ("synth-noise-high", ["data", "synth", "--out", w("s2"), "--noise", "1.5"], "--noise 1.5"),
        ("synth-noise-nan", ["data", "synth", "--out", w("s2"), "--noise", "nan"], "--noise nan"),
        ("score-batch-zero", [*score, "--output", w("o.jsonl"), "--batch-size", "0"], "--batch-size"),
        ("score-batch-negative", [*score, "--output", w("o.jsonl"), "--batch-size", "-4"], "--batch-size"),
        ("score-threshold-high", [*score, "--output", w("o.jsonl"), "--tier-threshold", "1.5"], "--tier-threshold"),
        ("score-threshold-nan", [*score, "--output", w("o.jsonl"), "--tier-threshold", "nan"], "--tier-threshold"),
        ("score-bad-shard", [*score, "--output", w("o.jsonl"), "--shard", "3/2"], "--shard"),
        ("eval-limit-negative", [*evals, "--out", w("e.json"), "--limit", "-1"], "--limit"),
        ("eval-tokens-zero", [*evals, "--out", w("e.json"), "--max-new-tokens", "0"], "--max-new-tokens"),
        ("serve-max-batch-zero", ["serve", "--model", model, "--max-batch", "0"], "--max-batch 0"),
        ("serve-max-items-zero", ["serve", "--model", model, "--max-items", "0"], "--max-items 0"),
        ("serve-port", ["serve", "--model", model, "--port", "70000"], "--port"),
        ("train-no-output-dir", ["train", w("no_output_dir.yaml"), "--set", f"model={model}",
                                 "--set", f"train_file={w('good.jsonl')}"], "output_dir is required"),
        ("train-negative-batch", ["train", w("cfg_neg_batch.yaml")], "per_device_train_batch_size"),
        ("train-nan-weight", ["train", w("cfg_nan_weight.yaml")], "reward_weights"),
        ("train-credit-above-1", ["train", w("cfg_credit.yaml")], "step_credit_when_wrong"),
        ("train-dpo-samples-0", ["train", w("cfg_dpo.yaml")], "dpo_samples"),
        ("train-guided-share", ["train", w("cfg_share.yaml")], "sft_guided_share"),
        ("train-inf-lr", ["train", w("cfg_lr.yaml")], "learning_rate"),
        ("train-label-weight-below-1", ["train", w("cfg_label_weight.yaml")], "sft_label_weight"),
        ("train-bad-rows", ["train", w("cfg_badrows.yaml")], "bad_rows.jsonl:3: product: is required"),
        ("train-missing-model", ["train", w("cfg_neg_batch.yaml"), "--set", "per_device_train_batch_size=1",
                                 "--set", f"model={w('nope_model')}"], "no such model directory"),
        ("eval-bad-rows", [*evals[:4], w("bad_rows.jsonl"), "--out", w("e.json")], "bad_rows.jsonl:3:"),
        # -- real data: importers, baselines, agreement
        ("import-hd-missing", ["data", "import", "home-depot", "--input", w("nope.csv.gz"), "--out", w("imp")],
         "nope.csv.gz: no such Home Depot CSV file"),
        ("import-hd-bad-row", ["data", "import", "home-depot", "--input", w("hd_bad.csv"), "--out", w("imp")],
         "hd_bad.csv:2: relevance: must be a mean grade"),
        ("import-hd-over-data", ["data", "import", "home-depot", "--input", w("hd_bad.csv"), "--out",
                                 w("synth_out")], "not empty; pass --force"),
        ("import-hd-test-share", ["data", "import", "home-depot", "--input", w("hd_bad.csv"), "--out", w("imp"),
                                  "--test", "1.5"], "--test 1.5"),
        ("import-qbqtc-missing", ["data", "import", "qbqtc", "--input", w("no_dir"), "--out", w("imp")],
         "no such QBQTC directory"),
        ("import-esci-corrupt", ["data", "import", "esci", "--examples", w("corrupt.parquet"), "--products",
                                 w("corrupt.parquet"), "--out", w("imp")], "not a readable Parquet"),
        ("baseline-out-is-train", ["baseline", "fit", "--kind", "tfidf", "--train", w("good.jsonl"), "--out",
                                   w("good.jsonl")], "is also --train"),
        ("baseline-not-a-model", ["baseline", "predict", "--model", w("fake.joblib"), "--input", w("good.jsonl"),
                                  "--output", w("p.jsonl")], "not a baseline model"),
        ("baseline-output-is-input", ["baseline", "predict", "--model", w("fake.joblib"), "--input",
                                      w("good.jsonl"), "--output", w("good.jsonl")], "is also --input"),
        ("agreement-missing", ["data", "agreement", w("nope.jsonl")], "no such records file"),
        ("agreement-broken-rules", ["data", "agreement", w("good.jsonl"), "--rules", w("rules_broken.yaml")],
         "malformed YAML"),
        ("rules-title-facts", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules",
                               w("rules_title_facts.yaml")], "title_facts: must be auto, on or off"),
        ("rules-threshold", ["data", "label", w("good.jsonl"), w("o.jsonl"), "--rules", w("rules_threshold.yaml")],
         "gold_step_confidence: must be a number in [0, 1]"),
    ] + ([] if torch.cuda.is_available() else [
        ("score-cuda-on-cpu", [*score, "--output", w("o.jsonl"), "--device", "cuda"], "no CUDA device"),
        ("eval-cuda-on-cpu", [*evals, "--out", w("e.json"), "--device", "cuda:0"], "no CUDA device"),
    ])


def test_every_command_refuses_bad_input_in_one_line_and_changes_nothing(ws):
    table = cases(ws)
    assert len(table) >= 60
    failures = mistake_failures(ws, table)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------- a user's garbage rewards

REWARDS_PY = '''
def nan_reward(completions, **kwargs):
    return [float("nan")] * len(completions)

def short_reward(completions, **kwargs):
    return [1.0]

def broken_reward(completions, **kwargs):
    raise KeyError("label_text")

def skip_all(completions, **kwargs):
    return [None] * len(completions)
'''


@pytest.mark.parametrize("reward, expected", [
    ("nan_reward", "reward 'nan_reward': value 0 is nan"),
    ("short_reward", "reward 'short_reward': returned 1 values for 4 completions"),
    ("broken_reward", "reward 'broken_reward': raised KeyError"),
    ("skip_all", "every reward function (skip_all) returned None for all 4 completions"),
])
def test_train_with_a_garbage_reward_is_one_line_naming_it(ws, tiny_model_dir, tmp_path, monkeypatch, reward,
                                                            expected):
    """NaN, a wrong length or an exception fail in the probe before the model loads; a step where every
    reward skipped every completion fails at that step. Never a traceback, never `trained: ...`."""
    from typer.testing import CliRunner

    from agrl.cli import app

    (tmp_path / "user_rewards.py").write_text(REWARDS_PY)
    monkeypatch.chdir(tmp_path)  # a config's module:function imports from the working directory, as TRL's
    monkeypatch.delitem(__import__("sys").modules, "user_rewards", raising=False)
    config = {"method": "grpo", "model": str(tiny_model_dir), "train_file": str(ws / "good.jsonl"),
              "output_dir": str(tmp_path / "run"), "reward_funcs": [f"user_rewards:{reward}"], "max_steps": 1,
              "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 8,
              "report_to": "none", "disable_tqdm": True, "save_steps": 1}
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "grpo.yaml")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and lines[-1].startswith("error: ") and expected in lines[-1], result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "checkpoint-1").exists()


# ---------------------------------------------------------------------------- OS errors name the option


def test_an_os_error_names_the_option_and_path_not_an_errno(tmp_path):
    """`sbs report --out FILE`, `sbs create --out FILE/x.sqlite`, `run --out /proc/x` (issue 28): the error
    line names the option and its path, in words; the same for every command (cli._Group)."""
    from sbs_inputs import write_inputs
    from typer.testing import CliRunner

    from agrl.cli import app

    inputs = write_inputs(tmp_path / "in")
    blocker = tmp_path / "FILE"
    blocker.write_text("a file where a folder belongs\n")
    create = ["sbs", "create", "--a", inputs["a"], "--b", inputs["b"], "--pairs", inputs["pairs"]]
    assert CliRunner().invoke(app, [str(a) for a in [*create, "--out", tmp_path / "S"]]).exit_code == 0
    recipe = Path(__file__).resolve().parents[1] / "src" / "agrl" / "recipes" / "demo" / "quick.yaml"
    table = [
        (["sbs", "report", tmp_path / "S", "--out", blocker], f"--out {blocker}: {blocker} is a file, not a folder"),
        ([*create, "--out", blocker / "x.sqlite"], f"--out {blocker / 'x.sqlite'}: {blocker} is a file, not a folder"),
        (["run", recipe, "--out", "/proc/x"], "--out /proc/x: no such file or directory"),
        (["run", recipe, "--out", blocker / "sub"], f"--out {blocker / 'sub'}: {blocker} is a file, not a folder"),
    ]
    for argv, expected in table:
        result = CliRunner().invoke(app, [str(a) for a in argv])
        last = result.stderr.strip().splitlines()[-1]
        assert result.exit_code == 2 and last == f"error: {expected}", (argv, result.stderr[-500:])
        assert "Errno" not in result.stderr and "Traceback" not in result.output
    assert blocker.read_text() == "a file where a folder belongs\n"
