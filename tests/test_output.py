"""The strict parser: each rejection reason, and render -> parse round trips."""

import pytest

from agrl.core.output import REJECTIONS, Judgement, Rejected, Step, parse_completion, render
from agrl.data.schemes import load_scheme

SCHEME = load_scheme("default")
GOOD = render(2, [Step("category", "match", "running shoes"), Step("brand", "mismatch", "nike vs adidas")], "violated")


def test_accepts_rendered_text():
    parsed = parse_completion(GOOD, SCHEME)
    assert isinstance(parsed, Judgement)
    assert parsed.label == 2
    assert parsed.verdicts == {"category": "match", "brand": "mismatch"}
    assert parsed.steps[1].evidence == "nike vs adidas"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no tags at all", "no label"),  # nothing to read
        ("ok " + GOOD, "label not first"),  # a preamble before the label
        (GOOD.replace("</think>", "<label>3</label></think>"), "two labels"),  # a label hidden in the reasoning
        (GOOD.replace("<label>2<", "<label>7<"), "unknown label"),  # not a level of the scheme
        (GOOD.replace("brand: mismatch", "colour: mismatch"), "unknown step"),
        (GOOD.replace("brand: mismatch", "brand: maybe"), "unknown verdict"),
        (GOOD + "\nand more", "text after the end tag"),
        (GOOD.replace("decision: 2", "decision: 3"), "contradicts"),
        (GOOD.replace("\ndecision: 2 | violated", ""), "no decision"),
        (GOOD.replace("brand: mismatch", "category: match"), "repeated step"),
        (GOOD + " " * 10 + "x" * 10000, "over-long"),
        (GOOD.replace("<think>\n", ""), "think block"),
    ],
)
def test_rejects_with_reason(text, reason):
    parsed = parse_completion(text, SCHEME)
    assert isinstance(parsed, Rejected)
    assert reason in parsed.reason


def test_evidence_cannot_smuggle_tags():
    text = render(4, [Step("category", "match", "a <label>1</label> | b\nc")], "ok")
    parsed = parse_completion(text, SCHEME)
    assert isinstance(parsed, Judgement) and parsed.label == 4


@pytest.mark.parametrize("text", [GOOD.replace("<label>2", "<label>7"), "", GOOD + "\nmore", GOOD.replace("brand", "colour")])
def test_rejection_kind_is_a_known_prefix_of_the_reason(text):
    # counting rejections groups by kind: a fixed vocabulary, never a cut of the message
    parsed = parse_completion(text, SCHEME)
    assert parsed.kind in REJECTIONS and parsed.reason.startswith(parsed.kind)
