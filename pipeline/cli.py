"""Argument parsing shared by the steps: one-line errors and typed value parsers.

Standard library only: a step's parser must reject bad input before torch, MLflow or
Optuna are imported (INTERFACE.md: exactly one `error:` line, no traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem the user can fix; printed as one `error:` line, exit code 2."""


class StepParser(argparse.ArgumentParser):
    """argparse that prints exactly `error: ...` (no usage block) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(f"{message} (see `python -m pipeline {self.prog.split()[-1]} -h`)")


def fail(message: str, code: int = 2) -> None:
    """Print one `error:` line on stderr and exit non-zero."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def new_parser(step: str, description: str) -> StepParser:
    return StepParser(
        prog=f"python -m pipeline {step}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def _number(kind: Callable, text: str, name: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{name} must be finite, got {text!r}")
    return value


def int_at_least(low: int, name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}, got {value}")
        return value

    return parse


def float_in(low: float, high: float, name: str, *, low_open=False, high_open=False):
    """A float in [low, high] (or open at either end), finite."""

    def parse(text: str) -> float:
        value = float(_number(float, text, name))
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"{name} must be in {lo}{low}, {high}{hi}, got {text}")
        return value

    return parse


def boolean(name: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        lowered = str(text).strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise argparse.ArgumentTypeError(f"{name} must be true or false, got {text!r}")

    return parse


def choice(options: Sequence[str], name: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = str(text).strip().lower()
        if value not in options:
            raise argparse.ArgumentTypeError(
                f"{name} must be one of {', '.join(options)}; got {text!r}"
            )
        return value

    return parse


def choices_list(options: Sequence[str], name: str, empty: str = "none"):
    """A comma-separated subset of options; `empty` (or '') means none."""

    def parse(text: str) -> tuple[str, ...]:
        items = [t.strip().lower() for t in str(text).split(",") if t.strip()]
        if items in ([], [empty]):
            return ()
        bad = [t for t in items if t not in options]
        if bad:
            raise argparse.ArgumentTypeError(
                f"{name}: unknown {', '.join(bad)}; use {empty} or any of {','.join(options)}"
            )
        return tuple(dict.fromkeys(items))  # keep order, drop repeats

    return parse


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: 'a=1,b=[2,3]' -> ['a=1', 'b=[2,3]']."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def key_values(name: str) -> Callable[[str], dict]:
    """`k=v,k=[1,2]` -> dict with ints, floats, booleans and lists parsed; '' or 'none' -> {}."""

    def convert(value: str):
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            return [convert(v) for v in value[1:-1].split(",") if v.strip()]
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(value.lower(), value)

    def parse(text: str) -> dict:
        if str(text).strip().lower() in ("", "none"):
            return {}
        out = {}
        for item in _split_top_level(str(text)):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise argparse.ArgumentTypeError(
                    f"{name} must look like key=value,key=[1,2] (got {text!r})"
                )
            out[key.strip()] = convert(value)
        return out

    return parse
