"""Rule-aware Reward Shaping: each term on hand-written completions, and their weighted sum == R."""

import json
import pickle

import pytest

from agrl.core.output import Step, render
from agrl.core.rewards import (
    REWARD_NAMES,
    Adherence,
    FormatGate,
    Outcome,
    StepReward,
    default_weights,
    grade,
    reward_funcs,
)
from agrl.data.schemes import load_scheme

SCHEME = load_scheme("default")


def total_reward(text, label, steps, scheme, weights=None, **settings) -> float:
    """R for one completion: every term weighted and summed, as TRL sums them."""
    funcs, scales = reward_funcs(REWARD_NAMES, scheme, weights, **settings)
    return sum(scale * func([text], [label], [steps])[0] for func, scale in zip(funcs, scales))
GOLD_LABEL = 2
GOLD_STEPS = {"category": "match", "brand": "mismatch", "attribute.color": "match"}

VALID = render(
    2,
    [
        Step("category", "match"),
        Step("brand", "mismatch", "nike vs adidas"),
        Step("attribute.color", "match"),
        Step("price", "n/a"),
    ],
    "violated",
)
WRONG_LABEL = render(1, [Step("category", "mismatch")], "off category")
WRONG_STEPS = render(2, [Step("category", "match"), Step("brand", "match"), Step("model", "mismatch")], "x")
INCONSISTENT = render(
    4, [Step("category", "match"), Step("brand", "mismatch"), Step("attribute.color", "match")]
)
MISSING_STEP = render(2, [Step("category", "match"), Step("brand", "mismatch")], "violated")


def terms(text, label=GOLD_LABEL, steps=GOLD_STEPS):
    """{name: value} of every RRS term for one completion (steps passed as a dict, as TRL may)."""
    funcs, _ = reward_funcs(REWARD_NAMES, SCHEME)
    return {f.__name__: f([text], label=[label], steps=[steps])[0] for f in funcs}


@pytest.mark.parametrize(
    "text, expected",
    [
        # right label, every gold step, adheres; the explicit `price: n/a` is neither missing nor extra
        (VALID, {"format_gate": 0.0, "outcome": 1.0, "step": 1.0, "adherence": 1.0}),
        # wrong label (category mismatch): none of 3 gold steps reproduced; adheres, at half credit (g=0.5)
        (WRONG_LABEL, {"format_gate": 0.0, "outcome": 0.0, "step": 0.0, "adherence": 0.5}),
        # right label; category reproduced, brand wrong, color missing, model extra -> 1 / (3 + 1)
        (WRONG_STEPS, {"format_gate": 0.0, "outcome": 1.0, "step": 0.25, "adherence": 1.0}),
        # verdicts imply 2 (brand mismatch) but it says 4: no adherence; wrong label halves the step credit
        (INCONSISTENT, {"format_gate": 0.0, "outcome": 0.0, "step": 0.5, "adherence": 0.0}),
        # a missing gold step counts as wrong: 2 of 3
        (MISSING_STEP, {"format_gate": 0.0, "outcome": 1.0, "step": pytest.approx(2 / 3), "adherence": 1.0}),
    ],
)
def test_terms_on_accepted_completions(text, expected):
    assert terms(text) == expected


ADVERSARIAL = [
    "the answer is 2",  # malformed: no tags at all
    "<label>2</label>",  # label without reasoning: the parser wants a think block
    "<label>2</label><label>4</label>\n<think>\ncategory: match\ndecision: 2\n</think>",  # two labels
    VALID.replace("brand: mismatch", "brand: mismatch <label>2</label>"),  # a label hidden in the reasoning
    VALID + "\n" + "junk " * 2000,  # 10,000 characters of junk after the end tag
    "x" * 10_000,  # 10,000 characters of junk alone
    "<label>²</label>\n<think>\ncategory: match\ndecision: ²\n</think>",  # a Unicode digit int() refuses
    "<label>2</label>\n<think>\n\x00category: match\ndecision: 2\n</think>",  # a control character
    "",  # empty generation (EOS at once)
    "</label>2<label>\n<think>\n</think>",  # tags reversed
]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_rejected_completions_get_only_the_gate(text):
    # the hard gate: r_invalid and nothing else counts, and no reward raises on model text
    assert terms(text) == {"format_gate": -1.0, "outcome": 0.0, "step": 0.0, "adherence": 0.0}
    assert total_reward(text, GOLD_LABEL, GOLD_STEPS, SCHEME) == -1.0


@pytest.mark.parametrize("text", [VALID, WRONG_LABEL, WRONG_STEPS, INCONSISTENT, MISSING_STEP])
@pytest.mark.parametrize(
    "weights, g_wrong",
    [({}, 0.5), ({"outcome": 2.0, "step": 0.3, "adherence": 0.7}, 0.1)],
)
def test_weighted_sum_is_spec_formula(text, weights, g_wrong):
    # R = w_out*r_out + g*(w_step*r_step + w_adh*r_adh), computed here from the raw terms
    t = terms(text)  # default g=0.5 baked in; undo it to get raw r_step, r_adh
    right = t["outcome"] == 1.0
    g_default = 1.0 if right else 0.5
    r_step, r_adh = t["step"] / g_default, t["adherence"] / g_default
    g = 1.0 if right else g_wrong
    w = {"outcome": 1.0, "step": 0.5, "adherence": 0.25} | weights  # the defaults, by reward name
    expected = w["outcome"] * t["outcome"] + g * (w["step"] * r_step + w["adherence"] * r_adh)
    funcs, scales = reward_funcs(REWARD_NAMES, SCHEME, weights, step_credit_when_wrong=g_wrong)
    got = sum(s * f([text], label=[GOLD_LABEL], steps=[GOLD_STEPS])[0] for f, s in zip(funcs, scales))
    assert got == pytest.approx(expected)
    assert total_reward(text, GOLD_LABEL, GOLD_STEPS, SCHEME, weights, step_credit_when_wrong=g_wrong) == (
        pytest.approx(expected)
    )


def test_dense_terms_never_outweigh_the_outcome():
    # the best wrong-label completion scores below the worst right-label accepted one
    best_wrong = render(
        3, [Step("category", "match"), Step("brand", "mismatch"), Step("attribute.color", "match")]
    )
    worst_right = render(2, [Step("category", "mismatch"), Step("brand", "match")])
    assert total_reward(best_wrong, 2, GOLD_STEPS, SCHEME) < total_reward(worst_right, 2, GOLD_STEPS, SCHEME)


def test_ordinal_outcome_credit():
    # 4 levels: one level off earns 1 - 1/3; two off 1/3; the gate still rules
    ordinal = Outcome(SCHEME, ordinal_outcome=True)
    texts = [render(code, [Step("category", "match")]) for code in (4, 3, 2, 1)]
    assert ordinal(texts, label=[3] * 4) == pytest.approx([2 / 3, 1.0, 2 / 3, 1 / 3])
    assert ordinal(["nonsense"], label=[3]) == [0.0]
    # a rollout is right (AGR's detector, the groups/* counters) only at full credit: the exact label
    assert [grade(t, 3, SCHEME).correct for t in texts] == [False, True, False, False]


def test_conversational_completions_and_json_steps():
    # TRL passes [{"role": "assistant", "content": ...}] for chat prompts and dataset cells as JSON text
    conv = [[{"role": "assistant", "content": VALID}]]
    cell = '{"category": "match", "brand": "mismatch", "attribute.color": "match"}'
    assert StepReward(SCHEME)(conv, label=[2], steps=[cell]) == [1.0]
    assert Outcome(SCHEME)(conv, label=["Mismatch"], steps=[None], prompts=["p"], trainer_state=None) == [1.0]


def test_steps_with_extra_non_na_verdicts_count_against():
    # gold has brand as n/a; claiming a brand mismatch is an extra wrong step: 1 / (1 + 1)
    text = render(2, [Step("category", "match"), Step("brand", "mismatch")])
    assert StepReward(SCHEME)([text], label=[2], steps=[{"category": "match", "brand": "n/a"}]) == [0.5]


def test_callables_pickle_and_unknown_names():
    funcs, _ = reward_funcs(REWARD_NAMES, SCHEME)
    clones = pickle.loads(pickle.dumps(funcs))
    assert [c([VALID], label=[2], steps=[GOLD_STEPS]) for c in clones] == [[0.0], [1.0], [1.0], [1.0]]
    assert isinstance(funcs[0], FormatGate) and isinstance(funcs[3], Adherence)
    with pytest.raises(ValueError, match="unknown reward"):
        reward_funcs(["outcome", "brevity"], SCHEME)


def test_rewards_by_import_path_and_weights_by_name():
    # TRL's scripts' forms: a registry name, `module:function` or `module.function`; the weight's key is the
    # name TRL logs the reward under (rewards/<name>), the default 1 for a function without its own weight
    funcs, scales = reward_funcs(["outcome", "agrl.core.rewards:completion_text"], SCHEME, {"completion_text": 0.2})
    assert [f.__name__ for f in funcs] == ["outcome", "completion_text"] and scales == [1.0, 0.2]
    assert default_weights(["step", "agrl.core.rewards.completion_text"]) == {"step": 0.5, "completion_text": 1.0}
    for specs, weights, message in [
        (["outcome", "agrl.core.rewards:nope"], {}, "cannot import"),
        (["outcome", "no_such_module_xyz:f"], {}, "cannot import"),
        (["outcome", "agrl.core.rewards:REWARD_NAMES"], {}, "not callable"),
        (["outcome", "agrl.core.rewards:completion_text", "agrl.core.rewards.completion_text"], {}, "share a name"),
        (["outcome"], {"step": 0.5}, "not among this run's rewards"),
        (["outcome"], {"outcome": -1.0}, "finite number >= 0"),
        (["outcome"], {"outcome": float("nan")}, "finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            reward_funcs(specs, SCHEME, weights)


def test_docstring_examples():
    # the TRL-style doctests in rewards.py run with the suite
    import doctest

    import agrl.core.rewards

    assert doctest.testmod(agrl.core.rewards).failed == 0


def test_dense_terms_stay_off_where_a_labelled_record_has_no_gold_steps():
    """A human-labelled title pair the rules are not trusted on (confidence below gold_step_confidence)
    has no gold steps: step and adherence give 0 to every completion, whatever steps it writes, so RL
    cannot earn them by writing no steps and the table's all-match label (what Home Depot showed)."""
    from agrl.data.records import parse_record
    from agrl.core.rules import RulesEngine

    scheme = load_scheme("three_level")
    rows = [("cordless drill", "DEWALT 20-Volt Max Cordless Drill", 3), ("shower faucet", "Glacier Bay Shower Faucet Trim Kit", 2)]
    records = [parse_record({"id": str(i), "query": q, "product": {"title": t}, "label": label}, scheme)
               for i, (q, t, label) in enumerate(rows)]
    engine = RulesEngine.from_records(records, scheme)
    trusted, untrusted = (engine.gold_steps(r) for r in records)
    assert trusted == {"category": "match"} and untrusted is None
    funcs, _ = reward_funcs(list(REWARD_NAMES), scheme)
    terms = {f.__name__: f for f in funcs}
    bare = "<label>3</label>\n<think>\ndecision: 3\n</think>"  # no steps: the table says all match -> 3
    stepped = "<label>3</label>\n<think>\ncategory: match\ndecision: 3\n</think>"
    for text in (bare, stepped):
        assert terms["step"]([text], label=[2], steps=[json.dumps(untrusted)]) == [0.0]
        assert terms["adherence"]([text], label=[2], steps=[json.dumps(untrusted)]) == [0.0]
    assert terms["step"]([stepped], label=[3], steps=[json.dumps(trusted)]) == [1.0]
    assert terms["adherence"]([stepped], label=[3], steps=[json.dumps(trusted)]) == [1.0]
    assert terms["step"]([bare], label=[3], steps=[json.dumps(trusted)]) == [0.0]  # a missing gold step is wrong


# ---------------------------------------------------------------------------- a user's reward checked


def _nan(completions, **kwargs):
    return [float("nan")] * len(completions)


def _inf(completions, **kwargs):
    return [1.0] * (len(completions) - 1) + [float("-inf")]


def _short(completions, **kwargs):
    return [1.0] * (len(completions) - 1)


def _words(completions, **kwargs):
    return ["good"] * len(completions)


def _raises(completions, **kwargs):
    return 1 / 0


def _one_number(completions, **kwargs):
    return 1.0


def _skips_some(completions, **kwargs):
    return [None, 0.5][: len(completions)]


@pytest.mark.parametrize("func, message", [
    (_nan, "reward '_nan': value 0 is nan: rewards must be finite (None skips a completion)"),
    (_inf, "reward '_inf': value 1 is -inf"),
    (_short, "reward '_short': returned 1 values for 2 completions"),
    (_words, "reward '_words': value 0 is a str ('good'), not a number"),
    (_raises, "reward '_raises': raised ZeroDivisionError: division by zero"),
    (_one_number, "reward '_one_number': returned a float, not a list of one number per completion"),
])
def test_a_user_reward_with_a_garbage_answer_is_one_line_naming_it(func, message, monkeypatch):
    """A reward TRL would train on (NaN, Inf) or end in a traceback on (length, type, exception)."""
    import sys
    import types

    from agrl.errors import UserError
    from agrl.core.rewards import probe_rewards

    module = types.ModuleType("hostile_rewards")
    setattr(module, func.__name__, func)
    monkeypatch.setitem(sys.modules, "hostile_rewards", module)
    funcs, _ = reward_funcs(["format_gate", f"hostile_rewards:{func.__name__}"], SCHEME)
    assert funcs[1].__name__ == func.__name__  # TRL logs rewards/<name> and weighs by it, as before
    rows = [{"prompt": [{"role": "user", "content": "q"}], "label": 2, "steps": None, "id": "a"}]
    with pytest.raises(UserError) as err:
        probe_rewards(funcs, rows, trainer_state=None)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match=func.__name__):  # every call in training is checked the same way
        funcs[1](prompts=["p", "p"], completions=["a", "b"], label=[2, 2])


def test_none_skips_a_completion_and_a_checked_reward_pickles(monkeypatch):
    import sys
    import types

    module = types.ModuleType("skipping_rewards")
    module._skips_some = _skips_some
    monkeypatch.setitem(sys.modules, "skipping_rewards", module)
    funcs, _ = reward_funcs(["skipping_rewards:_skips_some"], SCHEME)
    assert funcs[0](completions=["a", "b"]) == [None, 0.5]  # TRL's "no reward for this one"
    assert pickle.loads(pickle.dumps(funcs[0]))(["a", "b"]) == [None, 0.5]
