"""A recipe: one YAML that names the data, the starting model, the stages and what to evaluate.

Sections (every other key is refused):
    data     synthetic: `seed`, `noise`, `sizes`, `mix`, `exclude_queries_of` (agrl.synth.generate),
             `split` ({rl: {rl_train: 0.8, validation: 0.2}}: a split cut by query into parts);
             or an import folder: `dir` (SPLIT.jsonl files, `agrl data import`) and `scheme`
    model    `base` (a shipped base judge), `size` + `seed` (a fresh tiny model), `init: {size, seed}`
             (a fresh tiny model whose tokenizer is trained on the train split), `import` (smollm2 or a
             GGUF) or `path` (a local HF model)
    common   `agrl train` keys every stage shares
    stages   NAME: {config (configs/NAME.yaml), from (`model` or an earlier stage), data (the split it
             trains on), records (the first N pairs of a seeded shuffle), seeds (only these of the
             recipe's), any `agrl train` key}
    seeds    optional: every stage once per seed (NAME-sSEED, `seed` set, `from` the same seed's stage)
    sweep    optional: {split, metric, stages: {NAME: {KEY: [values]}}}: each grid point of a stage
             runs at the first seed (NAME-KEY=VALUE-sSEED) and is evaluated on `split`; the best
             `metric` (ties: the earlier point) is used by every seed's NAME (OUT/choices.json); the
             chosen point is the first seed's run of NAME (then evaluated on the eval splits too)
    eval     greedy `agrl eval`: `splits`, `limit`, `batch_size`, `max_new_tokens`, `resamples`, `posterior`
             (default true), `curve` (a split: every checkpoint of a stage is evaluated on it, then deleted)
    score    one-pass `agrl score`: `splits`, `batch_size`, `queries` (each split's first N queries)
    report   optional: `differences` ([[a, b], ...]: paired differences a - b over seeds; default: every
             stage against the first)

A stage's config is the flat `agrl train` mapping: configs/CONFIG, then `common`, then the stage's
own keys, then paths under OUT. Every stage's config is checked by `agrl train`'s loader before
anything runs, so a recipe error is one line naming the file and key.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agrl.errors import UserError
from agrl.files import yaml_file

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the stage configs of a source checkout
SPLITS = ("eval_balanced", "eval_wild")
SECTIONS = {"data": dict, "model": dict, "common": dict, "stages": dict, "seeds": list, "sweep": dict,
            "eval": dict, "score": dict, "report": dict}
KEYS = {"data": {"seed", "noise", "sizes", "mix", "exclude_queries_of", "split", "dir", "scheme"},
        "model": {"base", "size", "seed", "init", "import", "path"},
        "sweep": {"split", "metric", "stages"},
        "eval": {"splits", "limit", "batch_size", "max_new_tokens", "resamples", "posterior", "curve"},
        "report": {"differences"},
        "score": {"splits", "batch_size", "queries"}}
STAGE_KEYS = ("config", "from", "data", "records", "seeds")  # recipe keys of a stage that are not `agrl train` keys
BUILTIN = ("default", "quick", "base")


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """A built-in recipe (recipes/demo/NAME.yaml) or a YAML file, its shape checked; UserError naming
    the file and key. `_path` holds where it was read from."""
    builtin = resources.files("agrl") / "recipes" / "demo" / f"{name_or_path}.yaml"
    path = Path(str(builtin)) if builtin.is_file() else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{name_or_path}: no such demo recipe (built-in: {', '.join(BUILTIN)}) or file")
    recipe = yaml_file(path, "recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)})")
    for key, value in recipe.items():
        if key not in SECTIONS:
            raise UserError(f"{path}: {key}: unknown recipe key (sections: {', '.join(SECTIONS)})")
        if not isinstance(value, SECTIONS[key]):
            raise UserError(f"{path}: {key}: must be a {SECTIONS[key].__name__}")
        for sub in set(value) - KEYS.get(key, set(value)) if isinstance(value, dict) else ():
            raise UserError(f"{path}: {key}.{sub}: unknown key (known: {', '.join(sorted(KEYS[key]))})")
    for key in ("data", "model", "stages"):
        if key not in recipe:
            raise UserError(f"{path}: {key}: required recipe section is missing")
    if "eval" not in recipe and "score" not in recipe:
        raise UserError(f"{path}: eval: a recipe evaluates (eval) or scores (score) its stages")
    earlier = ["model"]
    for name, stage in recipe["stages"].items():
        if not isinstance(stage, dict) or stage.get("from") not in earlier:
            raise UserError(f"{path}: stages.{name}.from: must be 'model' or an earlier stage")
        earlier.append(name)
    data = recipe["data"]
    if "dir" not in data:
        for key in ("seed", "noise"):
            if key not in data:
                raise UserError(f"{path}: data.{key}: is required (or data.dir: an import folder)")
    if not {"base", "import", "path", "init"} & set(recipe["model"]):
        for key in ("size", "seed"):
            if key not in recipe["model"]:
                raise UserError(f"{path}: model.{key}: is required (or model.base / init / import / path)")
    for key in ("batch_size", "max_new_tokens", "resamples") if "eval" in recipe else ():
        if key not in recipe["eval"]:
            raise UserError(f"{path}: eval.{key}: is required")
    for key in ("splits", "batch_size") if "score" in recipe else ():
        if key not in recipe["score"]:
            raise UserError(f"{path}: score.{key}: is required")
    sweep = recipe.get("sweep")
    for key in ("split", "metric", "stages") if sweep else ():
        if key not in sweep:
            raise UserError(f"{path}: sweep.{key}: is required")
    for name, grid in (sweep or {}).get("stages", {}).items():
        if name not in recipe["stages"]:
            raise UserError(f"{path}: sweep.stages.{name}: no such stage (stages: {', '.join(recipe['stages'])})")
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise UserError(f"{path}: sweep.stages.{name}: must map keys to lists of values")
    recipe.setdefault("common", {})
    recipe["_path"] = str(path)
    return recipe


def splits_of(recipe: dict) -> list[str]:
    """The splits the data step leaves in OUT/data (synthetic) or that the import folder holds."""
    if "dir" in recipe["data"]:
        return sorted(p.stem for p in Path(recipe["data"]["dir"]).glob("*.jsonl"))
    sizes = recipe["data"].get("sizes") or {"sft": 1, "rl": 1, **dict.fromkeys(SPLITS, 1)}
    names = [n for n in sizes if n not in recipe["data"].get("split", {})]
    return names + [part for parts in recipe["data"].get("split", {}).values() for part in parts]


def eval_splits(recipe: dict) -> list[str]:
    return list(recipe["eval"].get("splits", SPLITS)) if "eval" in recipe else []


# ---------------------------------------------------------------------------- stages, expanded


def expand(recipe: dict, choices: dict[str, dict] | None = None) -> dict[str, dict]:
    """The concrete stages: name -> {"stage": recipe stage name, "seed", "keys" (extra `agrl train` keys),
    "from" (a concrete stage or `model`), "evals" (splits), "sweep": True for a grid point}.
    Without seeds the names are the recipe's. The swept stages' main runs are left out until `choices`
    (stage -> chosen keys) is given."""
    seeds = recipe.get("seeds") or [None]
    sweep = (recipe.get("sweep") or {}).get("stages", {})
    tag = (lambda name, seed: name) if recipe.get("seeds") is None else (lambda name, seed: f"{name}-s{seed}")
    out: dict[str, dict] = {}
    alias: dict[str, str] = {}  # a swept stage's first-seed run: the chosen grid point itself
    for seed in seeds:
        for name, stage in recipe["stages"].items():
            if seed is not None and seed not in stage.get("seeds", seeds):
                continue
            source = "model" if stage["from"] == "model" else tag(stage["from"], seed)
            source = alias.get(source, source)
            if source != "model" and source not in out:
                continue  # starts from a swept stage not chosen yet
            keys = {} if seed is None else {"seed": seed}
            if name in sweep and seed == seeds[0]:
                for values in itertools.product(*sweep[name].values()):
                    point = dict(zip(sweep[name], values))
                    label = tag(f"{name}-" + "-".join(f"{k}={v}" for k, v in point.items()), seed)
                    chosen = choices is not None and choices.get(name) == point
                    out[label] = {"stage": name, "seed": seed, "keys": keys | point, "from": source,
                                  "evals": list(dict.fromkeys([recipe["sweep"]["split"],
                                                               *(eval_splits(recipe) if chosen else ())])),
                                  "sweep": not chosen}
                    if chosen:
                        alias[tag(name, seed)] = label
            if name in sweep and (choices is None or name not in choices or seed == seeds[0]):
                continue
            out[tag(name, seed)] = {"stage": name, "seed": seed, "keys": keys | (choices or {}).get(name, {}),
                                    "from": source, "evals": eval_splits(recipe), "sweep": False}
    return out


def choose(recipe: dict, out: Path) -> dict[str, dict]:
    """Each swept stage's grid point with the best `sweep.metric` on `sweep.split` (ties: the earlier)."""
    sweep = recipe["sweep"]
    choices = {}
    for name, run in expand(recipe).items():
        if not run["sweep"]:
            continue
        result = json.loads((out / name / "eval" / f"{sweep['split']}.json").read_text())
        value = result["metrics"].get(sweep["metric"])
        if value is None and sweep["metric"] not in result["metrics"]:
            raise UserError(f"{recipe['_path']}: sweep.metric: {sweep['metric']!r} is not an eval metric "
                            f"({', '.join(result['metrics'])})")
        point = {k: v for k, v in run["keys"].items() if k != "seed" or recipe.get("seeds") is None}
        best = choices.get(run["stage"])
        if best is None or (value if value is not None else -1.0) > best[0]:
            choices[run["stage"]] = (value if value is not None else -1.0, point)
    grids = recipe["sweep"]["stages"]
    return {stage: {k: v for k, v in point.items() if k in grids[stage]} for stage, (_, point) in choices.items()}


def train_file(recipe: dict, name: str, runs: dict, out: Path) -> Path:
    return stage_data(recipe, recipe["stages"][runs[name]["stage"]], out)


def stage_data(recipe: dict, stage: dict, out: Path) -> Path:
    """The file a stage trains on: its split, or (`records: N`) the first N of a seeded shuffle of it."""
    if "records" in stage:
        return out / "data" / f"train_{stage['records']}_seed{recipe['common'].get('seed', 0)}.jsonl"
    return data_file(recipe, stage.get("data", "train" if "dir" in recipe["data"] else "sft"), out)


def data_file(recipe: dict, split: str, out: Path) -> Path:
    return (Path(recipe["data"]["dir"]) if "dir" in recipe["data"] else out / "data") / f"{split}.jsonl"


def stage_config(recipe: dict[str, Any], name: str, out: Path, runs: dict | None = None) -> dict[str, Any]:
    """The flat `agrl train` mapping of one concrete stage: configs/CONFIG, the recipe's common keys,
    the stage's own keys, its seed / grid point, paths under OUT."""
    runs = runs or expand(recipe)
    run = runs[name]
    stage = recipe["stages"][run["stage"]]
    base = {}
    if stage.get("config"):
        path = CONFIGS / stage["config"]
        if not path.is_file():
            raise UserError(f"{recipe['_path']}: stages.{run['stage']}.config: {path}: no such stage config "
                            "(recipes read configs/*.yaml of a source checkout)")
        base = yaml_file(path, "stage config")
    config = {**base, **recipe["common"], **{k: v for k, v in stage.items() if k not in STAGE_KEYS}, **run["keys"]}
    if "dir" in recipe["data"] and recipe["data"].get("scheme"):
        config["scheme"] = recipe["data"]["scheme"]
    local = run["from"] == "model" and "path" in recipe["model"]  # a local HF model, used in place
    config["model"] = str(recipe["model"]["path"] if local else out / run["from"])
    config["train_file"] = str(train_file(recipe, name, runs, out))
    config["output_dir"] = str(out / name)
    return config


def check_recipe(recipe: dict[str, Any], out: Path) -> None:
    """Every concrete stage's `agrl train` config is checked (keys, types, ranges) before any step runs;
    so is every sweep grid point (a key no trainer takes fails here)."""
    from agrl.tiny import SIZES
    from agrl.train.config import load_config

    where = recipe["_path"]
    model = recipe["model"]
    if model.get("base"):
        from agrl.tiny import base_judge_dir

        try:
            base_judge_dir(model["base"])
        except ValueError as err:
            raise UserError(f"{where}: model.base: {err}") from None
    size = model.get("size", (model.get("init") or {}).get("size"))
    if size is not None and size not in SIZES:
        raise UserError(f"{where}: model.size: {size!r} is not one of {', '.join(SIZES)}")
    if "dir" in recipe["data"]:
        if not (Path(recipe["data"]["dir"]) / "train.jsonl").is_file():
            raise UserError(f"{where}: data.dir: {recipe['data']['dir']}: no import there (train.jsonl); "
                            "run `agrl data import ... --out DIR` first")
    else:
        noise = recipe["data"]["noise"]
        if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
            raise UserError(f"{where}: data.noise: must be a share in [0, 1], got {noise!r}")
    splits = splits_of(recipe)
    for section in ("eval", "score"):
        for split in eval_splits(recipe) if section == "eval" else (recipe.get("score") or {}).get("splits", ()):
            if split not in splits:
                raise UserError(f"{where}: {section}.splits: {split!r} is not a split of the data ({', '.join(splits)})")
    if recipe.get("sweep") and recipe["sweep"]["split"] not in splits:
        raise UserError(f"{where}: sweep.split: {recipe['sweep']['split']!r} is not a split of the data")
    grids = (recipe.get("sweep") or {}).get("stages", {})
    plain = expand({**recipe, "sweep": None})  # the stages as written first, then every grid point
    every = expand(recipe, {name: {k: v[0] for k, v in grid.items()} for name, grid in grids.items()})
    with tempfile.TemporaryDirectory() as tmp:
        for runs, swept in ((plain, False), (every, True)):
            for name, run in runs.items():
                stage = recipe["stages"][run["stage"]]
                if stage.get("data") is not None and stage["data"] not in splits:
                    raise UserError(f"{where}: stages.{run['stage']}.data: {stage['data']!r} is not a split of the data")
                path = Path(tmp) / "stage.yaml"
                path.write_text(yaml.safe_dump(stage_config(recipe, name, out, runs), sort_keys=False))
                try:
                    load_config(path)
                except UserError as err:
                    key = f"sweep.stages.{run['stage']}" if swept else f"stages.{run['stage']}"
                    raise UserError(f"{where}: {key}: {str(err).removeprefix(str(path) + ': ')}") from None
