"""Writing a file so that nobody ever reads half of it. Standard library only: the
benchmark scripts use it too, some of them without torch."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """write(handle) to a temp file beside `path`, fsync, rename: a crash leaves the old
    file or the new, and a failed write (a full disk) removes its temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def discard(path: Path) -> None:
    """Remove `path` and the temp files of writes to it that never ended: a process killed
    (SIGKILL, power cut) inside atomic_write leaves its temp file, which no except clause
    removes (a checkpoint's can be hundreds of MB)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for tmp in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
