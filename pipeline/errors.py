"""The one error type a user is meant to read: a problem they can fix, said in one line.

Any layer may raise it; `python -m pipeline` prints it as `error: <message>` on stderr and
exits 2, without a traceback (INTERFACE.md). Standard library only.
"""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable server."""
