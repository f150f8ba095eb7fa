"""A recipe: one YAML that names the data, the starting model, the stages and what to evaluate.

Sections (every other key is refused):
    data     synthetic: `seed`, `noise`, `sizes`, `mix`, `exclude_queries_of` (agrl.synth.generate),
             `split` ({rl: {rl_train: 0.8, validation: 0.2}}: a split cut by query into parts),
             `add` ({sft: {seed, size, noise (0), mix}}: a further generated set put before the split's
             rows, none of its queries on the eval splits: e.g. a large clean SFT set);
             or an import folder: `dir` (SPLIT.jsonl files, `agrl data import`) and `scheme`
    model    `base` (a shipped base judge), `size` + `seed` (a fresh tiny model), `init: {size, seed}`
             (a fresh tiny model whose tokenizer is trained on the train split), `import` (smollm2 or a
             GGUF) or `path` (a local HF model)
    common   `agrl train` keys every stage shares
    stages   NAME: {config (configs/NAME.yaml), from (`model` or an earlier stage), data (the split it
             trains on), records (the first N pairs of a seeded shuffle), seeds (only these of the
             recipe's), once (true: one run, not one per seed), any `agrl train` key}
    seeds    optional: every stage once per seed (NAME-sSEED, `seed` set, `from` the same seed's stage,
             or the one run of a `once` stage: every seed starts from it)
    sweep    optional: {split, metric, stages: {NAME: {KEY: [values]}}}: each grid point of a stage
             runs at the first seed (NAME-KEY=VALUE-sSEED) and is evaluated on `split`; the best
             `metric` (ties: the earlier point) is used by every seed's NAME (OUT/choices.json); the
             chosen point is the first seed's run of NAME (then evaluated on the eval splits too);
             `by: score` scores `split` one pass (`score` settings) instead of greedy `agrl eval`
    eval     greedy `agrl eval`: `splits`, `limit`, `batch_size`, `max_new_tokens`, `resamples`, `posterior`
             (default true), `curve` (a split: every checkpoint of a stage is evaluated on it, then deleted)
    score    one-pass `agrl score`: `splits`, `batch_size`, `queries` (each split's first N queries)
    report   optional: `differences` ([[a, b], ...]: paired differences a - b over seeds; default: every
             stage against the first)
    baselines optional: `kinds` (`agrl baseline` kinds), `train` (the split they fit on), `splits` (the
             splits they predict): scored beside the stages in results.json and the report
    profiles optional: NAME -> a mapping laid over the recipe by `agrl run --profile NAME` (mappings
             merge key by key, anything else replaces), e.g. `dry`: the same recipe at smoke sizes

`agrl run --set KEY=VALUE` (KEY dotted, VALUE YAML) overrides one key after the profile.

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
            "eval": dict, "score": dict, "report": dict, "baselines": dict, "profiles": dict}
KEYS = {"data": {"seed", "noise", "sizes", "mix", "exclude_queries_of", "split", "add", "dir", "scheme"},
        "model": {"base", "size", "seed", "init", "import", "path"},
        "sweep": {"split", "metric", "stages", "by"},
        "baselines": {"kinds", "train", "splits"},
        "eval": {"splits", "limit", "batch_size", "max_new_tokens", "resamples", "posterior", "curve"},
        "report": {"differences"},
        "score": {"splits", "batch_size", "queries"}}
STAGE_KEYS = ("config", "from", "data", "records", "seeds", "once")  # recipe keys of a stage that are not `agrl train` keys
BUILTIN = ("default", "quick", "base")


def load_recipe(name_or_path: str | Path, profile: str | None = None, sets: list[str] = ()) -> dict[str, Any]:
    """A built-in recipe (recipes/demo/NAME.yaml) or a YAML file, with `profile` and then `sets` (KEY=VALUE)
    laid over it, its shape checked; UserError naming the file and key. `_path` holds where it was read
    from, `_profile` and `_sets` what was laid over it."""
    builtin = resources.files("agrl") / "recipes" / "demo" / f"{name_or_path}.yaml"
    path = Path(str(builtin)) if builtin.is_file() else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{name_or_path}: no such demo recipe (built-in: {', '.join(BUILTIN)}) or file")
    recipe = yaml_file(path, "recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)})")
    recipe = overlay(recipe, path, profile, sets)
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
    earlier, once = ["model"], {"model"}
    for name, stage in recipe["stages"].items():
        if not isinstance(stage, dict) or stage.get("from") not in earlier:
            raise UserError(f"{path}: stages.{name}.from: must be 'model' or an earlier stage")
        if stage.get("once") not in (None, True, False):
            raise UserError(f"{path}: stages.{name}.once: must be true or false")
        if stage.get("once"):
            if stage["from"] not in once:
                raise UserError(f"{path}: stages.{name}.once: a `once` stage starts from the model or a `once` stage")
            once.add(name)
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
    if sweep and sweep.get("by", "eval") not in ("eval", "score"):
        raise UserError(f"{path}: sweep.by: must be eval or score, got {sweep['by']!r}")
    if sweep and sweep.get("by") == "score" and "score" not in recipe:
        raise UserError(f"{path}: sweep.by: score needs a score section (its batch_size)")
    for name, grid in (sweep or {}).get("stages", {}).items():
        if name not in recipe["stages"]:
            raise UserError(f"{path}: sweep.stages.{name}: no such stage (stages: {', '.join(recipe['stages'])})")
        if recipe["stages"][name].get("once"):
            raise UserError(f"{path}: sweep.stages.{name}: a `once` stage is not swept")
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise UserError(f"{path}: sweep.stages.{name}: must map keys to lists of values")
    for key in ("kinds", "train", "splits") if "baselines" in recipe else ():
        if key not in recipe["baselines"]:
            raise UserError(f"{path}: baselines.{key}: is required")
    for split, extra in (data.get("add") or {}).items():
        if not isinstance(extra, dict) or "seed" not in extra or "size" not in extra:
            raise UserError(f"{path}: data.add.{split}: must be a mapping with seed and size (and noise, mix)")
        for sub in set(extra) - {"seed", "size", "noise", "mix"}:
            raise UserError(f"{path}: data.add.{split}.{sub}: unknown key (known: mix, noise, seed, size)")
    recipe.setdefault("common", {})
    recipe["_path"] = str(path)
    recipe["_profile"], recipe["_sets"] = profile, list(sets)
    return recipe


def overlay(recipe: dict, path: Path, profile: str | None, sets: list[str]) -> dict:
    """The recipe with `profiles[profile]` and then each KEY=VALUE of `sets` laid over it (no `profiles`)."""
    profiles = recipe.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise UserError(f"{path}: profiles: must be a mapping of NAME -> overrides")
    if profile is not None:
        if not isinstance(profiles.get(profile), dict):
            raise UserError(f"{path}: profiles.{profile}: no such profile (profiles: {', '.join(profiles) or 'none'})")
        recipe = merged(recipe, profiles[profile])
    for item in sets:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise UserError(f"{path}: --set {item}: expected KEY=VALUE (KEY dotted: stages.sft.max_steps=2)")
        *parents, last = key.split(".")
        node = recipe
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{path}: --set {key}: {'.'.join(parents[:i + 1])} is not a mapping")
        try:
            node[last] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"{path}: --set {key}: {text!r} is not a YAML value") from None
    return recipe


def merged(base: dict, over: dict) -> dict:
    """`over` laid on `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    "from" (a concrete stage or `model`), "evals" (greedy eval splits), "scores" (one-pass score splits),
    "sweep": True for a grid point}. Without seeds the names are the recipe's, as is a `once` stage's
    (run at no recipe seed; every seed's stage from it starts from that one run). The swept stages' main
    runs are left out until `choices` (stage -> chosen keys) is given."""
    seeds = recipe.get("seeds") or [None]
    sweep = (recipe.get("sweep") or {}).get("stages", {})
    by_score = (recipe.get("sweep") or {}).get("by") == "score"
    scored = list((recipe.get("score") or {}).get("splits", ()))
    once = {name for name, stage in recipe["stages"].items() if stage.get("once")}
    tag = (lambda name, seed: name) if recipe.get("seeds") is None else (lambda name, seed: f"{name}-s{seed}")
    out: dict[str, dict] = {}
    alias: dict[str, str] = {}  # a swept stage's first-seed run: the chosen grid point itself
    for seed in seeds:
        for name, stage in recipe["stages"].items():
            if name in once:
                if seed == seeds[0]:
                    out[name] = {"stage": name, "seed": None, "keys": {}, "from": stage["from"],
                                 "evals": eval_splits(recipe), "scores": scored, "sweep": False}
                continue
            if seed is not None and seed not in stage.get("seeds", seeds):
                continue
            source = stage["from"] if stage["from"] in once | {"model"} else tag(stage["from"], seed)
            source = alias.get(source, source)
            if source != "model" and source not in out:
                continue  # starts from a swept stage not chosen yet
            keys = {} if seed is None else {"seed": seed}
            if name in sweep and seed == seeds[0]:
                split = [recipe["sweep"]["split"]]
                for values in itertools.product(*sweep[name].values()):
                    point = dict(zip(sweep[name], values))
                    label = tag(f"{name}-" + "-".join(f"{k}={v}" for k, v in point.items()), seed)
                    chosen = choices is not None and choices.get(name) == point
                    out[label] = {"stage": name, "seed": seed, "keys": keys | point, "from": source,
                                  "evals": list(dict.fromkeys([*(() if by_score else split),
                                                               *(eval_splits(recipe) if chosen else ())])),
                                  "scores": list(dict.fromkeys([*(split if by_score else ()),
                                                                *(scored if chosen else ())])),
                                  "sweep": not chosen}
                    if chosen:
                        alias[tag(name, seed)] = label
            if name in sweep and (choices is None or name not in choices or seed == seeds[0]):
                continue
            out[tag(name, seed)] = {"stage": name, "seed": seed, "keys": keys | (choices or {}).get(name, {}),
                                    "from": source, "evals": eval_splits(recipe), "scores": scored, "sweep": False}
    return out


def sweep_result(recipe: dict, out: Path, name: str) -> Path:
    """The file a grid point leaves on `sweep.split`: its greedy eval, or (`by: score`) its score's cost stamp."""
    split = recipe["sweep"]["split"]
    if recipe["sweep"].get("by") == "score":
        return out / "scores" / f"{name}.{split}.cost.json"
    return out / name / "eval" / f"{split}.json"


def choose(recipe: dict, out: Path) -> dict[str, dict]:
    """Each swept stage's grid point with the best `sweep.metric` on `sweep.split` (ties: the earlier);
    only the stages whose every grid point is done (`--only` may run some)."""
    sweep = recipe["sweep"]
    runs = {name: run for name, run in expand(recipe).items() if run["sweep"]}
    unfinished = {run["stage"] for name, run in runs.items() if not sweep_result(recipe, out, name).exists()}
    choices = {}
    for name, run in runs.items():
        if run["stage"] in unfinished:
            continue
        if sweep.get("by") == "score":
            from agrl.report import score_metrics

            metrics = score_metrics(out / "scores" / f"{name}.{sweep['split']}.jsonl",
                                    score_source(recipe, out, sweep["split"]), recipe["data"].get("scheme", "default"))
        else:
            metrics = json.loads(sweep_result(recipe, out, name).read_text())["metrics"]
        value = metrics.get(sweep["metric"])
        if value is None and sweep["metric"] not in metrics:
            raise UserError(f"{recipe['_path']}: sweep.metric: {sweep['metric']!r} is not a metric of "
                            f"the {sweep.get('by', 'eval')} ({', '.join(metrics)})")
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


def score_source(recipe: dict, out: Path, split: str) -> Path:
    """The records a split is scored on: all of it, or (`score.queries: N`) its first N queries' pairs."""
    queries = recipe["score"].get("queries")
    return data_file(recipe, split, out) if queries is None else out / "data" / f"{split}_first{queries}queries.jsonl"


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
    base = recipe.get("baselines")
    for key, names in (("train", [base["train"]]), ("splits", base["splits"])) if base else ():
        for split in names:
            if split not in splits:
                raise UserError(f"{where}: baselines.{key}: {split!r} is not a split of the data ({', '.join(splits)})")
    if base:
        from agrl.baselines import KINDS

        for kind in base["kinds"]:
            if kind not in KINDS:
                raise UserError(f"{where}: baselines.kinds: {kind!r} is not a baseline ({', '.join(KINDS)})")
    sizes = recipe["data"].get("sizes") or {}
    for split in recipe["data"].get("add") or {}:
        if split not in {"sft", "rl", *SPLITS, *sizes}:
            raise UserError(f"{where}: data.add.{split}: is not a generated split (sft, rl, {', '.join(SPLITS)})")
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
