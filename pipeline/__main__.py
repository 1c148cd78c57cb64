"""`python -m pipeline <step> [--name value ...]`: parse the step's settings, run the step."""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys

from pipeline import cli, config, interrupts
from pipeline.errors import Unavailable, UserError

# Write failures a user can fix by freeing space or choosing another folder.
STORAGE_ERRORS = (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT)
# A file where a folder should be (or the reverse): FMB_DATA_DIR or FMB_MLRUNS_DIR mistyped.
PATH_ERRORS = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
USAGE = f"usage: python -m pipeline {{{','.join(config.STEPS)}}} [-h] [--name value ...]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv:  # bad input: the usage on stderr, then the one error line
        print(USAGE, file=sys.stderr)
        cli.fail(f"name a step: {', '.join(config.STEPS)}")
    step, rest = argv[0], argv[1:]
    if step not in config.STEPS:
        cli.fail(f"unknown step {step!r}; choose one of {', '.join(config.STEPS)}")
    module = importlib.import_module(f"pipeline.steps.{step}")
    try:
        settings = cli.parse(step, rest, " ".join(module.__doc__.split()))
    except cli.Failed as exc:
        note_failure(step, exc.message)
        raise
    interrupts.install()  # SIGTERM behaves like Ctrl-C: the run ends KILLED, exit 130
    # A file-size limit (`ulimit -f`) then fails a write with EFBIG instead of killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return module.main(settings) or 0
    except UserError as exc:
        note_failure(step, str(exc))
        cli.fail(str(exc), cli.UNAVAILABLE if isinstance(exc, Unavailable) else cli.REFUSED)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        where = exc.filename or "a file"
        if exc.errno in PATH_ERRORS:
            cli.fail(
                f"cannot create or open {where}: {exc.strerror}; FMB_DATA_DIR and FMB_MLRUNS_DIR"
                " must name folders (or places where one can be made)"
            )
        if exc.errno not in STORAGE_ERRORS:
            raise
        cli.fail(
            f"cannot write {where}: {exc.strerror}; nothing half-written was kept. Free space,"
            " or point FMB_DATA_DIR / FMB_MLRUNS_DIR at a writable disk"
        )
    return 0


def note_failure(step: str, message: str) -> None:
    """A step started by `mlflow run` that refuses its input before its run begins leaves
    MLflow's run FAILED with no word of why, without the step tag compare's "Not ranked"
    table reads, and under MLflow's random name (adjective-animal-123): say all three on it.
    A run the step had begun (or a resumed one) has its tags already and is left as it is.
    Never fatal."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from pipeline import tracking

        tags = tracking.get_run(run_id).data.tags
        # `mlflow run`'s run has no step tag yet; the run main made for a Ray task has one,
        # and its queued name until the step begins (tracking.project_child_run)
        queued = tags.get("mlflow.runName", "").endswith(tracking.QUEUED)
        if "pipeline.step" not in tags or queued:
            line = " ".join(message.split())[:5000]  # as the `error:` line says it
            name = f"{step} (refused)"
            tracking.set_tags(
                run_id, {"pipeline.step": step, "error": line, "mlflow.runName": name}
            )
    except Exception:  # the store may be what failed
        pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:  # 130 (or the step's error) must not turn into death by SIGINT: see there
        interrupts.clear_exit_mark()
