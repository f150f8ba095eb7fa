"""The respond-then-think output format: one renderer writes it, one strict parser reads it.

    <label>2</label>
    <think>
    category: match | running shoes
    brand: mismatch | nike vs adidas
    decision: 2 | a stated constraint is violated
    </think>

The label comes first (TaoSR1: label-first avoids error accumulation and lets production read
the score after prefill alone). Reward code trusts nothing the parser did not accept.

    >>> from agrl.data.schemes import load_scheme
    >>> text = render(2, [Step("category", "match"), Step("brand", "mismatch", "nike vs adidas")], "violated")
    >>> parse_completion(text, load_scheme("default")).verdicts
    {'category': 'match', 'brand': 'mismatch'}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agrl.data.records import RowError, step_verdicts
from agrl.data.schemes import Scheme

LABEL_OPEN, LABEL_CLOSE = "<label>", "</label>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TAGS = (LABEL_OPEN, LABEL_CLOSE, THINK_OPEN, THINK_CLOSE)
MAX_COMPLETION_CHARS = 2000
REJECTIONS = (
    "over-long output", "no label", "two labels", "label not first", "label not closed", "unknown label",
    "missing or repeated think block", "text after the end tag", "empty reasoning", "no decision line",
    "decision", "malformed step line", "unknown step", "unknown verdict", "repeated step",
)

_LINE = re.compile(r"([a-z][a-z0-9_.]*): ([a-z/]+)(?: \| (.*))?")
_DECISION = re.compile(r"decision: (\S+)(?: \| (.*))?")


@dataclass(frozen=True)
class Step:
    name: str
    verdict: str
    evidence: str = ""


@dataclass(frozen=True)
class Judgement:
    """A completion the parser accepted."""

    label: int
    steps: tuple[Step, ...]
    reason: str = ""

    @property
    def verdicts(self) -> dict[str, str]:
        return {step.name: step.verdict for step in self.steps}


@dataclass(frozen=True)
class Rejected:
    """A completion the parser refused: `kind` (one of REJECTIONS, what counts group by) + `detail`."""

    kind: str
    detail: str = ""

    @property
    def reason(self) -> str:
        return self.kind + self.detail


def render(label: int, steps: list[Step] | tuple[Step, ...], reason: str = "") -> str:
    """The one writer of the format (SFT targets, guidance, DPO oracle answers)."""
    lines = [f"{LABEL_OPEN}{label}{LABEL_CLOSE}", THINK_OPEN]
    for step in steps:
        lines.append(f"{step.name}: {step.verdict}" + (f" | {_clean(step.evidence)}" if step.evidence else ""))
    lines.append(f"decision: {label}" + (f" | {_clean(reason)}" if reason else ""))
    lines.append(THINK_CLOSE)
    return "\n".join(lines)


def _clean(text: str) -> str:
    """Evidence is one line of plain text: no newlines, no tags, no separator."""
    for tag in SPECIAL_TAGS:
        text = text.replace(tag, " ")
    return " ".join(text.replace("|", "/").split())


def parse_completion(
    text: str, scheme: Scheme, max_chars: int = MAX_COMPLETION_CHARS
) -> Judgement | Rejected:
    """Parse a completion strictly; anything off the format is `Rejected(kind, detail)`, never an exception."""
    if len(text) > max_chars:
        return Rejected("over-long output", f" ({len(text)} > {max_chars} characters)")
    opens = text.count(LABEL_OPEN)
    if opens == 0:
        return Rejected("no label")
    if opens > 1 or text.count(LABEL_CLOSE) > 1:
        return Rejected("two labels")
    body = text.strip()
    if not body.startswith(LABEL_OPEN):
        return Rejected("label not first")
    head, sep, rest = body[len(LABEL_OPEN):].partition(LABEL_CLOSE)
    if not sep:
        return Rejected("label not closed")
    label_text = head.strip()
    # isascii: str.isdigit accepts '²' and other Unicode digits that int() refuses
    if not (label_text.isascii() and label_text.isdigit()) or int(label_text) not in scheme.codes:
        return Rejected("unknown label", f" {label_text!r}")
    label = int(label_text)
    rest = rest.strip()
    if rest.count(THINK_OPEN) != 1 or rest.count(THINK_CLOSE) != 1 or not rest.startswith(THINK_OPEN):
        return Rejected("missing or repeated think block")
    inner, _, after = rest[len(THINK_OPEN):].partition(THINK_CLOSE)
    if after.strip():
        return Rejected("text after the end tag")
    lines = [line.strip() for line in inner.strip().splitlines() if line.strip()]
    if not lines:
        return Rejected("empty reasoning")
    *step_lines, decision_line = lines
    decision = _DECISION.fullmatch(decision_line)
    if decision is None:
        return Rejected("no decision line")
    decided = decision.group(1)
    if decided != label_text:
        return Rejected("decision", f" {decided!r} contradicts label {label}")
    steps: list[Step] = []
    seen: set[str] = set()
    for line in step_lines:
        match = _LINE.fullmatch(line)
        if match is None:
            return Rejected("malformed step line", f" {line[:60]!r}")
        name, verdict, evidence = match.group(1), match.group(2), match.group(3) or ""
        allowed = step_verdicts(name)
        if allowed is None:
            return Rejected("unknown step", f" {name!r}")
        if verdict not in allowed:
            return Rejected("unknown verdict", f" {verdict!r} for step {name!r}")
        if name in seen:
            return Rejected("repeated step", f" {name!r}")
        seen.add(name)
        steps.append(Step(name, verdict, evidence.strip()))
    return Judgement(label, tuple(steps), (decision.group(2) or "").strip())


def check_reasoning(record, scheme: Scheme) -> None:
    """A record's `reasoning` (SFT's target) must be a completion the parser accepts, with the row's label:
    SFT would otherwise train the judge on text its own rewards reject. RowError naming the field."""
    text = record.extra.get("reasoning")
    if text is None:
        return
    parsed = parse_completion(text, scheme)
    if isinstance(parsed, Rejected):
        raise RowError("reasoning", f"not a completion the parser accepts: {parsed.reason}")
    if record.label is not None and parsed.label != record.label:
        raise RowError("reasoning", f"says label {parsed.label}, the row's label is {record.label}")
