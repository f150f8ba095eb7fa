"""Training runs that tests compare for equality: both sides in a subprocess with one thread.

torch sums in another order with another thread count (3.6e-5 apart on 2 cores), so a killed-and-resumed
run and the unbroken run it is compared with must use the same ONE_THREAD environment.
"""

import os
import subprocess
import sys

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_command(config, overrides: list[str]) -> list[str]:
    """`python -m agrl train CONFIG --set o ...` as a subprocess argument list."""
    return [sys.executable, "-m", "agrl", "train", str(config)] + [x for o in overrides for x in ("--set", o)]


def one_thread_env() -> dict:
    return dict(os.environ, **ONE_THREAD)


def train_one_thread(config, overrides: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """An unbroken training run in a subprocess with ONE_THREAD: the other side of a resume's comparison."""
    result = subprocess.run(train_command(config, overrides), env=one_thread_env(), capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result
