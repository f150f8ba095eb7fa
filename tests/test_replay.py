"""Adaptive Guided Replay logic (agrl.core.replay): pure Python, milliseconds.

OMP_NUM_THREADS=1 .venv/bin/python -m pytest -x -q tests/test_replay.py
"""

import json
import math

import pytest

from agrl.core.replay import (
    ReplaySettings,
    ReplayState,
    flag_groups,
    group_accuracies,
    level_for,
    lowest,
    step_metrics,
    threshold,
)


@pytest.mark.parametrize(
    "ema, margin, cap, expected",
    [
        (0.1, 0.5, 0.25, 0.0),  # low running accuracy: only all-wrong groups
        (0.6, 0.5, 0.25, 0.1),  # groups far below a decent running accuracy join
        (0.95, 0.5, 0.25, 0.25),  # the cap keeps a strong policy from flagging half-right groups
        (0.95, 0.5, 0.0, 0.0),  # cap 0: exactly the all-wrong rule
    ],
)
def test_threshold_follows_ema_and_is_capped(ema, margin, cap, expected):
    assert threshold(ema, margin, cap) == pytest.approx(expected)


def test_flag_groups_at_or_below_threshold_and_skips_unmeasured():
    # 0.125 == threshold must be flagged despite float error (1/8 computed as a mean)
    accs = [0.0, 1 / 8, sum([1.0] + [0.0] * 7) / 8, 0.25, None, 1.0]
    assert flag_groups(accs, 0.125) == [0, 1, 2]
    assert flag_groups(accs, 0.0) == [0]


def test_group_accuracy_counts_unguided_rows_only():
    accs = [0, 0, 1, 1, 1, 1, 1, 1]
    guided = [False, False, True, True, True, True, True, True]
    assert group_accuracies(accs, guided, 4) == [0.0, None]
    assert group_accuracies(accs, [False] * 8, 4) == [0.5, 1.0]


def test_level_escalates_with_failures_up_to_max():
    assert [level_for(n, 3) for n in range(6)] == [1, 1, 2, 3, 3, 3]
    assert [level_for(n, 2) for n in (1, 2, 3)] == [1, 2, 2]


def test_lowest_picks_k_lowest_scores_ties_by_row():
    assert lowest([0.5, -1.0, 0.2, -1.0, 1.0], 2) == [1, 3]
    assert lowest([0.0, 0.0, 0.0, 0.0], 3) == [0, 1, 2]
    assert lowest([3.0, 1.0, 2.0], 1) == [1]


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="agr_mode"):
        ReplaySettings(mode="later")
    with pytest.raises(ValueError):
        ReplaySettings(k=0)
    with pytest.raises(ValueError):
        ReplaySettings(max_level=4)


def test_ema_threshold_updates_and_all_wrong_group_flagged():
    state = ReplayState(ReplaySettings(mode="immediate", ema_decay=0.5, margin=0.5, threshold_cap=0.25))
    flagged = state.observe(["a", "b", "c", "d"], [0.0, 1.0, 1.0, 1.0])
    assert state.ema == pytest.approx(0.75)
    assert state.threshold == pytest.approx(0.25)
    assert flagged == {0: 1}
    # next round: accuracy 0.25 pulls the EMA to 0.5, threshold to 0; a 0.25 group is no longer flagged
    flagged = state.observe(["e", "f", "g", "h"], [0.25, 0.25, 0.25, 0.25])
    assert state.ema == pytest.approx(0.5)
    assert state.threshold == 0.0 and flagged == {}


def test_escalation_follows_failure_count():
    state = ReplayState(ReplaySettings(mode="immediate", max_level=3))
    levels = []
    for _ in range(4):
        flagged = state.observe(["hard", "easy"], [0.0, 1.0])
        levels.append(flagged[0])
    assert levels == [1, 2, 3, 3]
    assert state.failures == {"hard": 4}


def test_deferred_prompt_reenters_guided_then_returns_unguided():
    settings = ReplaySettings(mode="deferred", replay_share=0.5, replay_delay=2)
    state = ReplayState(settings)
    assert state.plan(4) == []
    state.observe(["h", "a", "b", "c"], [0.0, 1.0, 1.0, 1.0])  # round 0
    slots = state.plan(4)  # round 1: guided re-entry in the last group slot
    assert [(s.group, s.entry.id, s.level) for s in slots] == [(3, "h", 1)]
    assert slots[0].entry.id == "h" and slots[0].entry.acc == 0.0  # an id, not a row; its accuracy then
    state.observe(["a", "b", "c", "h"], [1.0, 1.0, 1.0, 0.5])  # the guided round helped
    slots = state.plan(4)  # round 2: back from the buffer, unguided
    assert [(s.group, s.entry.id, s.level) for s in slots] == [(3, "h", None)]
    state.observe(["a", "b", "c", "h"], [1.0, 1.0, 1.0, 0.75])
    assert state.plan(4) == [] and not state.buffer and not state.deferred


def test_deferred_refailure_escalates_and_guided_replays_are_bounded():
    state = ReplayState(ReplaySettings(mode="deferred", replay_share=1.0, max_level=2, replay_delay=50))
    seen = []
    for _ in range(4):
        slots = state.plan(2)
        seen.append([s.level for s in slots])
        state.observe(["x", "y"], [1.0, 0.0])
    # levels 1 then 2, then no more guided re-entries (max_level of them); it waits in the buffer
    assert seen == [[], [1], [2], []]
    assert list(state.buffer) == ["y"]


def test_plan_respects_quota_and_delay_and_buffer_size():
    state = ReplayState(ReplaySettings(mode="immediate", replay_share=0.25, replay_delay=1, buffer_size=2))
    state.observe(["p", "q", "r", "s"], [0.0, 0.0, 0.0, 1.0])
    assert list(state.buffer) == ["q", "r"]  # oldest dropped at capacity
    slots = state.plan(4)  # ceil(0.25 * 4) = 1 slot
    assert [(s.group, s.entry.id, s.level) for s in slots] == [(3, "q", None)]
    assert list(state.buffer) == ["r"]


def test_buffer_return_measured_and_refailure_rebuffers():
    state = ReplayState(ReplaySettings(mode="immediate", replay_share=1.0, replay_delay=1))
    state.observe(["z", "o"], [0.0, 1.0])
    slots = state.plan(2)
    assert [s.entry.id for s in slots] == ["z"] and not state.buffer
    flagged = state.observe(["o", "z"], [1.0, 0.0])
    assert flagged == {1: 2} and list(state.buffer) == ["z"]


def test_state_round_trip_through_json():
    state = ReplayState(ReplaySettings(mode="deferred"))
    state.observe(["a", "b"], [0.0, 0.5])
    state.plan(8)
    state.observe(["b", "a"], [0.0, 1.0])
    restored = ReplayState(ReplaySettings(mode="deferred"))
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored.state_dict() == state.state_dict()
    assert [s.entry for s in restored.plan(8)] == [s.entry for s in state.plan(8)]


def test_step_metrics():
    out = step_metrics(8, {0: 1, 5: 3}, {0: 0.0, 5: 0.25}, {0: 0.5, 5: 0.75}, [1.0, 0.5], 0.125)
    assert out["agr/guided_group_share"] == 0.25
    assert (out["agr/level_1"], out["agr/level_2"], out["agr/level_3"]) == (1.0, 0.0, 1.0)
    assert out["agr/group_acc_before"] == pytest.approx(0.125)
    assert out["agr/group_acc_after"] == pytest.approx(0.625)
    assert out["agr/replay_acc"] == pytest.approx(0.75)
    assert out["agr/threshold"] == 0.125
    empty = step_metrics(8, {}, {}, {}, [], 0.0)
    assert empty["agr/guided_group_share"] == 0.0 and math.isnan(empty["agr/replay_acc"])
    out = step_metrics(8, {0: 1}, {0: 0.0}, {0: 0.5}, [1.0], 0.0, guided_accs=[1.0, 0.0, 1.0], replay_accs_at_flag=[0.25])
    assert out["agr/guided_acc"] == pytest.approx(2 / 3) and out["agr/replay_acc_at_flag"] == 0.25
    assert math.isnan(empty["agr/guided_acc"]) and math.isnan(empty["agr/replay_acc_at_flag"])


def test_state_holds_ids_and_an_old_state_file_with_rows_still_loads():
    state = ReplayState(ReplaySettings(mode="deferred"))
    state.observe(["a", "b"], [0.0, 1.0])
    saved = state.state_dict()
    assert saved["buffer"] == [{"id": "a", "added": 0, "acc": 0.0}]
    old = json.loads(json.dumps(saved))
    for entry in old["buffer"] + old["deferred"]:  # the format before issue 9: whole rows, no accuracy
        entry["row"] = {"id": entry["id"], "prompt": "..."}
        del entry["acc"]
    restored = ReplayState(ReplaySettings(mode="deferred"))
    restored.load_state_dict(old)
    assert [(e.id, e.added, e.acc) for e in restored.buffer.values()] == [("a", 0, None)]


@pytest.mark.parametrize(
    "rows, right, hard, expected",
    [
        # two groups of 2: one all wrong (hard), one all right (common)
        ("two groups", [0, 0, 1, 1], [1, 1, 0, 0],
         {"groups/all_wrong": 0.5, "groups/all_right": 0.5, "groups/all_wrong_hard": 1.0, "groups/all_wrong_common": 0.0}),
        # no hard group this step: its share is left out, not NaN
        ("common only", [1, 0, 0, 0], [0, 0, 0, 0],
         {"groups/all_wrong": 0.5, "groups/all_right": 0.0, "groups/all_wrong_common": 0.5}),
    ],
)
def test_group_counters(rows, right, hard, expected):
    from agrl.core.replay import group_counters

    assert group_counters([bool(r) for r in right], [bool(h) for h in hard], 2) == expected


def test_a_prompt_in_two_groups_fails_once_per_round():
    state = ReplayState(ReplaySettings(mode="immediate"))
    flagged = state.observe(["d", "d", "e"], [0.0, 0.0, 1.0])
    assert flagged == {0: 1, 1: 1} and state.failures == {"d": 1}


def test_deferred_excess_waits_in_buffer_only():
    # three flagged prompts, one guided slot: the first re-enters guided, the others only come back unguided
    state = ReplayState(ReplaySettings(mode="deferred", replay_share=0.25, replay_delay=2))
    state.observe(["a", "b", "c", "d"], [0.0, 0.0, 0.0, 1.0])
    assert [(s.entry.id, s.level) for s in state.plan(4)] == [("a", 1)]
    assert not state.deferred and list(state.buffer) == ["a", "b", "c"]
    state.observe(["x", "y", "z", "a"], [1.0, 1.0, 1.0, 1.0])
    assert [(s.entry.id, s.level) for s in state.plan(4)] == [("a", None)]
    state.observe(["x", "y", "z", "a"], [1.0, 1.0, 1.0, 1.0])
    assert [(s.entry.id, s.level) for s in state.plan(4)] == [("b", None)]


def test_plan_shares_slots_and_puts_escalating_prompts_first():
    state = ReplayState(ReplaySettings(mode="deferred", replay_share=0.5, replay_delay=1))
    state.observe(["old", "x", "y", "z"], [0.0, 1.0, 1.0, 1.0])  # round 0
    state.plan(4)  # round 1: "old" replayed guided (level 1)
    # round 1: "old" fails again, two new prompts fail too; "old" is ready in the buffer as well
    state.observe(["new1", "new2", "w", "old"], [0.0, 0.0, 1.0, 0.0])
    slots = state.plan(4)  # quota 2: one guided (the escalating one first), one buffer return
    assert [(s.group, s.entry.id, s.level) for s in slots] == [(3, "old", 2), (2, "new1", None)]


def test_single_slot_alternates_between_guided_and_returns():
    state = ReplayState(ReplaySettings(mode="deferred", replay_share=0.25, replay_delay=1))
    kinds = []
    for step in range(6):  # every round two new prompts fail, so both queues always wait
        ids = [f"p{step}a", f"p{step}b", "ok1", "ok2"]
        kinds.append([s.level is not None for s in state.plan(4)])
        state.observe(ids, [0.0, 0.0, 1.0, 1.0])
    assert kinds == [[], [False], [True], [False], [True], [False]]
