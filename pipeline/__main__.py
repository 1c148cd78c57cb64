"""`python -m pipeline <step> [--name value ...]`: dispatch to pipeline/steps/<step>.py."""

from __future__ import annotations

import importlib
import signal
import sys

from pipeline.cli import UserError, fail
from pipeline.steps import STEPS

USAGE = f"usage: python -m pipeline {{{','.join(STEPS)}}} [-h] [--name value ...]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    step, rest = argv[0], argv[1:]
    if step not in STEPS:
        fail(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    # SIGTERM (a scheduler, `kill`) behaves like Ctrl-C: the run ends KILLED, exit 130.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    module = importlib.import_module(f"pipeline.steps.{step}")
    args = module.get_args_parser().parse_args(rest)
    try:
        return module.main(args) or 0
    except UserError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
