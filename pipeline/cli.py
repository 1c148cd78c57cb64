"""The command line of every step, derived from its settings class; one-line errors.

Standard library only: a step's arguments are parsed and checked before torch, MLflow or
Optuna is imported (INTERFACE.md: exactly one `error:` line, no traceback, exit 2).
"""

from __future__ import annotations

import argparse
import sys

from pipeline import config
from pipeline.errors import UserError


class StepParser(argparse.ArgumentParser):
    """argparse that prints exactly `error: ...` (no usage block) and exits 2, and takes
    whole option names only: with argparse's abbreviations `-P epoch=2` trained 2 epochs
    as `--epochs` while MLflow logged `epoch`, and the run's `epochs` parameter said 10."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{message} (see `{self.prog} -h`)")


def at_least(minimum: int):
    """An argparse type for the bench scripts: an integer of at least `minimum`, so that a
    bad count is an `error:` line before any data is loaded, not a traceback mid-run."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def output_file(text: str) -> str:
    """An argparse type for the bench scripts' --json: a file whose folder exists or can be
    made now and takes files (where files.atomic_write puts its temporary file), and not a
    folder itself, so a bad path fails before the benchmark, not after it."""
    import tempfile
    from pathlib import Path

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file in it")
    for what, attempt in (
        ("create", lambda: path.parent.mkdir(parents=True, exist_ok=True)),
        ("write into", lambda: tempfile.TemporaryFile(dir=path.parent).close()),
    ):
        try:
            attempt()
        except OSError as exc:
            message = f"cannot {what} the folder of {text} ({exc.strerror})"
            raise argparse.ArgumentTypeError(message) from None
    return text


class Failed(SystemExit):
    """fail()'s exit, carrying the line it printed (a step run by `mlflow run` records it on
    its run)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(code)
        self.message = message


REFUSED = 2  # exit code of bad input: the same command refuses it again
UNAVAILABLE = 3  # exit code of a server that was unreachable (errors.Unavailable): try again


def fail(message: str, code: int = REFUSED) -> None:
    """Print one `error:` line on stderr and exit non-zero."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    raise Failed(line, code)


def print_result(result: dict) -> None:
    """A step's result: one JSON line, the last on stdout (progress goes to stderr)."""
    import json

    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


class Once(argparse.Action):
    """Stores a setting's value, refusing a second one: argparse would keep the last, and
    `mlflow run -P batch-size=64` (the MLproject's `--batch_size 128`, then `--batch-size
    64`) trained with 64 while MLflow logged batch_size=128."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if hasattr(namespace, self.dest):  # unset settings are absent (SUPPRESS)
            parser.error(
                f"{self.dest} given twice ({getattr(namespace, self.dest)!r}, then"
                f" {option_string} {values!r}); give each setting once"
            )
        setattr(namespace, self.dest, values)


def help_text(leaf: config.Leaf, default: str) -> str:
    unit = f"{leaf.unit}; " if leaf.unit else ""
    what = leaf.kind.describe()
    text = f"{leaf.help} ({unit}{what + '; ' if what else ''}default: {default})"
    return text.replace("%", "%%")  # argparse formats help strings with %


def parser_for(step: str, description: str = "") -> StepParser:
    """`--name value` for every flat setting of the step (`--name-with-dashes` too); the
    values stay text here and are checked when the settings object is built."""
    cls = config.STEP_SETTINGS[step]
    parser = StepParser(prog=f"python -m pipeline {step}", description=description)
    defaults = cls().params()
    for leaf in cls.leaves():
        flags = [f"--{leaf.name}"]
        if "_" in leaf.name:
            flags.append(f"--{leaf.name.replace('_', '-')}")
        parser.add_argument(
            *flags,
            dest=leaf.name,
            action=Once,
            default=argparse.SUPPRESS,  # unset: the settings class's default applies
            metavar=leaf.name.upper(),
            help=help_text(leaf, defaults[leaf.name]),
        )
    return parser


def parse(step: str, argv: list[str], description: str = "") -> config.Settings:
    """The step's settings from its command line; a bad value exits with one error line."""
    given = vars(parser_for(step, description).parse_args(argv))
    try:
        return config.STEP_SETTINGS[step].from_params(given)
    except UserError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits
