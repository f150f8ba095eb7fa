"""Rules engine: atomic rules (one reasoning step each), the decision table, query understanding.

One code path serves four purposes (spec section 2): step ground truth for dense rewards, teacher
reasoning for SFT, guidance for Adaptive Guided Replay, and rule adherence of a model's output.

    table = DecisionTable.default(); table.decide({"category": "match", "brand": "mismatch"}, scheme)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from agrl.schemes import OUTCOMES, Scheme

# ---------------------------------------------------------------------------- decision table

Condition = Callable[[dict[str, str]], bool]
CONDITIONS: dict[str, Condition] = {}


def register_condition(name: str) -> Callable[[Condition], Condition]:
    """Register a decision-table condition under a name usable from YAML."""

    def wrap(fn: Condition) -> Condition:
        CONDITIONS[name] = fn
        return fn

    return wrap


@register_condition("category_mismatch")
def _category_mismatch(verdicts: dict[str, str]) -> bool:
    return verdicts.get("category") == "mismatch"


@register_condition("any_violation")
def _any_violation(verdicts: dict[str, str]) -> bool:
    return any(v in ("mismatch", "violated") for v in verdicts.values())


@register_condition("any_unknown_or_substitute")
def _any_unknown(verdicts: dict[str, str]) -> bool:
    return verdicts.get("category") == "substitute" or "unknown" in verdicts.values()


@register_condition("always")
def _always(verdicts: dict[str, str]) -> bool:
    return True


REASONS = {
    "off_category": "the product type does not serve the query",
    "violation": "a stated constraint is violated",
    "uncertain": "a constraint is unconfirmed or the product is a substitute",
    "all_match": "every stated constraint holds",
}


@dataclass(frozen=True)
class DecisionRow:
    condition: str
    outcome: str


@dataclass(frozen=True)
class DecisionTable:
    """Ordered rows: the first whose condition holds gives the outcome; the scheme maps it to a level."""

    rows: tuple[DecisionRow, ...]

    def __post_init__(self):
        for row in self.rows:
            if row.condition not in CONDITIONS:
                raise ValueError(f"decision table: unknown condition {row.condition!r} (known: {sorted(CONDITIONS)})")
            if row.outcome not in OUTCOMES:
                raise ValueError(f"decision table: unknown outcome {row.outcome!r} (known: {list(OUTCOMES)})")
        if not self.rows or self.rows[-1].condition != "always":
            raise ValueError("decision table: the last row must have condition 'always'")

    @classmethod
    def default(cls) -> DecisionTable:
        return cls.from_list(
            [
                {"if": "category_mismatch", "then": "off_category"},
                {"if": "any_violation", "then": "violation"},
                {"if": "any_unknown_or_substitute", "then": "uncertain"},
                {"if": "always", "then": "all_match"},
            ]
        )

    @classmethod
    def from_list(cls, rows: list[dict]) -> DecisionTable:
        return cls(tuple(DecisionRow(str(r["if"]), str(r["then"])) for r in rows))

    def outcome(self, verdicts: dict[str, str]) -> str:
        return next(row.outcome for row in self.rows if CONDITIONS[row.condition](verdicts))

    def decide(self, verdicts: dict[str, str], scheme: Scheme) -> tuple[int, str]:
        """(label, short reason) for a set of step verdicts."""
        outcome = self.outcome(verdicts)
        return scheme.outcomes[outcome], REASONS[outcome]

    def adheres(self, verdicts: dict[str, str], label: int, scheme: Scheme) -> bool:
        """Rule adherence: do these verdicts imply this label under the table?"""
        return self.decide(verdicts, scheme)[0] == label
