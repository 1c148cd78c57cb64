"""The search spaces, declared once as data: `suggest` draws from them, `describe` writes
them to search_space.json, `defaults` gives the enqueued first trial (the base settings).

Each parameter's name is the train setting it sets, so a trial's parameters turn into
training settings with `TrainSettings.replace(**params)`, checked like any other settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import config
from pipeline.config import TrainSettings, TuneSettings
from pipeline.errors import UserError


@dataclass(frozen=True)
class LogUniform:
    """A float drawn on a log scale; bounds are numbers or the names of tune settings."""

    low: float | str
    high: float | str

    def bounds(self, settings: TuneSettings) -> tuple[float, float]:
        def resolve(b):
            return float(getattr(settings, b)) if isinstance(b, str) else float(b)

        return resolve(self.low), resolve(self.high)


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def bounds(self, settings: TuneSettings) -> tuple[float, float]:
        return self.low, self.high


@dataclass(frozen=True)
class Categorical:
    choices: tuple


BASE = {
    "lr": LogUniform("lr_min", "lr_max"),
    "optimizer": Categorical(config.OPTIMIZERS),
    "loss": Categorical(config.LOSSES),
    "flip": Categorical((False, True)),
}
SPACES = {
    "base": BASE,
    "wide": {
        **BASE,
        "weight_decay": LogUniform(1e-6, 1e-2),
        "batch_size": Categorical((64, 128, 256)),
        "augment": Categorical(("none", "shift", "rotate,shift,zoom,shear")),
        "dropout": Uniform(0.0, 0.5),
    },
}


def base_choice(name: str, dist: Categorical, settings: TuneSettings) -> Any:
    """The base settings' value of a categorical as one of its choices: the choice it
    matches, else the value itself (spelled as text when the choices are text)."""
    leaf = next(leaf for leaf in TrainSettings.leaves() if leaf.name == name)
    value = settings.base.value(leaf)
    spelled = leaf.kind.spell(value)
    match = [c for c in dist.choices if c == value or str(c) == spelled]
    if match:
        return match[0]
    return spelled if all(isinstance(c, str) for c in dist.choices) else value


def choices(name: str, dist: Categorical, settings: TuneSettings) -> list:
    """A categorical's choices, with the base settings' own value added when it is not one
    of them (`augment=rotate`, `batch_size=32`): the first trial is the base configuration,
    and the search is measured against it."""
    first = base_choice(name, dist, settings)
    return list(dist.choices) if first in dist.choices else [*dist.choices, first]


def suggest(trial, settings: TuneSettings) -> dict[str, Any]:
    """One trial's parameters (Optuna's names = train setting names)."""
    params = {}
    for name, dist in SPACES[settings.space].items():
        if isinstance(dist, Categorical):
            params[name] = trial.suggest_categorical(name, choices(name, dist, settings))
        else:
            low, high = dist.bounds(settings)
            params[name] = trial.suggest_float(name, low, high, log=isinstance(dist, LogUniform))
    return params


def describe(settings: TuneSettings) -> dict[str, Any]:
    """The space as searched (bounds resolved), for search_space.json."""
    out = {}
    for name, dist in SPACES[settings.space].items():
        if isinstance(dist, Categorical):
            out[name] = {"choices": choices(name, dist, settings)}
        else:
            low, high = dist.bounds(settings)
            out[name] = {"low": low, "high": high, "log": isinstance(dist, LogUniform)}
    return out


def base_value(name: str, settings: TuneSettings) -> float:
    """A searched float's value in the base settings; `dropout` unset is the model's own rate
    (models.default_dropout)."""
    value = getattr(settings.base, name)
    if value is None:
        from pipeline import models

        value = models.default_dropout(settings.base.model, **settings.base.options)
    return float(value)


def check_base(settings: TuneSettings) -> None:
    """A searched float's base value must lie in its range: the first trial is the base
    configuration, the one the search is measured against (a value outside was moved to the
    nearest bound without a word, so `--lr 0.5` trained its first trial at lr_max). The one
    exception, weight decay 0, which a log scale cannot reach, starts from the range's floor."""
    for name, dist in SPACES[settings.space].items():
        if isinstance(dist, Categorical):
            continue
        value, (low, high) = base_value(name, settings), dist.bounds(settings)
        if low <= value <= high or (isinstance(dist, LogUniform) and value == 0):
            continue
        how = "widen lr_min/lr_max" if name == "lr" else f"give a {name} inside it"
        raise UserError(
            f"{name}={value:g} lies outside the searched range {low:g}..{high:g}, and the"
            f" study's first trial is the base configuration; {how}"
        )


def defaults(settings: TuneSettings) -> dict[str, Any]:
    """The base settings' value of each searched parameter: the study's first trial, so the
    search is measured against the configuration it starts from (check_base: each float
    lies in its range, weight decay 0 is raised to the log scale's floor)."""
    out = {}
    for name, dist in SPACES[settings.space].items():
        if isinstance(dist, Categorical):
            out[name] = base_choice(name, dist, settings)  # one of choices(), added if need be
            continue
        low, high = dist.bounds(settings)
        out[name] = min(max(base_value(name, settings), low), high)
    return out


def trial_settings(base: TrainSettings, params: dict[str, Any]) -> TrainSettings:
    """The base settings with a trial's parameters. Label smoothing applies to the ce loss
    only: a trial that draws another loss trains without it (and logs label_smoothing 0).
    A model with flip test-time augmentation (fastnet's `tta`) uses it only when the trial
    trains with flips (without them, averaging over mirror images costs ~5 points)."""
    from pipeline import models

    if params.get("loss", base.loss) != "ce":
        params = {**params, "label_smoothing": 0.0}
    has_tta = "tta" in models.default_options(base.model) and "tta" not in base.options
    if has_tta and "flip" in params:
        params = {**params, "options": {**base.options, "tta": bool(params["flip"])}}
    return base.replace(**params)
