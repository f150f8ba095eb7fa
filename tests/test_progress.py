"""progress.py: a line every tenth or every N seconds in a log, with rate, elapsed time and ETA; a bar on a
terminal; the train callback. A fake clock stands in for time.

    .venv/bin/python -m pytest -q tests/test_progress.py
"""

import io
from types import SimpleNamespace

from agrl.progress import Meter, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_meter_writes_a_line_per_tenth_and_per_interval_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    meter = Meter("score", total=1000, stream=out, every_s=30, clock=clock)
    for _ in range(99):  # 99 items in 99 s: no tenth done, but 30 s passed three times
        clock.now += 1
        meter.advance()
    lines = out.getvalue().splitlines()
    assert lines == ["score: 30/1,000 (3%), 1.0/s, elapsed 0:00:30, ETA 0:16:10",
                     "score: 60/1,000 (6%), 1.0/s, elapsed 0:01:00, ETA 0:15:40",
                     "score: 90/1,000 (9%), 1.0/s, elapsed 0:01:30, ETA 0:15:10"]
    clock.now += 1
    meter.advance()  # the 100th: a tenth
    assert out.getvalue().splitlines()[-1] == "score: 100/1,000 (10%), 1.0/s, elapsed 0:01:40, ETA 0:15:00"


def test_final_line_shows_the_real_elapsed_time():
    """`agrl score` showed 0:00:00 (its time remaining) at the end of a 4-minute run."""
    clock, out = Clock(), io.StringIO()
    meter = Meter("scoring", total=None, stream=out, clock=clock)
    clock.now = 242.4
    meter.update(5000)
    meter.close()
    assert out.getvalue().splitlines()[-1] == "scoring: 5,000, 20.6/s, done in 0:04:02"


def test_progress_writes_lines_when_not_a_terminal_and_nothing_when_disabled():
    out = io.StringIO()
    with progress("generate", total=20, stream=out) as advance:
        for _ in range(20):
            advance(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("generate: 2/20 (10%)") and "done in" in lines[-1]
    assert lines[-2].startswith("generate: 18/20 (90%)")  # no 100% line beside the last one
    quiet = io.StringIO()
    with progress("generate", total=20, enabled=False, stream=quiet) as advance:
        advance(20)
    assert quiet.getvalue() == ""


def test_training_callback_writes_step_lines_from_a_resumed_step():
    from agrl.train.common import ProgressLines

    out = io.StringIO()
    callback = ProgressLines(stream=out)
    state = SimpleNamespace(is_world_process_zero=True, max_steps=20, global_step=10)
    callback.on_train_begin(None, state, None)
    for step in range(11, 21):
        state.global_step = step
        callback.on_step_end(None, state, None)
    callback.on_train_end(None, state, None)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("train: 12/20 (60%) steps") and "done in" in lines[-1]
    assert len(lines) == 5  # 60%, 70%, 80%, 90%, done


def test_slow_work_shows_seconds_each_not_a_zero_rate():
    clock, out = Clock(), io.StringIO()
    meter = Meter("train", total=96, unit="steps", stream=out, clock=clock)
    clock.now = 148.0
    meter.update(7)
    assert out.getvalue().splitlines()[-1] == "train: 7/96 (7%) steps, 21.1 s each, elapsed 0:02:28, ETA 0:31:21"
