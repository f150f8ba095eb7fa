"""Rule-aware Reward Shaping (spec section 5): format gate, outcome, step and adherence rewards.

Each term is its own TRL reward callable, so TRL logs it separately (rewards/<name>); with their
weights their sum is exactly R = w_out*r_out + g*(w_step*r_step + w_adh*r_adh) behind the hard gate
(r_invalid for a completion the parser rejects). The dense terms count only where the record has
gold steps (`RulesEngine.gold_steps` is None where the rules are not trusted on it): there the label
alone is rewarded. A reward term is one callable plus its entry in REWARDS; a config names terms
there or by import path (`module:function`, as TRL's scripts take them), and weighs them by name.
Every user function `reward_funcs` returns is a CheckedReward: an answer TRL would train on silently (NaN,
Inf, a string) or end in a traceback on (a wrong length, an exception) is one UserError naming the reward;
`probe_rewards` calls each once on a tiny batch before any model loads. Pure Python: no torch, no TRL import.

    funcs, weights = reward_funcs(["format_gate", "outcome", "step"], load_scheme("default"), {"step": 0.3})
    GRPOTrainer(..., reward_funcs=funcs, args=GRPOConfig(reward_weights=weights, ...))
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agrl.errors import UserError
from agrl.core.output import Judgement, Rejected, parse_completion, render
from agrl.core.rules import DecisionTable
from agrl.data.schemes import Scheme

# ---------------------------------------------------------------------------- reading inputs


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The text of a completion, plain or conversational (TRL gives `[{"role": "assistant", ...}]`)."""
    if isinstance(completion, str):
        return completion
    return "".join(
        str(message.get("content", "")) for message in completion if message.get("role") == "assistant"
    )


def read_steps(steps: str | dict[str, str] | None) -> dict[str, str] | None:
    """Gold step verdicts from a dataset cell (JSON text or a dict); missing or null -> None (no gold steps)."""
    if isinstance(steps, str):
        steps = json.loads(steps) if steps else None
    return None if steps is None else dict(steps)


def _ordinal_credit(predicted: int, gold: int, scheme: Scheme) -> float:
    ranks = {code: rank for rank, code in enumerate(scheme.codes)}
    return 1.0 - abs(ranks[predicted] - ranks[gold]) / (scheme.num_levels - 1)


def outcome_credit(judgement: Judgement, label: int, scheme: Scheme, ordinal: bool = False) -> float:
    """r_out for an accepted completion: 1 if the label is right, else 0 (or ordinal credit)."""
    if ordinal:
        return _ordinal_credit(judgement.label, label, scheme)
    return 1.0 if judgement.label == label else 0.0


def step_accuracy(judgement: Judgement, steps: dict[str, str]) -> float:
    """r_step: share of gold steps reproduced. A missing step is wrong; a non-n/a step that gold
    lacks (or has as n/a) is wrong too, so the denominator is gold steps + such extra steps."""
    gold = {name: verdict for name, verdict in steps.items() if verdict != "n/a"}
    predicted = {name: verdict for name, verdict in judgement.verdicts.items() if verdict != "n/a"}
    extra = [name for name in predicted if name not in gold]
    total = len(gold) + len(extra)
    if total == 0:  # gold says nothing applies and the completion agrees
        return 1.0
    return sum(predicted.get(name) == verdict for name, verdict in gold.items()) / total


@dataclass(frozen=True)
class Grade:
    """One completion graded against its record: the strict parse, then label, steps and adherence."""

    parsed: Judgement | Rejected
    correct: bool  # accepted, with the gold label
    adheres: bool | None  # its own verdicts imply its own label (None: rejected, or no table)
    step_accuracy: float | None  # r_step against the gold steps (None: rejected, or no gold steps)

    @property
    def valid(self) -> bool:
        return isinstance(self.parsed, Judgement)


def grade(
    completion: str | list[dict[str, Any]],
    label: int | None,
    scheme: Scheme,
    table: DecisionTable | None = None,
    steps: dict[str, str] | None = None,
) -> Grade:
    """The one grading path (rewards, AGR, eval, DPO pairs, the service's /v1/judge).

    >>> from agrl.data.schemes import load_scheme
    >>> g = grade("<label>4</label>\\n<think>\\ncategory: match\\ndecision: 4\\n</think>", 4, load_scheme(),
    ...           DecisionTable.default(), {"category": "match"})
    >>> g.correct, g.adheres, g.step_accuracy
    (True, True, 1.0)
    >>> grade("four", 4, load_scheme()).parsed.kind
    'no label'
    """
    parsed = parse_completion(completion_text(completion), scheme)
    if not isinstance(parsed, Judgement):
        return Grade(parsed, False, None, None)
    adheres = table.adheres(parsed.verdicts, parsed.label, scheme) if table is not None else None
    return Grade(
        parsed, parsed.label == label, adheres, step_accuracy(parsed, steps) if steps is not None else None
    )


# ---------------------------------------------------------------------------- TRL reward callables


class _Reward:
    """Base of the built-in reward callables: picklable (a class, not a closure), `__name__` = TRL's
    metric name, `weight` = its default weight. Built per run from the scheme, the decision table and
    the term settings (r_invalid, step_credit_when_wrong, ordinal_outcome)."""

    __name__ = "reward"
    weight = 1.0

    def __init__(
        self,
        scheme: Scheme,
        table: DecisionTable | None = None,
        *,
        r_invalid: float = -1.0,
        step_credit_when_wrong: float = 0.5,
        ordinal_outcome: bool = False,
    ):
        self.scheme = scheme
        self.table = table or DecisionTable.default()
        self.r_invalid = r_invalid
        self.step_credit_when_wrong = step_credit_when_wrong
        self.ordinal_outcome = ordinal_outcome

    def __call__(
        self, completions: list, label: list, steps: list | None = None, **kwargs: Any
    ) -> list[float]:
        steps = steps if steps is not None else [None] * len(completions)
        out = []
        for completion, gold_label, gold in zip(completions, label, steps, strict=True):
            gold_label = self.scheme.code(gold_label)
            graded = grade(completion, gold_label, self.scheme, self.table, read_steps(gold))
            out.append(self.value(graded, gold_label) if graded.valid else self.rejected())
        return out

    def rejected(self) -> float:
        return 0.0  # only the gate scores a rejected completion

    def value(self, graded: Grade, label: int) -> float:
        raise NotImplementedError

    def gain(self, graded: Grade) -> float:
        """g: dense terms count fully when the label is right, `step_credit_when_wrong` otherwise."""
        return 1.0 if graded.correct else self.step_credit_when_wrong


class FormatGate(_Reward):
    """Hard gate: `r_invalid` (default -1) for a completion the parser rejects, 0 otherwise.

    >>> from agrl.data.schemes import load_scheme
    >>> gate = FormatGate(load_scheme("default"))
    >>> gate(["<label>4</label>\\n<think>\\ncategory: match\\ndecision: 4\\n</think>", "four"], label=[4, 4])
    [0.0, -1.0]
    """

    __name__ = "format_gate"

    def rejected(self) -> float:
        return self.r_invalid

    def value(self, graded: Grade, label: int) -> float:
        return 0.0


class Outcome(_Reward):
    """r_out: 1 if the completion's label equals the gold label, else 0 (ordinal credit if asked).

    >>> from agrl.data.schemes import load_scheme
    >>> outcome = Outcome(load_scheme("default"))
    >>> outcome(["<label>2</label>\\n<think>\\ncategory: match\\ndecision: 2\\n</think>"] * 2, label=[2, 3])
    [1.0, 0.0]
    """

    __name__ = "outcome"

    def value(self, graded: Grade, label: int) -> float:
        return outcome_credit(graded.parsed, label, self.scheme, self.ordinal_outcome)


class StepReward(_Reward):
    """g * r_step: the share of gold step verdicts the completion reproduces.

    >>> from agrl.data.schemes import load_scheme
    >>> step = StepReward(load_scheme("default"))
    >>> text = "<label>2</label>\\n<think>\\ncategory: match\\nbrand: match\\ndecision: 2\\n</think>"
    >>> step([text], label=[2], steps=['{"category": "match", "brand": "mismatch"}'])
    [0.5]
    """

    __name__ = "step"
    weight = 0.5

    def value(self, graded: Grade, label: int) -> float:
        return 0.0 if graded.step_accuracy is None else self.gain(graded) * graded.step_accuracy


class Adherence(_Reward):
    """g * r_adh: 1 if the decision table on the completion's own verdicts gives its own label.

    >>> from agrl.data.schemes import load_scheme
    >>> adherence = Adherence(load_scheme("default"))
    >>> follows = "<label>2</label>\\n<think>\\ncategory: match\\nbrand: mismatch\\ndecision: 2\\n</think>"
    >>> breaks = "<label>4</label>\\n<think>\\ncategory: match\\nbrand: mismatch\\ndecision: 4\\n</think>"
    >>> adherence([follows, breaks], label=[2, 2], steps=['{"category": "match"}'] * 2)
    [1.0, 0.0]
    >>> adherence([follows], label=[2], steps=[None])  # no gold steps: the label alone is rewarded
    [0.0]
    """

    __name__ = "adherence"
    weight = 0.25

    def value(self, graded: Grade, label: int) -> float:
        # Only where the record has gold steps (the rules are trusted on it): elsewhere a completion
        # without steps would "adhere" only with the table's all-match label (measured on Home Depot:
        # RL then collapses onto it; docs/results.md, "Home Depot: LLM judges").
        if graded.step_accuracy is None:
            return 0.0
        return self.gain(graded) * (1.0 if graded.adheres else 0.0)


# The built-in terms by name; a new term is its callable (a _Reward subclass, or any TRL reward function
# with an optional `weight` attribute) and one line here.
REWARDS: dict[str, Callable] = {
    "format_gate": FormatGate,
    "outcome": Outcome,
    "step": StepReward,
    "adherence": Adherence,
}
REWARD_NAMES = tuple(REWARDS)


def load_reward(spec: str) -> Callable:
    """The reward callable (or _Reward class) a config names: a REWARDS key, or `module:function` /
    `module.function` (TRL's scripts' dotted path; the working directory is importable, as there).

    >>> load_reward("step") is StepReward, load_reward("agrl.core.rewards:completion_text") is completion_text
    (True, True)
    """
    if spec in REWARDS:
        return REWARDS[spec]
    module, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not (module and attr):
        raise ValueError(f"unknown reward {spec!r}: one of {list(REWARDS)}, or module:function")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {spec!r}: cannot import it ({err})") from None
    if not callable(func):
        raise ValueError(f"reward {spec!r}: not callable")  # noqa: TRY004 (a config mistake, as above)
    return func


def _is_term(func: Callable) -> bool:
    """A _Reward class (built per run from the scheme and settings), not a ready TRL reward function."""
    return isinstance(func, type) and issubclass(func, _Reward)


def reward_name(spec: str) -> str:
    """The name TRL logs a reward under (rewards/<name>) and its weight's key: the callable's __name__
    (a _Reward class's instances', which `FormatGate.__name__`, the class's own name, is not)."""
    func = load_reward(spec)
    return inspect.getattr_static(func, "__name__") if _is_term(func) else func.__name__


def default_weights(specs: list[str] | tuple[str, ...]) -> dict[str, float]:
    """{name: default weight}: a callable's own `weight` (the built-ins: 1, 1, 0.5, 0.25), else 1 as in TRL."""
    names = {reward_name(spec): float(getattr(load_reward(spec), "weight", 1.0)) for spec in specs}
    if len(names) != len(specs):
        raise ValueError(f"two rewards share a name (TRL logs each as rewards/<name>): {list(specs)}")
    return names


def check_weights(specs: list[str] | tuple[str, ...], weights: Mapping[str, Any]) -> dict[str, float]:
    """Every reward's weight by name (defaults filled in); ValueError naming a bad one."""
    names = default_weights(specs)
    unknown = [name for name in weights if name not in names]
    if unknown:
        raise ValueError(f"{unknown} not among this run's rewards {list(names)}")
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a finite number >= 0 (a weight), got {value!r}")
    return {name: float(weights.get(name, default)) for name, default in names.items()}


def reward_funcs(
    specs: list[str] | tuple[str, ...],
    scheme: Scheme,
    weights: Mapping[str, float] | None = None,
    table: DecisionTable | None = None,
    **settings: Any,
) -> tuple[list[Callable], list[float]]:
    """The named reward callables and their TRL `reward_weights`, in order: `weights` by name, the rest
    at their defaults. `settings` (r_invalid, step_credit_when_wrong, ordinal_outcome) go to the built-ins.

    >>> from agrl.data.schemes import load_scheme
    >>> funcs, w = reward_funcs(["format_gate", "outcome", "step"], load_scheme("default"), {"step": 0.3})
    >>> [f.__name__ for f in funcs], w
    (['format_gate', 'outcome', 'step'], [1.0, 1.0, 0.3])
    """
    scales = check_weights(specs, weights or {})
    funcs = []
    for spec, name in zip(specs, scales, strict=True):
        func = load_reward(spec)
        # the built-in terms answer one finite number per completion (tests/test_rewards.py); a user's is checked
        funcs.append(func(scheme, table, **settings) if _is_term(func) else CheckedReward(func, name))
    return funcs, list(scales.values())


# ---------------------------------------------------------------------------- checked answers


def check_rewards(name: str, values: Any, n: int) -> list[float | None]:
    """A reward function's answer for n completions as TRL takes it: one finite number per completion, or
    None (TRL's "no reward for this one", e.g. another task's row). Else a UserError naming the function."""
    where = f"reward {name!r}"
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        raise UserError(f"{where}: returned a {type(values).__name__}, not a list of one number per completion")
    values = list(values)
    if len(values) != n:
        raise UserError(f"{where}: returned {len(values)} values for {n} completions (one number, or None to "
                        "skip, per completion)")
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise UserError(f"{where}: value {i} is a {type(value).__name__} ({value!r:.40}), not a number")
        if not math.isfinite(value):
            raise UserError(f"{where}: value {i} is {value}: rewards must be finite (None skips a completion)")
    return values


class CheckedReward:
    """A reward callable whose every answer passes check_rewards; an exception it raises becomes a
    UserError naming it. `__name__` is the wrapped function's (TRL logs rewards/<name>); a class, not a
    closure, so it pickles as the built-ins do."""

    def __init__(self, func: Callable, name: str):
        self.func, self.__name__ = func, name

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        completions = kwargs["completions"] if "completions" in kwargs else args[0]
        try:
            values = self.func(*args, **kwargs)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"reward {self.__name__!r}: raised {type(err).__name__}: {err}") from err
        return check_rewards(self.__name__, values, len(completions))

    def __getattr__(self, attr: str) -> Any:  # the wrapped term's settings (weight, scheme, ...)
        if attr == "func":
            raise AttributeError(attr)
        return getattr(self.func, attr)


def probe_rewards(funcs: list[Callable], rows: list[dict[str, Any]], **extra: Any) -> None:
    """Call every reward once, before training, on each row's prompt with two completions: a rejected one
    (empty) and one in the format at the row's label; `extra`: the keywords TRL adds (trainer_state, ...).
    A reward that raises, or answers with the wrong length or type, fails here in one line."""
    rows = [row for row in rows for _ in range(2)]
    completions = [[{"role": "assistant", "content": "" if i % 2 == 0 else render(row["label"], [])}]
                   for i, row in enumerate(rows)]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"} if rows else {}
    for func in funcs:
        func(prompts=[row["prompt"] for row in rows], completions=completions,
             completion_ids=[[] for _ in rows], **columns, **extra)
