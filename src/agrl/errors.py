"""The one error type for a user's mistake: a bad path, option, config, scheme, rule set or data file.

Raised at the boundary where the input is read, with a message that says what is wrong and what to do.
The CLI (cli.py) catches it, prints one line on stderr and exits 2; anything else is a bug and keeps
its traceback. It is a ValueError, so library callers that catch ValueError keep working.

    raise UserError(f"{path}: no such file; check the path")

Its HTTP counterpart, HTTPError, is the one refusal both web apps raise (serve answers it as
`{"error": ...}`, sbs as `{"detail": ...}`): a status and a message that starts with the field.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in what the user gave: one line, names the file / line / field, says what to do."""


class HTTPError(Exception):
    """An answer other than 200 (serve and sbs): `message` starts with the field it is about."""

    def __init__(self, status: int, message: str, error_type: str | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.error_type = error_type or {500: "Backend", 503: "Unhealthy", 429: "Overloaded"}.get(status, "Validation")
