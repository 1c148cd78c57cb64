"""Profiles: what `main` runs, as a small TOML file in profiles/ (or any path).

    [prepare]          PrepareSettings fields (the split)
    [[train]]          TrainSettings fields, plus `seeds = [1, 2, 3]` (one run per seed)
    [[tune]]           TuneSettings fields
    [compare]          CompareSettings fields

Every entry is checked against its settings class when the profile is loaded, before any
run starts; standard library only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline import config
from pipeline.errors import UserError

SECTIONS = ("description", "prepare", "train", "tune", "compare")


@dataclass(frozen=True)
class Job:
    """One child run to start: its entry point, settings, and the names the profile set
    (only those are passed to `mlflow run`; the rest are MLproject defaults)."""

    entry: str
    settings: config.Settings
    given: tuple[str, ...]

    def params(self) -> dict[str, str]:
        """The given settings, canonically spelled: the child run's `-P` values."""
        spelled = self.settings.params()
        return {name: spelled[name] for name in self.given}

    def shown(self) -> str:
        """The given settings as `name=value ...`, for messages."""
        return " ".join(f"{k}={v}" for k, v in self.params().items())

    def with_params(self, **params) -> Job:
        """The job with more settings given (the data digest and split from prepare)."""
        given = tuple(dict.fromkeys((*self.given, *params)))
        return Job(self.entry, self.settings.replace(**params), given)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    text: str
    description: str
    prepare: Job
    train: tuple[Job, ...]  # one per seed
    tune: tuple[Job, ...]
    compare: Job


LISTED = ("train", "tune")  # sections that are lists of tables, [[train]]; the others, [prepare]


def header(step: str) -> str:
    """The step's section as the profile spells it (errors name it so)."""
    return f"[[{step}]]" if step in LISTED else f"[{step}]"


def entry(path: Path, step: str, params: dict) -> Job:
    try:
        settings = config.STEP_SETTINGS[step].from_params(params)
    except UserError as exc:
        raise UserError(f"profile {path}, {header(step)}: {exc}") from None
    return Job(step, settings, tuple(params))


# Set once for the whole profile, in [prepare]: main gives every job the prepared data and
# its split, so a value in a [[train]] or [[tune]] entry would be replaced silently.
DATA_KEYS = ("dataset", "val_fraction", "split_seed")
# Continues one killed run by its id: a profile's jobs start runs (and main resumes its own
# killed ones by itself).
RUN_KEYS = ("resume",)


def train_jobs(path: Path, entries: list[dict]) -> list[Job]:
    jobs = []
    for params in entries:
        seeds = params.get("seeds", [config.TrainSettings().seed])
        rest = {k: v for k, v in params.items() if k != "seeds"}
        if not isinstance(seeds, list) or not seeds:
            raise UserError(f"profile {path}, [[train]]: seeds must be a non-empty list")
        if "seed" in rest:
            raise UserError(f"profile {path}, [[train]]: give seeds = [...], not seed")
        if len(set(map(str, seeds))) < len(seeds):
            raise UserError(f"profile {path}, [[train]]: seeds repeat a seed: {seeds}")
        jobs += [entry(path, "train", {**rest, "seed": seed}) for seed in seeds]
    return jobs


def check_shape(path: Path, raw: dict) -> None:
    """[prepare] and [compare] are tables, [[train]] and [[tune]] lists of tables (TOML's
    `[train]` for `[[train]]` is an easy slip), description a string."""
    for name in ("prepare", "compare"):
        if not isinstance(raw.get(name, {}), dict):
            raise UserError(f"profile {path}: {name} must be a table, [{name}]")
    for name in LISTED:
        entries = raw.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UserError(f"profile {path}: {name} must be a list of tables, [[{name}]]")
    if not isinstance(raw.get("description", ""), str):
        raise UserError(f"profile {path}: description must be a string")


def check_jobs(path: Path, sections: dict[str, list[dict]], jobs: list[Job]) -> None:
    """No data or split setting outside [prepare], and no job twice (it would train twice,
    and on Ray two processes could resume one killed run at once)."""
    for step, entries in sections.items():
        for params in entries:
            given = sorted(set(params) & set(DATA_KEYS))
            if given:
                raise UserError(
                    f"profile {path}, {header(step)}: {', '.join(given)} belong in [prepare] (main"
                    " gives every job the prepared data)"
                )
            if set(params) & set(RUN_KEYS):
                raise UserError(
                    f"profile {path}, {header(step)}: resume continues one run by its id; a"
                    " profile starts runs (main resumes its own killed runs by itself)"
                )
    seen = set()
    for job in jobs:  # every setting, defaults included: batch_size=128 written out is no change
        key = (job.entry, tuple(sorted(job.settings.params().items())))
        if key in seen:
            raise UserError(f"profile {path}: the job {job.entry} {job.shown()} is listed twice")
        seen.add(key)


def load(name: str) -> Profile:
    """Parse and check a profile (a name in profiles/ or a .toml path)."""
    path = config.profile_path(name)
    try:
        text = path.read_text()
        raw = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"profile {path}: {exc}") from None
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise UserError(f"profile {path}: unknown sections {', '.join(unknown)}")
    check_shape(path, raw)
    train = train_jobs(path, raw.get("train", []))
    tune = [entry(path, "tune", params) for params in raw.get("tune", [])]
    check_jobs(path, {"train": raw.get("train", []), "tune": raw.get("tune", [])}, train + tune)
    return Profile(
        name=path.stem,
        path=path,
        text=text,
        description=str(raw.get("description", "")),
        prepare=entry(path, "prepare", raw.get("prepare", {})),
        train=tuple(train),
        tune=tuple(tune),
        compare=entry(path, "compare", raw.get("compare", {})),
    )
