"""Adaptive Guided Replay (spec section 6) as plain Python: detect, escalate, replace, remember.

The trainer (train/agr.py) feeds it global per-group outcome accuracies (r_out) once per
generation round; this module decides which groups are flagged, at which guidance level, which
rollouts are replaced, and which hard prompts come back in later batches (guided in `deferred`
mode, unguided from the hard-prompt buffer). No torch, no TRL; its state is a JSON-able dict.

    state = ReplayState(ReplaySettings(mode="deferred")); slots = state.plan(num_groups=8)
    flagged = state.observe(ids, group_accs)   # after scoring; the state holds prompt ids, not rows
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MODES = ("immediate", "deferred")
EPS = 1e-9  # group accuracies are means of 0/1 values: compare with a tolerance


@dataclass(frozen=True)
class ReplaySettings:
    """The AGR knobs, listed and validated here once (AGRLConfig's agr_* fields without the prefix;
    `group_size` is num_generations)."""

    mode: str = "deferred"
    k: int = 2
    threshold_cap: float = 0.25
    ema_decay: float = 0.9
    margin: float = 0.5
    max_level: int = 3
    buffer_size: int = 256
    replay_share: float = 0.25
    replay_delay: int = 2
    group_size: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"agr_mode must be one of {MODES}, got {self.mode!r}")
        # deferred groups keep at least one unguided rollout: it measures the prompt without the hint
        top = self.group_size - (self.mode == "deferred") if self.group_size is not None else self.k
        checks = {
            f"agr_k in [1, {top}] for num_generations={self.group_size}": 1 <= self.k <= top,
            "agr_max_level in [1, 3]": 1 <= self.max_level <= 3,
            "agr_buffer_size >= 0": self.buffer_size >= 0,
            "agr_replay_delay >= 1": self.replay_delay >= 1,
            "agr_threshold_cap in [0, 1)": 0.0 <= self.threshold_cap < 1.0,
            "agr_ema_decay in [0, 1)": 0.0 <= self.ema_decay < 1.0,
            "agr_replay_share in [0, 1]": 0.0 <= self.replay_share <= 1.0,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"bad AGR settings: need {'; '.join(failed)} ({self})")


# ---------------------------------------------------------------------------- plain functions


def threshold(ema: float, margin: float, cap: float) -> float:
    """Flag groups at or below this accuracy: 0 flags only all-wrong groups; it rises with the
    running accuracy (groups far below it are flagged too) but never above `cap`."""
    return min(cap, max(0.0, ema - margin))


def flag_groups(group_accs: Sequence[float | None], thr: float) -> list[int]:
    """Indices of the groups whose (unguided) outcome accuracy is at or below the threshold."""
    return [i for i, acc in enumerate(group_accs) if acc is not None and acc <= thr + EPS]


def level_for(failures: int, max_level: int) -> int:
    """Guidance level 1 -> 2 -> 3 with the prompt's failure count (1st failure -> level 1)."""
    return min(max_level, max(1, failures))


def lowest(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k lowest scores (ties: the earlier row), in ascending index order."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[:k])


def group_accuracies(accs: Sequence[float], guided: Sequence[bool], group_size: int) -> list[float | None]:
    """Mean outcome accuracy of each group over its unguided rows (None if it has none)."""
    assert len(accs) == len(guided) and len(accs) % group_size == 0, (len(accs), len(guided), group_size)
    out: list[float | None] = []
    for start in range(0, len(accs), group_size):
        vals = [
            a for a, g in zip(accs[start : start + group_size], guided[start : start + group_size]) if not g
        ]
        out.append(sum(vals) / len(vals) if vals else None)
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def step_metrics(
    num_groups: int,
    levels: dict[int, int],
    acc_before: dict[int, float],
    acc_after: dict[int, float],
    replay_accs: Sequence[float],
    thr: float,
    guided_accs: Sequence[float] = (),
    replay_accs_at_flag: Sequence[float] = (),
) -> dict[str, float]:
    """Per-step AGR counters. `levels`: guided group -> level; `acc_before/after`: guided group ->
    its accuracy without / with the guided rollouts; `guided_accs`: the guided rollouts' own
    accuracies; `replay_accs`: buffer returns' accuracies now, `replay_accs_at_flag`: theirs when
    flagged. Means over nothing are NaN (the caller skips them, so log averages stay honest)."""
    out = {
        "agr/threshold": thr,
        "agr/guided_group_share": len(levels) / num_groups if num_groups else 0.0,
        "agr/group_acc_before": _mean([acc_before[g] for g in levels]),
        "agr/group_acc_after": _mean([acc_after[g] for g in levels]),
        "agr/guided_acc": _mean(list(guided_accs)),
        "agr/replay_acc": _mean(list(replay_accs)),
        "agr/replay_acc_at_flag": _mean(list(replay_accs_at_flag)),
    }
    for level in (1, 2, 3):
        out[f"agr/level_{level}"] = float(sum(1 for v in levels.values() if v == level))
    return out


def group_counters(right: Sequence[bool], hard: Sequence[bool], group_size: int) -> dict[str, float]:
    """The mechanism counters of every GRPO-family run, per step: share of groups whose rollouts are
    all not right (`groups/all_wrong`, and among hard / common families), all right (`groups/all_right`).
    `right`: per rollout, outcome accuracy 1; `hard`: per rollout, its record's family is hard. A
    share over no group is left out (never NaN into the log averages).

    >>> group_counters([0, 0, 1, 1, 1, 0], [True, True, False, False, False, False], 2)
    {'groups/all_wrong': 0.3333333333333333, 'groups/all_right': 0.3333333333333333, 'groups/all_wrong_hard': 1.0, 'groups/all_wrong_common': 0.0}
    """
    assert len(right) == len(hard) and len(right) % group_size == 0, (len(right), len(hard), group_size)
    groups = [(right[i : i + group_size], hard[i]) for i in range(0, len(right), group_size)]
    wrong = [not any(g) for g, _ in groups]
    out = {
        "groups/all_wrong": sum(wrong) / len(groups),
        "groups/all_right": sum(all(g) for g, _ in groups) / len(groups),
    }
    for name, want in (("hard", True), ("common", False)):
        picked = [w for w, (_, h) in zip(wrong, groups) if h == want]
        if picked:
            out[f"groups/all_wrong_{name}"] = sum(picked) / len(picked)
    return out


# ---------------------------------------------------------------------------- state


@dataclass
class Entry:
    """A hard prompt waiting to come back: its id (the trainer looks its row up in the training
    dataset), the round it was flagged in and its group accuracy then."""

    id: str
    added: int
    acc: float | None = None


@dataclass(frozen=True)
class Slot:
    """One group of the next batch given to a hard prompt: guided at `level`, or unguided (None)."""

    group: int
    entry: Entry
    level: int | None


class ReplayState:
    """EMA of batch accuracy, failure counts, the deferred queue and the hard-prompt buffer.

    Every process holds an identical copy: it is only ever updated from gathered (global) data.
    """

    def __init__(self, settings: ReplaySettings):
        self.settings = settings
        self.ema: float | None = None
        self.round = 0
        self.failures: dict[str, int] = {}
        self.guided_replays: dict[str, int] = {}
        self.deferred: OrderedDict[str, Entry] = OrderedDict()
        self.buffer: OrderedDict[str, Entry] = OrderedDict()
        self.threshold = 0.0

    def level(self, prompt_id: str) -> int:
        return level_for(self.failures.get(prompt_id, 0), self.settings.max_level)

    def plan(self, num_groups: int) -> list[Slot]:
        """Hard prompts for this round's batch, taking the last group slots (at most
        ceil(replay_share * num_groups)): prompts flagged last round come back guided (deferred mode;
        most failures first, so escalation gets its turn), buffer entries at least `replay_delay`
        rounds old come back unguided. When both wait, returns keep half the slots (an odd slot
        alternates by round) so replay accuracy is measured even while many groups fail. Flagged prompts that found no
        slot are not replayed guided (the next batch is their only turn) but stay in the buffer."""
        quota = min(num_groups, math.ceil(self.settings.replay_share * num_groups))
        ready = [pid for pid, e in self.buffer.items() if e.added + self.settings.replay_delay <= self.round]
        queue = sorted(
            self.deferred.values(), key=lambda e: -self.failures.get(e.id, 0)
        )  # stable: FIFO on ties
        self.deferred.clear()
        slots: list[Slot] = []
        returns = min(len(ready), (quota + self.round % 2) // 2)  # half the slots; an odd one alternates
        for entry in queue[: quota - returns]:
            self.guided_replays[entry.id] = self.guided_replays.get(entry.id, 0) + 1
            slots.append(Slot(num_groups - 1 - len(slots), entry, self.level(entry.id)))
        planned = {slot.entry.id for slot in slots}
        for pid in [pid for pid in ready if pid not in planned][: quota - len(slots)]:
            slots.append(Slot(num_groups - 1 - len(slots), self.buffer.pop(pid), None))
        return slots

    def observe(self, ids: Sequence[str], group_accs: Sequence[float | None]) -> dict[int, int]:
        """Update the EMA and threshold with this round's groups, flag the low ones, count their
        failures and remember them. Returns flagged group -> guidance level. Ends the round."""
        measured = [a for a in group_accs if a is not None]
        if measured:
            batch_acc = sum(measured) / len(measured)
            decay = self.settings.ema_decay
            self.ema = batch_acc if self.ema is None else decay * self.ema + (1 - decay) * batch_acc
        self.threshold = threshold(self.ema or 0.0, self.settings.margin, self.settings.threshold_cap)
        flagged: dict[int, int] = {}
        for group in flag_groups(group_accs, self.threshold):
            pid = ids[group]
            if pid not in {ids[g] for g in flagged}:  # one failure per prompt per round
                self.failures[pid] = self.failures.get(pid, 0) + 1
                self._remember(Entry(pid, self.round, group_accs[group]))
            flagged[group] = self.level(pid)
        self.round += 1
        return flagged

    def _remember(self, entry: Entry) -> None:
        """Into the buffer (unguided return later); in deferred mode also into the guided queue,
        once per guidance level at most, so an unsolvable prompt cannot hog the batch."""
        self.buffer.pop(entry.id, None)
        if self.settings.buffer_size:
            self.buffer[entry.id] = entry
            while len(self.buffer) > self.settings.buffer_size:
                self.buffer.popitem(last=False)
        if (
            self.settings.mode == "deferred"
            and self.guided_replays.get(entry.id, 0) < self.settings.max_level
        ):
            self.deferred[entry.id] = entry

    # ------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "ema": self.ema,
            "round": self.round,
            "threshold": self.threshold,
            "failures": dict(self.failures),
            "guided_replays": dict(self.guided_replays),
            "deferred": [asdict(e) for e in self.deferred.values()],
            "buffer": [asdict(e) for e in self.buffer.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters and queues; the settings stay those of the current run. An older state
        file's whole rows are dropped (rows come from the training dataset by id)."""
        self.ema, self.round, self.threshold = state["ema"], state["round"], state["threshold"]
        self.failures = dict(state["failures"])
        self.guided_replays = dict(state["guided_replays"])

        def entries(saved: list[dict]) -> OrderedDict[str, Entry]:
            return OrderedDict((e["id"], Entry(e["id"], e["added"], e.get("acc"))) for e in saved)

        self.deferred, self.buffer = entries(state["deferred"]), entries(state["buffer"])
