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
            raise ValueError(f"label {value!r} is not a level of scheme {self.name!r}")
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


def scheme_from_dict(data: dict, source: str = "<dict>") -> Scheme:
    try:
        levels = tuple(
            Level(int(lv["code"]), str(lv["name"]), str(lv.get("meaning", ""))) for lv in data["levels"]
        )
        levels = tuple(sorted(levels, key=lambda lv: -lv.code))
        good = frozenset(int(c) for c in data["good"])
        outcomes = {k: int(v) for k, v in data["outcomes"].items()}
        name = str(data["name"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: bad label scheme: {err!r}") from err
    codes = {lv.code for lv in levels}
    if len(codes) != len(levels) or len(levels) < 2:
        raise ValueError(f"{source}: a scheme needs at least two levels with distinct codes")
    if any(c < 0 or c > 9 for c in codes):
        raise ValueError(f"{source}: level codes must be single digits 0-9 (they are label tokens)")
    if not good <= codes:
        raise ValueError(f"{source}: good levels {sorted(good)} are not all levels of the scheme")
    if set(outcomes) != set(OUTCOMES) or not set(outcomes.values()) <= codes:
        raise ValueError(f"{source}: outcomes must map exactly {list(OUTCOMES)} to levels of the scheme")
    return Scheme(name=name, levels=levels, good=good, outcomes=outcomes)


@cache
def load_scheme(name_or_path: str = "default") -> Scheme:
    """A built-in scheme by name, or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return scheme_from_dict(yaml.safe_load(path.read_text()), str(path))
    builtin = resources.files("agrl") / "recipes" / "schemes" / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise ValueError(f"unknown label scheme {name_or_path!r}: not a built-in name nor a YAML file")
    return scheme_from_dict(yaml.safe_load(builtin.read_text()), f"scheme {name_or_path}")
