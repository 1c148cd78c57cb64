"""A training configuration's identity: its key, its label, the command that reproduces it,
and the names and tags of its runs. Declared once here; train, tune and compare read them.

The key is a hash of the fully resolved settings that decide what is learned: model
options with the family's defaults merged in, the effective training subset, and only the
training settings that the model kind uses (a scikit-learn baseline has no epochs or
optimizer). Settings marked `identity=False` in pipeline/config.py (seed, device, compile,
precision, resume, the data, ...) and execution-only model options (random_forest's n_jobs)
never change it, so runs that differ only in those are seeds of one configuration.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from pipeline import config, values
from pipeline.config import TORCH_ONLY, TrainSettings


def effective_subset(settings: TrainSettings) -> int:
    """Training images used: the subset asked for, else a slow baseline's default subset."""
    from pipeline import models

    if settings.subset or not settings.is_sklearn:
        return settings.subset
    return models.REGISTRY[settings.model].default_subset


def resolved(settings: TrainSettings) -> dict:
    """What decides what is learned, fully resolved (the key's input, JSON-able)."""
    from pipeline import models

    out = {}
    for leaf in TrainSettings.leaves():
        if not leaf.identity or (settings.is_sklearn and leaf.name in TORCH_ONLY):
            continue
        out[leaf.name] = leaf.kind.spell(settings.value(leaf))
    out["options"] = models.resolved_options(settings.model, settings.options)
    out["subset"] = effective_subset(settings)
    return out


def config_key(settings: TrainSettings) -> str:
    payload = json.dumps(resolved(settings), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# shown in every label (the rest of the key's settings only where they are not defaults)
LABEL_SHOWN = ("model", "options", "optimizer", "lr", "loss", "flip", "augment", "epochs")
LABEL_SHOWN += ("batch_size", "subset")


def label(settings: TrainSettings) -> str:
    """A one-line, human-readable configuration (the leaderboard's label)."""
    s = settings
    options = "".join(f" {k}={values.spell_option(v)}" for k, v in s.options.items())
    subset = effective_subset(s) or "all"
    if s.is_sklearn:
        return f"{s.model}{options} | scikit-learn subset={subset}"
    aug = ",".join(("flip",) * s.flip + s.augment) or "none"
    # every other setting of the key, where it is not at its default: two configurations
    # differing only in patience or restore_best had one label
    changed = s.non_defaults()
    extras = "".join(
        f" {leaf.name}={changed[leaf.name]}"
        for leaf in TrainSettings.leaves()
        if leaf.identity and leaf.name in changed and leaf.name not in LABEL_SHOWN
    )
    return (
        f"{s.model}{options} | {s.optimizer} lr={s.lr:g} loss={s.loss} aug={aug}{extras}"
        f" epochs={s.epochs} batch={s.batch_size} subset={subset}"
    )


def command(settings: TrainSettings, step: str = "train") -> str:
    """The `python -m pipeline train` command that reproduces the run (non-defaults only)."""
    defaults = TrainSettings().params()
    parts = [f"python -m pipeline {step}"]
    for name, text in settings.params().items():
        if name == "resume" or (text == defaults[name] and name != "model"):
            continue
        parts.append(f"--{name} {shlex.quote(text)}")
    return " ".join(parts)


def run_tags(settings: TrainSettings, manifest: dict) -> dict[str, str]:
    """Tags of a train or trial run: what it is, on which data, how to reproduce it."""
    text = f"{label(settings)}\n\n`{command(settings)}`"
    return {
        "model": settings.model,
        "dataset.digest": manifest["digest"],
        "dataset.official": str(manifest["official"]).lower(),
        "train.subset": str(effective_subset(settings)),
        "config.key": config_key(settings),
        "config.label": label(settings),
        "command": command(settings),
        "mlflow.note.content": text,
    }


# --- run names: words separated by spaces, saying what the run is ------------------------


def train_run_name(settings: TrainSettings, tuned: bool = False) -> str:
    """`train lenet5 seed=1`; a subset run says so (a subset and a full run of one model and
    seed had one name in the UI's run list)."""
    subset = effective_subset(settings)
    return (
        f"train {settings.model} seed={settings.seed}"
        + (f" subset={subset}" if subset else "")
        + (" (tuned)" if tuned else "")
    )


def trial_run_name(number: int, model: str) -> str:
    return f"trial {number} {model}"


def tune_run_name(settings: config.TuneSettings) -> str:
    return f"tune {settings.base.model} ({settings.n_trials} trials)"


def evaluate_run_name(models: list[str]) -> str:
    return f"evaluate {models[0]}" if len(models) == 1 else f"evaluate {len(models)} runs"
