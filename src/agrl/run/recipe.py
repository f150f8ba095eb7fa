"""A recipe: one YAML that names the data, the starting model, the stages and what to evaluate.

Sections (every other key is refused):
    data     synthetic: `seed`, `noise`, `sizes`, `mix`, `exclude_queries_of` (agrl.core.synth.generate),
             `split` ({rl: {rl_train: 0.8, validation: 0.2}}: a split cut by query into parts),
             `add` ({sft: {seed, size, noise (0), mix}}: a further generated set put before the split's
             rows, none of its queries on the eval splits: e.g. a large clean SFT set);
             or an import folder: `dir` (SPLIT.jsonl files, `agrl data import`) and `scheme`
    model    `base` (a shipped base judge), `size` + `seed` (a fresh tiny model), `init: {size, seed}`
             (a fresh tiny model whose tokenizer is trained on the train split), `import` (smollm2 or a
             GGUF) or `path` (a local HF model)
    common   `agrl train` keys every stage shares
    stages   NAME (a plain identifier, not one of Layout.RESERVED): {config (a shipped stage by name: sft,
             dpo, grpo, ... in agrl/recipes/stages; or a YAML file in the recipe's folder), from (`model`
             or an earlier stage), data (the split it trains on), records (the first N pairs of a seeded
             shuffle), seeds (only these of the recipe's), once (true: one run, not one per seed), any
             `agrl train` key}
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

A stage's config is the flat `agrl train` mapping: its `config` file, then `common`, then the stage's
own keys, then paths under OUT.

The recipe is checked whole before any step runs: `parse` reads it into one frozen dataclass per
section (every key, type, sign, range; names against names), `check_recipe` then checks what it names
(splits, the model, files) and every stage's `agrl train` config. A mistake is one line naming the file
and key. `Layout` owns every path of a run's OUT.

The runner and its jobs read the typed `Recipe` only: the jobs read OUT/recipe.json (`Recipe.as_json`)
back through `parse` (`from_json`). A step's stamp hashes a section as the recipe wrote it (`written`:
the keys given, not the defaults filled in), so the stamps are those of the untyped recipe.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agrl.data.schemes import DEFAULT
from agrl.errors import UserError
from agrl.files import shipped_stage, shipped_stages, yaml_file

SPLITS = ("eval_balanced", "eval_wild")
STAGE_KEYS = ("config", "from", "data", "records", "seeds", "once")  # recipe keys of a stage that are not `agrl train` keys
BUILTIN = ("default", "quick", "base")


@dataclass(frozen=True)
class Layout:
    """Every path a run reads or writes: under OUT, and an import folder's splits (`data_dir`). A stage
    named NAME trains into OUT/NAME, so the runner's own folders are names no stage may take."""

    out: Path
    data_dir: Path | None = None  # an import folder (data.dir); else the splits are OUT/data's

    RESERVED = ("data", "model", "scores", "baselines", "stamps", "logs", "configs", "report", "locks")

    @classmethod
    def of(cls, recipe: Recipe, out: str | Path) -> Layout:
        return cls(Path(out), Path(recipe.data.dir) if recipe.data.dir is not None else None)

    def split(self, split: str) -> Path:
        return (self.data_dir or self.out / "data") / f"{split}.jsonl"

    def records(self, count: int, seed: int) -> Path:  # a stage's `records: N`: the first N of a seeded shuffle
        return self.out / "data" / f"train_{count}_seed{seed}.jsonl"

    def first_queries(self, split: str, count: int) -> Path:  # `score.queries: N`
        return self.out / "data" / f"{split}_first{count}queries.jsonl"

    def stage(self, name: str) -> Path:  # a stage's run folder (`model`: the starting model)
        return self.out / name

    def trained(self, name: str, lora: bool) -> Path:  # the weights a finished stage leaves
        return self.out / name / ("adapter_model.safetensors" if lora else "model.safetensors")

    def config(self, name: str) -> Path:
        return self.out / "configs" / f"{name}.yaml"

    def eval(self, name: str, split: str) -> Path:
        return self.out / name / "eval" / f"{split}.json"

    def curve(self, name: str, step: int | None = None) -> Path:
        return self.out / name / "curve" / ("curve.json" if step is None else f"step{step}.json")

    def score(self, name: str, split: str, suffix: str = ".jsonl") -> Path:
        return self.out / "scores" / f"{name}.{split}{suffix}"

    def baseline(self, kind: str, split: str | None = None) -> Path:
        return self.out / "baselines" / (f"{kind}.joblib" if split is None else f"{kind}.{split}.jsonl")

    def stamp(self, step: str) -> Path:
        return self.out / "stamps" / f"{step.replace(' ', '_')}.json"

    def log(self, step: str) -> Path:
        return self.logs / f"{step.replace(' ', '_')}.log"

    def job_lock(self, job: str) -> Path:
        return self.out / "locks" / f"{job}.lock"

    model = property(lambda self: self.out / "model")
    splits = property(lambda self: self.out / "data" / "splits.json")
    logs = property(lambda self: self.out / "logs")
    report = property(lambda self: self.out / "report")
    recipe = property(lambda self: self.out / "recipe.json")  # the recipe as run (and its choices, inputs)
    choices = property(lambda self: self.out / "choices.json")
    timings = property(lambda self: self.out / "timings.json")
    results = property(lambda self: self.out / "results.json")
    runner = property(lambda self: self.out / "runner.json")  # who holds OUT now


def load_recipe(name_or_path: str | Path, profile: str | None = None, sets: list[str] = ()) -> Recipe:
    """A built-in recipe (recipes/demo/NAME.yaml) or a YAML file, with `profile` and then `sets` (KEY=VALUE)
    laid over it, checked whole by `parse` (every key, type, sign, range and name); UserError naming the
    file and key. `path` holds where it was read from, `profile` and `sets` what was laid over it."""
    builtin = resources.files("agrl") / "recipes" / "demo" / f"{name_or_path}.yaml"
    path = Path(str(builtin)) if builtin.is_file() else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"{name_or_path}: no such demo recipe (built-in: {', '.join(BUILTIN)}) or file")
    recipe = yaml_file(path, "recipe")
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections ({', '.join(f.name for f in fields(Recipe))})")
    recipe = overlay(recipe, path, profile, sets)
    typed = parse(recipe, path)
    return replace(typed, common=typed.common or {}, path=str(path), profile=profile, sets=tuple(sets))


def from_json(body: dict) -> Recipe:
    """The recipe as `Recipe.as_json` wrote it (OUT/recipe.json), read back through `parse`."""
    meta = {key: body[key] for key in body if key.startswith("_")}
    typed = parse({k: v for k, v in body.items() if k not in meta}, meta["_path"])
    return replace(typed, common=typed.common or {}, path=meta["_path"], profile=meta.get("_profile"),
                   sets=tuple(meta.get("_sets") or ()), inputs=meta.get("_inputs"), choices=meta.get("_choices"))


def written(value: Any) -> Any:
    """A section (or any part of a recipe) as the recipe wrote it: only the keys it gave, in JSON's shapes
    (lists, mappings). The stamps hash this, so a stamp depends on what was written, as it always has."""
    if is_dataclass(value):
        body = {name.rstrip("_"): written(getattr(value, name)) for name in value.given}
        return body | written(value.keys) if isinstance(value, Stage) else body
    if isinstance(value, dict):
        return {key: written(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [written(item) for item in value]
    return value


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


# ---------------------------------------------------------------------------- the recipe, typed and checked whole


class _Wrong(Exception):
    """A recipe mistake at a key (dotted); load_recipe turns it into one UserError naming the file."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def _count(least: int = 0, none: bool = False):
    """A whole number >= `least` (a bool or float is not one; `none`: null allowed)."""
    def check(value, key):
        if none and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise _Wrong(key, f"must be a whole number >= {least}{' or null' if none else ''}, got {value!r}")
        return value
    return check


def _number(low: float, high: float | None = None):
    def check(value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low \
                or (high is not None and value > high):
            raise _Wrong(key, f"must be a number in [{low}, {high if high is not None else 'inf'}], got {value!r}")
        return value
    return check


def _text(value, key):
    if not isinstance(value, str) or not value.strip():
        raise _Wrong(key, f"must be a non-empty string, got {value!r}")
    return value


def _flag(value, key):
    if not isinstance(value, bool):
        raise _Wrong(key, f"must be true or false, got {value!r}")
    return value


def _one_of(*options):
    def check(value, key):
        if value not in options:
            raise _Wrong(key, f"must be one of {', '.join(map(str, options))}, got {value!r}")
        return value
    return check


def _list(item, empty: bool = True):
    """A YAML list (a string is not one: it would be read per character) of distinct items."""
    def check(value, key):
        if not isinstance(value, list):
            raise _Wrong(key, f"must be a list (e.g. [a, b]), got {value!r}")
        if not value and not empty:
            raise _Wrong(key, "must not be empty")
        items = tuple(item(v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(set(map(repr, items))) < len(items):
            raise _Wrong(key, f"lists {next(v for v in items if items.count(v) > 1)!r} twice")
        return items
    return check


def _mapping(value_check, key_check=_text):
    def check(value, key):
        if not isinstance(value, dict):
            raise _Wrong(key, f"must be a mapping, got {value!r}")
        return {key_check(k, f"{key}.{k}"): value_check(v, f"{key}.{k}") for k, v in value.items()}
    return check


def _family_mix(value, key):
    from agrl.core.synth import MIX

    families = MIX["sft"]
    shares = _mapping(_number(0, 1))(value, key)
    for family in shares:
        if family not in families:
            raise _Wrong(f"{key}.{family}", f"not a family ({', '.join(families)})")
    return shares


def _split_mix(value, key):
    from agrl.core.synth import MIX

    mixes = _mapping(_family_mix)(value, key)
    for split in mixes:
        if split not in MIX:
            raise _Wrong(f"{key}.{split}", f"not a generated split's mix ({', '.join(MIX)})")
    return mixes


def _sizes(value, key):
    from agrl.core.synth import SPLITS as GENERATED

    sizes = _mapping(_count(0))(value, key)
    for split in sizes:
        if split not in GENERATED:
            raise _Wrong(f"{key}.{split}", f"not a generated split ({', '.join(GENERATED)})")
    return sizes


def _stage_name(value, key):
    """A stage's name is a plain identifier and no folder the Layout keeps in OUT: it names OUT/NAME."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise _Wrong(key, "a stage name is a plain identifier (letters, digits, _)")
    if value in Layout.RESERVED:
        raise _Wrong(key, f"{value!r} is reserved (OUT/{value} is the runner's; reserved: "
                          f"{', '.join(Layout.RESERVED)})")
    return value


def _is(check, required: bool = False) -> dict:
    """A section field's metadata: the check its value goes through, and whether the key is required."""
    return {"check": check, "required": required}


def _section(cls):
    """A check that reads a mapping into `cls`: unknown keys refused, required ones demanded, each value
    through its field's check (a field named `from_` is the key `from`)."""
    def check(value, key):
        if not isinstance(value, dict):
            raise _Wrong(key, f"must be a mapping, got {value!r}")
        known = {f.name.rstrip("_"): f for f in fields(cls) if "check" in f.metadata}
        for sub in value:
            if sub not in known:
                what = "recipe key (sections" if key == "recipe" else "key (known"
                raise _Wrong(f"{key}.{sub}", f"unknown {what}: {', '.join(sorted(known))})")
        values = {}
        for name, spec in known.items():
            if name in value:
                values[spec.name] = spec.metadata["check"](value[name], f"{key}.{name}")
            elif spec.metadata["required"]:
                raise _Wrong(f"{key}.{name}", "is required")
        return cls(**values, given=tuple(known[name].name for name in value))
    return check


@dataclass(frozen=True)
class Add:
    seed: int = field(default=None, metadata=_is(_count(0), required=True))
    size: int = field(default=None, metadata=_is(_count(0), required=True))
    noise: float = field(default=0.0, metadata=_is(_number(0, 1)))
    mix: dict | None = field(default=None, metadata=_is(_family_mix))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Data:
    seed: int | None = field(default=None, metadata=_is(_count(0)))
    noise: float | None = field(default=None, metadata=_is(_number(0, 1)))
    sizes: dict | None = field(default=None, metadata=_is(_sizes))
    mix: dict | None = field(default=None, metadata=_is(_split_mix))
    exclude_queries_of: str | None = field(default=None, metadata=_is(_text))
    split: dict | None = field(default=None, metadata=_is(_mapping(_mapping(_number(0, 1)))))
    add: dict | None = field(default=None, metadata=_is(_mapping(_section(Add))))
    dir: str | None = field(default=None, metadata=_is(_text))
    scheme: str | None = field(default=None, metadata=_is(_text))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class ModelInit:
    size: str = field(default=None, metadata=_is(_text, required=True))
    seed: int = field(default=None, metadata=_is(_count(0), required=True))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Model:
    base: str | None = field(default=None, metadata=_is(_text))
    size: str | None = field(default=None, metadata=_is(_text))
    seed: int | None = field(default=None, metadata=_is(_count(0)))
    init: ModelInit | None = field(default=None, metadata=_is(_section(ModelInit)))
    import_: str | None = field(default=None, metadata=_is(_text))
    path: str | None = field(default=None, metadata=_is(_text))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Stage:
    from_: str = field(default=None, metadata=_is(_text, required=True))
    config: str | None = field(default=None, metadata=_is(_text))
    data: str | None = field(default=None, metadata=_is(_text))
    records: int | None = field(default=None, metadata=_is(_count(1)))
    seeds: tuple | None = field(default=None, metadata=_is(_list(_count(0), empty=False)))
    once: bool = field(default=False, metadata=_is(_flag))
    keys: dict = field(default_factory=dict)  # the `agrl train` keys (checked by its loader: check_recipe)
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Sweep:
    split: str = field(default=None, metadata=_is(_text, required=True))
    metric: str = field(default=None, metadata=_is(_text, required=True))
    stages: dict = field(default=None, metadata=_is(_mapping(_mapping(_list(lambda v, k: v, empty=False))), required=True))
    by: str = field(default="eval", metadata=_is(_one_of("eval", "score")))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Eval:
    batch_size: int = field(default=None, metadata=_is(_count(1), required=True))
    max_new_tokens: int = field(default=None, metadata=_is(_count(1), required=True))
    resamples: int = field(default=None, metadata=_is(_count(0), required=True))
    splits: tuple | None = field(default=None, metadata=_is(_list(_text)))
    limit: int | None = field(default=None, metadata=_is(_count(1, none=True)))
    posterior: bool = field(default=True, metadata=_is(_flag))
    curve: str | None = field(default=None, metadata=_is(_text))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Score:
    splits: tuple = field(default=None, metadata=_is(_list(_text), required=True))
    batch_size: int = field(default=None, metadata=_is(_count(1), required=True))
    queries: int | None = field(default=None, metadata=_is(_count(1)))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Report:
    differences: tuple | None = field(default=None, metadata=_is(_list(_list(_text, empty=False))))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


@dataclass(frozen=True)
class Baselines:
    kinds: tuple = field(default=None, metadata=_is(_list(_text, empty=False), required=True))
    train: str = field(default=None, metadata=_is(_text, required=True))
    splits: tuple = field(default=None, metadata=_is(_list(_text, empty=False), required=True))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())


def _stages(value, key):
    if not isinstance(value, dict) or not value:
        raise _Wrong(key, "must map stage names to their settings (at least one stage)")
    stages = {}
    for name, body in value.items():
        where = f"{key}.{name}"
        _stage_name(name, where)
        if not isinstance(body, dict):
            raise _Wrong(where, f"must be a mapping of settings, got {body!r}")
        own = {k: v for k, v in body.items() if k in STAGE_KEYS}
        stages[name] = replace(_section(Stage)(own, where), keys={k: v for k, v in body.items() if k not in STAGE_KEYS})
    return stages


@dataclass(frozen=True)
class Recipe:
    """A recipe as its sections, each value checked for type, sign and range, names against names
    (stages, seeds, metrics): `parse` refuses a mistake as one line before anything is read or run."""

    data: Data = field(default=None, metadata=_is(_section(Data), required=True))
    model: Model = field(default=None, metadata=_is(_section(Model), required=True))
    stages: dict = field(default=None, metadata=_is(_stages, required=True))
    common: dict | None = field(default=None, metadata=_is(_mapping(lambda v, k: v)))
    seeds: tuple | None = field(default=None, metadata=_is(_list(_count(0), empty=False)))
    sweep: Sweep | None = field(default=None, metadata=_is(_section(Sweep)))
    eval: Eval | None = field(default=None, metadata=_is(_section(Eval)))
    score: Score | None = field(default=None, metadata=_is(_section(Score)))
    report: Report | None = field(default=None, metadata=_is(_section(Report)))
    baselines: Baselines | None = field(default=None, metadata=_is(_section(Baselines)))
    given: tuple = field(default=(), repr=False, compare=False)  # the keys the recipe wrote (written())
    path: str = ""  # where it was read from; what was laid over it; the runner's inputs and sweep choices
    profile: str | None = None
    sets: tuple = ()
    inputs: dict | None = None
    choices: dict | None = None

    def as_json(self) -> dict:
        """The recipe as run (OUT/recipe.json): its sections as written, `_path`, `_profile`, `_sets`, and
        the runner's `_inputs` and `_choices`; `from_json` reads it back."""
        body = written(self)
        body.setdefault("common", {})
        body |= {"_path": self.path, "_profile": self.profile, "_sets": list(self.sets)}
        if self.inputs is not None:
            body["_inputs"] = self.inputs
        if self.choices is not None:
            body["_choices"] = self.choices
        return body


def recipe_keys() -> set[str]:
    """Every key a recipe may hold: its sections (and `profiles`), their keys, a stage's own keys."""
    keys = {"profiles"}
    for cls in (Recipe, Data, Add, Model, ModelInit, Stage, Sweep, Eval, Score, Report, Baselines):
        keys |= {spec.name.rstrip("_") for spec in fields(cls) if "check" in spec.metadata}
    return keys


EVAL_METRICS = ("accuracy", "macro_f1", "good_f1", "format_valid", "adherence", "step_accuracy",
                "posterior_accuracy", "ece", "ndcg@10")  # metrics.HEADLINE and the NDCG of `agrl eval`
SCORE_METRICS = ("macro_f1", "accuracy", "scored")  # metrics.score_metrics' of one-pass scores


def parse(raw: dict, path: str | Path) -> Recipe:
    """The recipe mapping as a Recipe, checked whole (each section, then the rules between sections);
    UserError naming the file and key."""
    try:
        return _between(_section(Recipe)(raw, "recipe"))
    except _Wrong as wrong:
        raise UserError(f"{path}: {str(wrong).removeprefix('recipe.')}") from None


def _between(recipe: Recipe) -> Recipe:
    """The rules between keys and sections: sources, stage order, seeds, sweep and report names."""
    data, model = recipe.data, recipe.model
    if data.dir is None:
        for key in ("seed", "noise"):
            if getattr(data, key) is None:
                raise _Wrong(f"data.{key}", "is required (or data.dir: an import folder)")
    sources = [k for k in ("base", "init", "import_", "path") if getattr(model, k) is not None]
    if len(sources) > 1:
        raise _Wrong("model", f"names {len(sources)} models ({', '.join(k.rstrip('_') for k in sources)}); keep one")
    if not sources:
        for key in ("size", "seed"):
            if getattr(model, key) is None:
                raise _Wrong(f"model.{key}", "is required (or model.base / init / import / path)")
    if recipe.eval is None and recipe.score is None:
        raise _Wrong("eval", "a recipe evaluates (eval) or scores (score) its stages")
    earlier, once = ["model"], {"model"}
    for name, stage in recipe.stages.items():
        if stage.from_ not in earlier:
            raise _Wrong(f"stages.{name}.from", "must be 'model' or an earlier stage")
        if stage.once:
            if stage.from_ not in once:
                raise _Wrong(f"stages.{name}.once", "a `once` stage starts from the model or a `once` stage")
            once.add(name)
        for seed in stage.seeds or ():
            if seed not in (recipe.seeds or ()):
                raise _Wrong(f"stages.{name}.seeds", f"{seed} is not one of the recipe's seeds "
                                                     f"({', '.join(map(str, recipe.seeds or ())) or 'none'})")
        earlier.append(name)
    sweep = recipe.sweep
    if sweep is not None:
        if sweep.by == "score" and recipe.score is None:
            raise _Wrong("sweep.by", "score needs a score section (its batch_size)")
        if sweep.by == "eval" and recipe.eval is None:
            raise _Wrong("sweep.by", "eval (the default) needs an eval section; or choose by: score")
        metrics = SCORE_METRICS if sweep.by == "score" else EVAL_METRICS
        if sweep.metric not in metrics:
            raise _Wrong("sweep.metric", f"{sweep.metric!r} is not a metric of the {sweep.by} "
                                         f"({', '.join(metrics)})")
        for name in sweep.stages:
            if name not in recipe.stages:
                raise _Wrong(f"sweep.stages.{name}", f"no such stage (stages: {', '.join(recipe.stages)})")
            if recipe.stages[name].once:
                raise _Wrong(f"sweep.stages.{name}", "a `once` stage is not swept")
    for pair in (recipe.report.differences or ()) if recipe.report else ():
        if len(pair) != 2 or not set(pair) <= set(recipe.stages):
            raise _Wrong("report.differences", f"{list(pair)}: each is [a, b], two stages of the recipe")
    if recipe.baselines:
        from agrl.evaluation.baselines import KINDS

        for kind in recipe.baselines.kinds:
            if kind not in KINDS:
                raise _Wrong("baselines.kinds", f"{kind!r} is not a baseline ({', '.join(KINDS)})")
    for split in (data.add or {}) if data.dir is None else ():
        if split not in {"sft", "rl", *SPLITS, *(data.sizes or {})}:
            raise _Wrong(f"data.add.{split}", f"is not a generated split (sft, rl, {', '.join(SPLITS)})")
    return recipe


def splits_of(recipe: Recipe) -> list[str]:
    """The splits the data step leaves in OUT/data (synthetic) or that the import folder holds."""
    data = recipe.data
    if data.dir is not None:
        return sorted(p.stem for p in Path(data.dir).glob("*.jsonl"))
    sizes = data.sizes or {"sft": 1, "rl": 1, **dict.fromkeys(SPLITS, 1)}
    parted = data.split or {}
    return [n for n in sizes if n not in parted] + [part for parts in parted.values() for part in parts]


def eval_splits(recipe: Recipe) -> list[str]:
    if recipe.eval is None:
        return []
    return list(SPLITS if recipe.eval.splits is None else recipe.eval.splits)


# ---------------------------------------------------------------------------- stages, expanded


def expand(recipe: Recipe, choices: dict[str, dict] | None = None) -> dict[str, dict]:
    """The concrete stages: name -> {"stage": recipe stage name, "seed", "keys" (extra `agrl train` keys),
    "from" (a concrete stage or `model`), "evals" (greedy eval splits), "scores" (one-pass score splits),
    "sweep": True for a grid point}. Without seeds the names are the recipe's, as is a `once` stage's
    (run at no recipe seed; every seed's stage from it starts from that one run). The swept stages' main
    runs are left out until `choices` (stage -> chosen keys) is given."""
    seeds = list(recipe.seeds or ()) or [None]
    sweep = recipe.sweep.stages if recipe.sweep is not None else {}
    by_score = recipe.sweep is not None and recipe.sweep.by == "score"
    scored = list(recipe.score.splits) if recipe.score is not None else []
    once = {name for name, stage in recipe.stages.items() if stage.once}
    tag = (lambda name, seed: name) if recipe.seeds is None else (lambda name, seed: f"{name}-s{seed}")
    out: dict[str, dict] = {}
    alias: dict[str, str] = {}  # a swept stage's first-seed run: the chosen grid point itself
    for seed in seeds:
        for name, stage in recipe.stages.items():
            if name in once:
                if seed == seeds[0]:
                    out[name] = {"stage": name, "seed": None, "keys": {}, "from": stage.from_,
                                 "evals": eval_splits(recipe), "scores": scored, "sweep": False}
                continue
            if seed is not None and seed not in (seeds if stage.seeds is None else stage.seeds):
                continue
            source = stage.from_ if stage.from_ in once | {"model"} else tag(stage.from_, seed)
            source = alias.get(source, source)
            if source != "model" and source not in out:
                continue  # starts from a swept stage not chosen yet
            keys = {} if seed is None else {"seed": seed}
            if name in sweep and seed == seeds[0]:
                split = [recipe.sweep.split]
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


def sweep_result(recipe: Recipe, out: Path, name: str) -> Path:
    """The file a grid point leaves on `sweep.split`: its greedy eval, or (`by: score`) its score's cost stamp."""
    split, at = recipe.sweep.split, Layout.of(recipe, out)
    return at.score(name, split, ".cost.json") if recipe.sweep.by == "score" else at.eval(name, split)


def choose(recipe: Recipe, out: Path) -> dict[str, dict]:
    """Each swept stage's grid point with the best `sweep.metric` on `sweep.split` (ties: the earlier);
    only the stages whose every grid point is done (`--only` may run some)."""
    sweep = recipe.sweep
    runs = {name: run for name, run in expand(recipe).items() if run["sweep"]}
    unfinished = {run["stage"] for name, run in runs.items() if not sweep_result(recipe, out, name).exists()}
    choices = {}
    for name, run in runs.items():
        if run["stage"] in unfinished:
            continue
        if sweep.by == "score":
            from agrl.evaluation.metrics import score_metrics

            metrics = score_metrics(Layout(out).score(name, sweep.split),
                                    score_source(recipe, out, sweep.split), recipe.data.scheme or DEFAULT)
        else:
            metrics = json.loads(sweep_result(recipe, out, name).read_text())["metrics"]
        value = metrics.get(sweep.metric)
        if value is None and sweep.metric not in metrics:
            raise UserError(f"{recipe.path}: sweep.metric: {sweep.metric!r} is not a metric of "
                            f"the {sweep.by} ({', '.join(metrics)})")
        point = {k: v for k, v in run["keys"].items() if k != "seed" or recipe.seeds is None}
        best = choices.get(run["stage"])
        if best is None or (value if value is not None else -1.0) > best[0]:
            choices[run["stage"]] = (value if value is not None else -1.0, point)
    grids = sweep.stages
    return {stage: {k: v for k, v in point.items() if k in grids[stage]} for stage, (_, point) in choices.items()}


def train_file(recipe: Recipe, name: str, runs: dict, out: Path) -> Path:
    return stage_data(recipe, recipe.stages[runs[name]["stage"]], out)


def stage_data(recipe: Recipe, stage: Stage, out: Path) -> Path:
    """The file a stage trains on: its split, or (`records: N`) the first N of a seeded shuffle of it."""
    if stage.records is not None:
        return Layout(out).records(stage.records, (recipe.common or {}).get("seed", 0))
    default = "train" if recipe.data.dir is not None else "sft"
    return data_file(recipe, default if stage.data is None else stage.data, out)


def data_file(recipe: Recipe, split: str, out: Path) -> Path:
    return Layout.of(recipe, out).split(split)


def score_source(recipe: Recipe, out: Path, split: str) -> Path:
    """The records a split is scored on: all of it, or (`score.queries: N`) its first N queries' pairs."""
    queries = recipe.score.queries
    return data_file(recipe, split, out) if queries is None else Layout(out).first_queries(split, queries)


def stage_config(recipe: Recipe, name: str, out: Path, runs: dict | None = None) -> dict[str, Any]:
    """The flat `agrl train` mapping of one concrete stage: its `config` file, the recipe's common keys,
    the stage's own keys, its seed / grid point, paths under OUT."""
    runs = runs or expand(recipe)
    run = runs[name]
    stage = recipe.stages[run["stage"]]
    base = yaml_file(config_file(recipe, run["stage"]), "stage config") if stage.config else {}
    config = {**base, **(recipe.common or {}), **stage.keys, **run["keys"]}
    if recipe.data.dir is not None and recipe.data.scheme:
        config["scheme"] = recipe.data.scheme
    local = run["from"] == "model" and recipe.model.path is not None  # a local HF model, used in place
    config["model"] = str(recipe.model.path if local else Layout(out).stage(run["from"]))
    config["train_file"] = str(train_file(recipe, name, runs, out))
    config["output_dir"] = str(Layout(out).stage(name))
    return config


def config_file(recipe: Recipe, stage: str) -> Path:
    """The file a stage's `config` names: a shipped stage (`sft`, `sft.yaml`: agrl/recipes/stages), else a
    YAML file in the recipe's folder or below it (no absolute path, no `../` out of it)."""
    name = recipe.stages[stage].config
    shipped = shipped_stage(name)
    if shipped:
        return shipped
    folder = Path(recipe.path).resolve().parent
    path = (folder / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(folder):
        raise UserError(f"{recipe.path}: stages.{stage}.config: {name}: a shipped stage "
                        f"({', '.join(shipped_stages())}) or a file beside the recipe, not a path out of its folder")
    if not path.is_file():
        raise UserError(f"{recipe.path}: stages.{stage}.config: {name}: no such stage config (shipped: "
                        f"{', '.join(shipped_stages())}; or a YAML file beside the recipe)")
    return path


def check_recipe(recipe: Recipe, out: Path) -> None:
    """Every concrete stage's `agrl train` config is checked (keys, types, ranges) before any step runs;
    so is every sweep grid point (a key no trainer takes fails here)."""
    from agrl.model.tiny import SIZES
    from agrl.train.config import load_config

    where = recipe.path
    model = recipe.model
    if model.base:
        from agrl.model.tiny import base_judge_dir

        try:
            base_judge_dir(model.base)
        except ValueError as err:
            raise UserError(f"{where}: model.base: {err}") from None
    size = model.size if model.size is not None else (model.init.size if model.init is not None else None)
    if size is not None and size not in SIZES:
        raise UserError(f"{where}: model.size: {size!r} is not one of {', '.join(SIZES)}")
    if model.path:
        from agrl.files import model_dir

        model_dir(model.path, f"{where}: model.path")
    if model.import_ and model.import_ != "smollm2":  # (smollm2: the model step says how to install it)
        from agrl.model.pretrained import resolve_source

        try:
            resolve_source(model.import_)
        except UserError as err:
            raise UserError(f"{where}: model.import: {err}") from None
    data = recipe.data
    if data.dir is not None and not (Path(data.dir) / "train.jsonl").is_file():
        raise UserError(f"{where}: data.dir: {data.dir}: no import there (train.jsonl); "
                        "run `agrl data import ... --out DIR` first")
    if data.exclude_queries_of:
        try:
            other = load_recipe(data.exclude_queries_of)
        except UserError as err:
            raise UserError(f"{where}: data.exclude_queries_of: {err}") from None
        if other.data.dir is not None:
            raise UserError(f"{where}: data.exclude_queries_of: {data.exclude_queries_of}: its data is an import, "
                            "not a generated benchmark")
    if data.scheme:
        from agrl.data.schemes import load_scheme

        try:
            load_scheme(data.scheme)
        except UserError as err:
            raise UserError(f"{where}: data.scheme: {err}") from None
    splits = splits_of(recipe)
    named = {"eval.splits": eval_splits(recipe), "score.splits": recipe.score.splits if recipe.score else (),
             "eval.curve": [recipe.eval.curve] if recipe.eval and recipe.eval.curve else [],
             "sweep.split": [recipe.sweep.split] if recipe.sweep else [],
             "baselines.train": [recipe.baselines.train] if recipe.baselines else [],
             "baselines.splits": recipe.baselines.splits if recipe.baselines else (),
             **{f"stages.{name}.data": [stage.data] for name, stage in recipe.stages.items() if stage.data is not None}}
    for key, names in named.items():
        for split in names:
            if split not in splits:
                raise UserError(f"{where}: {key}: {split!r} is not a split of the data ({', '.join(splits)})")
    grids = recipe.sweep.stages if recipe.sweep else {}
    plain = expand(replace(recipe, sweep=None))  # the stages as written first, then every grid point
    every = expand(recipe, {name: {k: v[0] for k, v in grid.items()} for name, grid in grids.items()})
    with tempfile.TemporaryDirectory() as tmp:
        for runs, swept in ((plain, False), (every, True)):
            for name, run in runs.items():
                path = Path(tmp) / "stage.yaml"
                path.write_text(yaml.safe_dump(stage_config(recipe, name, out, runs), sort_keys=False))
                try:
                    load_config(path)
                except UserError as err:
                    key = f"sweep.stages.{run['stage']}" if swept else f"stages.{run['stage']}"
                    raise UserError(f"{where}: {key}: {str(err).removeprefix(str(path) + ': ')}") from None
