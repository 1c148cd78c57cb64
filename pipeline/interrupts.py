"""Ctrl-C and SIGTERM: stop the step, end its run KILLED, never leave it RUNNING.

Python raises KeyboardInterrupt wherever the main thread happens to be when a signal lands.
Two places make that unsafe for a run's status, both seen under load:
- between "the run was created" and "the code that ends it is in place" (the run stays
  RUNNING until a later step's stale-run check closes it), and
- inside library code that turns the interrupt into another exception (the run ended FAILED).
So the handler records that a signal came (`received()`, which the run status reads), and a
block in `deferred()` holds the interrupt until it ends.

Standard library only: any layer may use it; `python -m pipeline` installs it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_received: int | None = None  # the first SIGINT/SIGTERM this process got
_deferring = 0  # depth of nested deferred() blocks


def _handler(signum, frame) -> None:
    global _received
    if _received is None:
        _received = signum
    if not _deferring:
        raise KeyboardInterrupt


def install() -> None:
    """SIGTERM (a scheduler, `kill`) behaves like Ctrl-C, and both are recorded."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def received() -> bool:
    """A SIGINT or SIGTERM arrived: whatever exception follows, the step was stopped."""
    return _received is not None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise KeyboardInterrupt: a block that
    creates something (a run) finishes, so the caller's cleanup always has it to end."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _received is not None and not _deferring:
        raise KeyboardInterrupt
