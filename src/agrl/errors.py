"""The one error type for a user's mistake: a bad path, option, config, scheme, rule set or data file.

Raised at the boundary where the input is read, with a message that says what is wrong and what to do.
The CLI (cli.py) catches it, prints one line on stderr and exits 2; anything else is a bug and keeps
its traceback. It is a ValueError, so library callers that catch ValueError keep working.

    raise UserError(f"{path}: no such file; check the path")
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user gave: one line, names the file / line / field, says what to do."""
