"""Kinds of setting values: how each is read from text, checked, and spelled back.

A setting's value reaches the project in many ways: typed after `-P` or `--name`, written in
a profile (TOML: bools, numbers, lists, tables), proposed by an Optuna trial (Python
values). Each kind below turns any of these into one typed value, or raises ValueError with
a one-line message naming the setting; and it spells a value back in one canonical way (the
MLproject spelling: `true`/`false`, `none`, numbers as Python writes them), which is what
the project logs as an MLflow parameter and passes to child runs, so one value never has two
spellings. Standard library only: values are checked before torch is imported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEX = re.compile(r"[0-9a-f]+")
RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow run ids: uuid4 hex


def as_text(value: Any) -> str:
    """Any typed value as a user would type it (bool lowercase, lists comma-joined, tables
    as key=value): what a kind's `parse` reads back."""
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return Options().spell(value)
    if isinstance(value, list | tuple):
        return ",".join(as_text(v) for v in value) or "none"
    return repr(value) if isinstance(value, float) else str(value)


class Kind:
    """Base of the value kinds. `parse` takes text or a typed value."""

    mlproject_type = "string"  # the MLproject parameter type (MLflow checks path/uri only)
    # Only kinds that read comma lists take a list (a profile's `augment = ["flip"]`); for
    # the others a list is a mistake, which its comma-joined text hid: `seed = [1]` (or
    # `[[1]]`) in a profile was read as seed 1.
    takes_list = False

    def parse(self, value: Any, name: str) -> Any:
        if isinstance(value, list | tuple) and not self.takes_list:
            raise ValueError(f"{name} takes one value, not a list: got {list(value)}")
        return self.read(as_text(value).strip(), name)

    def read(self, text: str, name: str) -> Any:
        raise NotImplementedError

    def spell(self, value: Any) -> str:
        return as_text(value)

    def describe(self) -> str:
        return ""


@dataclass(frozen=True)
class Int(Kind):
    low: int = 0
    high: int | None = None
    mlproject_type = "float"

    def read(self, text: str, name: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None
        if value < self.low or (self.high is not None and value > self.high):
            raise ValueError(f"{name} must be {self.describe()}, got {value}")
        return value

    def describe(self) -> str:
        if self.high is None:
            return f"an integer >= {self.low}"
        return f"an integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Float(Kind):
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    mlproject_type = "float"

    def read(self, text: str, name: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {text!r}")
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = value >= self.high if self.high_open else value > self.high
        if too_low or too_high:
            raise ValueError(f"{name} must be in {self.describe()}, got {text}")
        return value

    def spell(self, value: Any) -> str:
        return repr(float(value))

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


@dataclass(frozen=True)
class Bool(Kind):
    def read(self, text: str, name: str) -> bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{name} must be true or false, got {text!r}")

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice(Kind):
    options: tuple[str, ...] = ()

    def read(self, text: str, name: str) -> str:
        if text.lower() not in self.options:
            raise ValueError(f"{name} must be one of {', '.join(self.options)}; got {text!r}")
        return text.lower()

    def describe(self) -> str:
        return ", ".join(self.options)


@dataclass(frozen=True)
class Subset(Kind):
    """A comma-separated subset of `options` (kept in their order); `none` for the empty one."""

    options: tuple[str, ...] = ()
    takes_list = True

    def read(self, text: str, name: str) -> tuple[str, ...]:
        if text.lower() in ("", "none"):
            return ()
        items = [t.strip().lower() for t in text.split(",")]
        if "" in items:
            raise ValueError(f"{name} has an empty item in {text!r}; write e.g. rotate,zoom")
        unknown = [t for t in items if t not in self.options]
        if unknown:
            raise ValueError(
                f"{name}: unknown {', '.join(unknown)}; use none or any of {','.join(self.options)}"
            )
        return tuple(o for o in self.options if o in items)  # one spelling per set

    def describe(self) -> str:
        return f"none or a comma list of {','.join(self.options)}"


def _split_top_level(text: str) -> list[str]:
    """'a=1,b=[2,3]' -> ['a=1', 'b=[2,3]']: commas inside brackets do not split."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _option_value(text: str) -> Any:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [_option_value(v) for v in text[1:-1].split(",") if v.strip()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def spell_option(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(spell_option(v) for v in value) + "]"
    return as_text(value)


@dataclass(frozen=True)
class Options(Kind):
    """Model options `key=value,key=[1,2]` (ints, floats, booleans, words, lists); `none`."""

    def parse(self, value: Any, name: str) -> dict:
        if isinstance(value, dict):
            value = self.spell(value)
        return self.read(str(value).strip(), name)

    def read(self, text: str, name: str) -> dict:
        if text.lower() in ("", "none"):
            return {}
        out = {}
        for item in _split_top_level(text):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"{name} must look like key=value,key=[1,2] (got {text!r})")
            if key.strip() in out:  # the last would win silently, and the first be ignored
                raise ValueError(f"{name} gives {key.strip()} twice (got {text!r})")
            out[key.strip()] = _option_value(value)
        return dict(sorted(out.items()))

    def spell(self, value: Any) -> str:
        items = sorted(dict(value).items())
        return ",".join(f"{k}={spell_option(v)}" for k, v in items) or "none"

    def describe(self) -> str:
        return "none or key=value,key=[a,b]"


@dataclass(frozen=True)
class OrNone(Kind):
    """Another kind, or None spelled as `word` (dropout's `default`, resume's `false`)."""

    inner: Kind = Kind()
    word: str = "none"

    @property
    def mlproject_type(self) -> str:  # type: ignore[override]
        return "string"

    @property
    def takes_list(self) -> bool:  # type: ignore[override]
        return self.inner.takes_list

    def read(self, text: str, name: str) -> Any:
        if text.lower() in ("", "none", self.word):
            return None
        return self.inner.read(text, name)

    def spell(self, value: Any) -> str:
        return self.word if value is None else self.inner.spell(value)

    def describe(self) -> str:
        return f"{self.word} or {self.inner.describe()}"


@dataclass(frozen=True)
class Text(Kind):
    """Free text checked by a pattern; `hint` says what is expected."""

    pattern: str = r".+"
    hint: str = "text"

    def read(self, text: str, name: str) -> str:
        if not re.fullmatch(self.pattern, text):
            raise ValueError(f"{name} must be {self.hint}, got {text!r}")
        return text

    def describe(self) -> str:
        return self.hint


def redact(url: str) -> str:
    """A URL without its password: URLs go into tags, logs and error messages (and the tune
    run's description). libpq and SQLAlchemy also take it as a query parameter."""
    url = re.sub(r"([?&](?:password|passwd)=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@dataclass(frozen=True)
class Storage(Kind):
    """An Optuna storage: default, a SQLAlchemy URL, or journal:<file>."""

    def read(self, text: str, name: str) -> str:
        if text in ("", "default"):
            return "default"
        if re.fullmatch(r"\S+://\S+|journal:\S+", text):
            return text
        raise ValueError(
            f"{name} {redact(text)!r}: use default, a SQLAlchemy URL (sqlite:///...,"
            " postgresql://...) or journal:<file> for an Optuna journal file"
        )

    def describe(self) -> str:
        return "default, a SQLAlchemy URL or journal:<file>"


@dataclass(frozen=True)
class RunIds(Kind):
    """`latest`, or MLflow run ids separated by commas (lower case, in order, once each)."""

    takes_list = True

    def read(self, text: str, name: str) -> str:
        if text.lower() in ("", "latest", "none"):
            return "latest"
        ids = [part.strip().lower() for part in text.split(",")]
        if not all(RUN_ID.fullmatch(i) for i in ids):
            raise ValueError(
                f"{name} must be latest or MLflow run ids (32 hex digits, comma-separated),"
                f" got {text!r}"
            )
        return ",".join(dict.fromkeys(ids))

    def describe(self) -> str:
        return "latest or run ids separated by commas"


@dataclass(frozen=True)
class Resume(Kind):
    """false, true (inside `mlflow run --run-id ID`), or the id of the run to continue."""

    def read(self, text: str, name: str) -> str | None:
        lowered = text.lower()
        if lowered in ("false", "no", "0", "", "none"):
            return None
        if lowered == "true":
            return "true"
        if not RUN_ID.fullmatch(lowered):
            raise ValueError(
                f"{name} must be true, false or a run id (32 hex digits), got {text!r}"
            )
        return lowered

    def spell(self, value: Any) -> str:
        return "false" if value is None else str(value)

    def describe(self) -> str:
        return "false, true or a run id"


@dataclass(frozen=True)
class Source(Kind):
    """Where prepare reads the four IDX files: auto, download, or an existing directory."""

    def read(self, text: str, name: str) -> str:
        if text in ("auto", "download"):
            return text
        path = Path(text).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"{name} {text!r} is not a directory; give the folder holding the four IDX"
                " files, auto or download"
            )
        return str(path.resolve())

    def describe(self) -> str:
        return "auto, download or a directory"
