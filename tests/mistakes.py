"""The check every bad-input table runs (test_hostile*.py): each case exits 2 with one `error:` line that
holds the expected words, shows no traceback, and changes nothing under the workspace."""

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from agrl.cli import app


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "other"
            for p in sorted(root.rglob("*"))}


def mistake_failures(ws: Path, table: list[tuple[str, list, str]]) -> list[str]:
    """One line per case of `table` ((name, argv, expected words)) that broke the rule; [] when all kept it."""
    failures = []
    for name, argv, expected in table:
        before = snapshot(ws)
        result = CliRunner().invoke(app, [str(a) for a in argv])
        lines = result.stderr.strip().splitlines()
        problems = []
        if result.exit_code != 2:
            problems.append(f"exit {result.exit_code} ({result.exception!r})")
        if len(lines) != 1 or not lines[0].startswith("error: ") or expected not in lines[0]:
            problems.append(f"stderr {result.stderr!r}, wanted one line with {expected!r}")
        if "Traceback" in result.output:
            problems.append("a traceback")
        after = snapshot(ws)
        if after != before:
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            problems.append(f"changed {changed[:5]}")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    return failures
