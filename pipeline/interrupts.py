"""Ctrl-C and SIGTERM: stop the step, end its run KILLED, never leave it RUNNING.

Python raises KeyboardInterrupt wherever the main thread happens to be when a signal lands.
Three places make that unsafe for a run's status, all seen under load:
- between "the run was created" and "the code that ends it is in place" (the run stays
  RUNNING until a later step's stale-run check closes it);
- inside library code that turns the interrupt into another exception (the run ended FAILED);
- inside a database call of MLflow's or Optuna's store: SQLAlchemy's interrupted connection
  stays checked out with its transaction open while the exception lives, so on SQLite it
  holds the lock and the write that ends the run waits out the 20 s busy timeout, then fails
  (the run stayed RUNNING and the step exited 1).
So the handler records that a signal came (`received()`, which the run status reads), a block
in `deferred()` holds the interrupt until it ends, and an interrupt that lands inside a
database call is raised as that call returns, its session closed. A fourth place spoiled
only the exit code: `clear_exit_mark()`.

Standard library only: any layer may use it; `python -m pipeline` installs it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

_count = 0  # how many SIGINT/SIGTERM this process got
_deferring = 0  # depth of nested deferred() blocks
_returning = None  # the database call whose return raises the interrupt

# Code that must not be interrupted halfway: the database stores of MLflow and Optuna and
# SQLAlchemy beneath them. HTTP stores are not listed: an interrupted request holds no lock,
# and Ctrl-C should not wait out its retries.
DATABASE_CODE = (
    "sqlalchemy.",
    "mlflow.store.db.",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "optuna.storages._rdb.",
)


def _handler(signum, frame) -> None:
    global _returning, _count
    _count += 1
    if _deferring:
        return  # the deferred block raises it when it ends
    call = _outermost_database_call(frame)
    if call is not None and sys.getprofile() in (None, _raise_on_return):
        _returning = call  # a profile hook sees the call return (a yield counts too)
        sys.setprofile(_raise_on_return)
        return
    raise KeyboardInterrupt


def _outermost_database_call(frame):
    found = None
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(DATABASE_CODE):
            found = frame
        frame = frame.f_back
    return found


def _raise_on_return(frame, event, arg) -> None:
    global _returning
    if event == "return" and frame is _returning:
        _returning = None
        sys.setprofile(None)
        raise KeyboardInterrupt  # raised by that call, after its own cleanup ran


def clear_exit_mark() -> None:
    """Forget that a KeyboardInterrupt went through code run from source text; called as
    `python -m pipeline` exits, the interrupt handled.

    CPython (3.8 to 3.13 at least) marks an interrupt that ends the evaluation of a string
    (`exec` or `eval` of source, as dataclasses, namedtuple and SQLAlchemy's generated
    functions run) as unhandled even when a caller catches it; under `python -m` the
    interpreter then kills itself with SIGINT as it exits (-2, no traceback) instead of
    exiting 130. A step signalled inside such code ended its run KILLED, printed
    "interrupted", then died that way. Every string evaluation starts by clearing the mark,
    so an empty one does; an interrupt that is really unhandled is marked again after this,
    by runpy's caller.
    """
    eval("None")


def install() -> None:
    """SIGTERM (a scheduler, `kill`) behaves like Ctrl-C, and both are recorded."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def received() -> bool:
    """A SIGINT or SIGTERM arrived: whatever exception follows, the step was stopped."""
    return _count > 0


def deferred() -> contextlib.AbstractContextManager[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise KeyboardInterrupt: a block that
    creates something (a run) finishes, so the caller's cleanup always has it to end."""
    return _holding(since=0)


def held() -> contextlib.AbstractContextManager[None]:
    """Hold SIGINT/SIGTERM while cleanup that must finish runs (ending a run: MLflow takes
    it off its stack of active runs before the write that ends it, so an interrupt between
    the two left it RUNNING); only a signal that came meanwhile is raised after it."""
    return _holding(since=_count)


@contextlib.contextmanager
def _holding(since: int) -> Iterator[None]:
    """The block runs with signals held; KeyboardInterrupt after it when more than `since`
    signals have come by then (and no enclosing block holds them still)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _count > since and not _deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def allowed() -> Iterator[None]:
    """Inside a deferred() block, a part that signals may interrupt (a trial's objective,
    inside Optuna's bookkeeping: an interrupt between a trial's end and its `tell` left it
    RUNNING, and Optuna's `finally` then raised UnboundLocalError instead, exit 1); a
    signal held before it is raised as it begins."""
    global _deferring
    saved, _deferring = _deferring, 0
    try:
        if _count:
            raise KeyboardInterrupt
        yield
    finally:
        _deferring = saved
