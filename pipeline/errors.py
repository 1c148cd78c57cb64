"""The one error type a user is meant to read: a problem they can fix, said in one line.

Any layer may raise it; `python -m pipeline` prints it as `error: <message>` on stderr and
exits 2 (3 for Unavailable), without a traceback (INTERFACE.md). Standard library only.
"""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable server."""


class Unavailable(UserError):
    """A server that is unreachable or stopped answering: the same command may succeed once
    it is back, so it is not bad input (exit 3, not 2: Ray retries such a job)."""
