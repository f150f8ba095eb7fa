"""Label schemes as data: levels (code, name, meaning), the good levels, and decision outcomes.

A scheme is loaded from YAML: a built-in name (`default`, `esci`, `three_level`) or a file path.
`outcomes` maps the rules engine's decision outcomes to this scheme's levels (see rules.py).

    scheme = load_scheme("default"); scheme.code("Excellent")  # -> 4
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from agrl.errors import UserError
from agrl.files import yaml_file

OUTCOMES = ("all_match", "uncertain", "violation", "off_category")


@dataclass(frozen=True)
class Level:
    code: int
    name: str
    meaning: str = ""


@dataclass(frozen=True)
class Scheme:
    name: str
    levels: tuple[Level, ...]  # best first
    good: frozenset[int]
    outcomes: dict[str, int]

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(level.code for level in self.levels)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def name_of(self, code: int) -> str:
        return next(level.name for level in self.levels if level.code == code)

    def code(self, value: int | str) -> int:
        """A label given as a code, a digit string or a level name -> its code; ValueError otherwise."""
        if isinstance(value, bool):
            raise ValueError(f"label {value!r} is not a level of scheme {self.name!r}")  # noqa: TRY004 (a RowError upstream)
        if isinstance(value, int) and value in self.codes:
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit() and int(text) in self.codes:
                return int(text)
            for level in self.levels:
                if level.name.lower() == text.lower():
                    return level.code
        raise ValueError(
            f"label {value!r} is not a level of scheme {self.name!r} "
            f"(codes {list(self.codes)}, names {[lv.name for lv in self.levels]})"
        )

    def is_good(self, code: int) -> bool:
        return code in self.good


def _code(value: object, where: str) -> int:
    """A level code as written: an integer 0-9 (not 4.5, not "4", not true), since it is a label token."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise UserError(f"{where}: must be an integer 0-9 (a level code is one label token), got {value!r}")
    return value


def scheme_from_dict(data: dict, source: str = "<dict>") -> Scheme:
    """A Scheme from its YAML mapping; UserError naming the field for anything a later stage could not use."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a label scheme must be a mapping with name, levels, good, outcomes")
    missing = [key for key in ("name", "levels", "good", "outcomes") if key not in data]
    if missing:
        raise UserError(f"{source}: missing key(s) {missing} (a scheme has name, levels, good, outcomes)")
    if not isinstance(data["levels"], list) or not all(isinstance(lv, dict) for lv in data["levels"]):
        raise UserError(f"{source}: levels: must be a list of {{code, name, meaning}} mappings")
    levels = []
    for index, lv in enumerate(data["levels"]):
        if not isinstance(lv.get("name"), str) or not lv["name"].strip():
            raise UserError(f"{source}: levels[{index}].name: must be a non-empty string")
        levels.append(Level(_code(lv.get("code"), f"{source}: levels[{index}].code"), lv["name"].strip(),
                            str(lv.get("meaning", ""))))
    levels = tuple(sorted(levels, key=lambda lv: -lv.code))
    codes = {lv.code for lv in levels}
    names = [lv.name.lower() for lv in levels]
    if len(codes) != len(levels) or len(levels) < 2:
        raise UserError(f"{source}: levels: a scheme needs at least two levels with distinct codes")
    if len(set(names)) != len(names):
        raise UserError(f"{source}: levels: names must be distinct (labels are also given by name)")
    if not isinstance(data["good"], list) or not data["good"]:
        raise UserError(f"{source}: good: must list at least one level code (Good-F1 and tiers need one)")
    good = frozenset(_code(c, f"{source}: good") for c in data["good"])
    if not good <= codes:
        raise UserError(f"{source}: good: levels {sorted(good - codes)} are not levels of the scheme")
    if good == codes:
        raise UserError(f"{source}: good: every level is good; leave at least one bad level")
    if not isinstance(data["outcomes"], dict) or set(data["outcomes"]) != set(OUTCOMES):
        raise UserError(f"{source}: outcomes: must map exactly {list(OUTCOMES)} to level codes")
    outcomes = {k: _code(v, f"{source}: outcomes.{k}") for k, v in data["outcomes"].items()}
    if not set(outcomes.values()) <= codes:
        raise UserError(f"{source}: outcomes: {sorted(set(outcomes.values()) - codes)} are not levels of the scheme")
    return Scheme(name=str(data["name"]), levels=levels, good=good, outcomes=outcomes)


DEFAULT = "default"  # the label scheme of data and judges that name none: spelled here only


@cache
def load_scheme(name_or_path: str = DEFAULT) -> Scheme:
    """A built-in scheme by name, or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return scheme_from_dict(yaml_file(path, "label scheme"), str(path))
    builtin = resources.files("agrl") / "recipes" / "schemes" / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise UserError(f"--scheme {name_or_path}: unknown label scheme (built-in: default, esci, three_level; "
                        "or a .yaml file)")
    return scheme_from_dict(yaml.safe_load(builtin.read_text()), f"scheme {name_or_path}")
