"""Adaptive Guided Replay (spec section 6) as plain Python: detect, escalate, replace, remember.

The trainer (train/agr.py) feeds it global per-group outcome accuracies (r_out) once per
generation round; this module decides which groups are flagged, at which guidance level, which
rollouts are replaced, and which hard prompts come back in later batches (guided in `deferred`
mode, unguided from the hard-prompt buffer). No torch, no TRL; its state is a JSON-able dict.

    state = ReplayState(ReplaySettings(mode="deferred")); slots = state.plan(num_groups=8)
    flagged = state.observe(ids, group_accs, rows)   # after scoring; rows: id -> dataset row
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
    """The AGR knobs (AGRLConfig's agr_* fields without the prefix)."""

    mode: str = "deferred"
    k: int = 2
    threshold_cap: float = 0.25
    ema_decay: float = 0.9
    margin: float = 0.5
    max_level: int = 3
    buffer_size: int = 256
    replay_share: float = 0.25
    replay_delay: int = 2

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"agr_mode must be one of {MODES}, got {self.mode!r}")
        if self.k < 1 or not 1 <= self.max_level <= 3 or self.buffer_size < 0 or self.replay_delay < 1:
            raise ValueError(f"bad AGR settings: {self}")
        if not (
            0.0 <= self.threshold_cap < 1.0
            and 0.0 <= self.ema_decay < 1.0
            and 0.0 <= self.replay_share <= 1.0
        ):
            raise ValueError(f"bad AGR settings: {self}")


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
) -> dict[str, float]:
    """Per-step AGR counters. `levels`: guided group -> level; `acc_before/after`: guided group ->
    its accuracy without / with the guided rollouts; `replay_accs`: buffer returns' accuracies.
    Means over nothing are NaN (the caller skips them, so log averages stay honest)."""
    out = {
        "agr/threshold": thr,
        "agr/guided_group_share": len(levels) / num_groups if num_groups else 0.0,
        "agr/group_acc_before": _mean([acc_before[g] for g in levels]),
        "agr/group_acc_after": _mean([acc_after[g] for g in levels]),
        "agr/replay_acc": _mean(list(replay_accs)),
    }
    for level in (1, 2, 3):
        out[f"agr/level_{level}"] = float(sum(1 for v in levels.values() if v == level))
    return out


# ---------------------------------------------------------------------------- state


@dataclass
class Entry:
    """A hard prompt waiting to come back: its dataset row, and the round it was flagged in."""

    id: str
    row: dict[str, Any]
    added: int


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

    def observe(
        self, ids: Sequence[str], group_accs: Sequence[float | None], rows: dict[str, dict]
    ) -> dict[int, int]:
        """Update the EMA and threshold with this round's groups, flag the low ones, count their
        failures and remember them. Returns flagged group -> guidance level. `rows` maps the id of
        every flagged group to its dataset row (only those are needed). Ends the round."""
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
                self._remember(Entry(pid, rows[pid], self.round))
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
        """Restore counters and queues; the settings stay those of the current run."""
        self.ema, self.round, self.threshold = state["ema"], state["round"], state["threshold"]
        self.failures = dict(state["failures"])
        self.guided_replays = dict(state["guided_replays"])
        self.deferred = OrderedDict((e["id"], Entry(**e)) for e in state["deferred"])
        self.buffer = OrderedDict((e["id"], Entry(**e)) for e in state["buffer"])
