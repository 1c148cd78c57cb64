"""The tune job: an Optuna study over training settings, one nested MLflow run per trial.

The only package that imports optuna (tests/test_rules.py). Trials are chosen on the
validation split; the test split is opened only by the evaluation of the retrained best
configuration at the end (see final.py). Storages and dead workers: storage.py; the search
space, declared once: space.py; samplers, pruners, the study and its trials: search.py.
"""

from __future__ import annotations

import sys
import time

import optuna

from pipeline import fit, identity, tracking
from pipeline.config import TuneSettings
from pipeline.errors import UserError
from pipeline.study import final, search, space, storage


def worker_tags(settings: TuneSettings, name: str, digest: str) -> dict[str, str]:
    return {
        "optuna.study": name,
        "optuna.storage": storage.redact(storage.url(settings.storage)),
        "optuna.sampler": settings.sampler,
        "optuna.pruner": settings.pruner,
        "dataset.digest": digest,
    }


def child_tags(name: str, digest: str, worker: str) -> dict[str, str]:
    """Tags every child run carries from its creation: the contract's (INTERFACE.md) even
    when a trial fails before training tags its run, the study and the worker that ran it."""
    return {"optuna.study": name, "dataset.digest": digest, "tune.worker_run_id": worker}


DASHBOARD_URL = "http://127.0.0.1:8080/dashboard/studies/{}"  # `make dashboard`'s port


def open_checked(settings: TuneSettings):
    """(digest, name, study, created, study id): storage, device, options and data checked
    before any run starts."""
    tracking.check_reachable()  # fails in seconds, naming the URI
    opened = storage.open_storage(settings.storage, settings.heartbeat_s, settings.grace_s)
    job = fit.prepare(settings.base)  # a bad device or option fails once here, not per trial
    digest = job.manifest["digest"]
    name = search.study_name(settings, digest)
    study, created = search.open_study(name, opened, settings, digest)
    return digest, name, study, created, opened.get_study_id_from_name(name)


def conclude(study, settings: TuneSettings, parent: str, run_tags: dict) -> dict | None:
    """After this worker's search, when the study is complete: its summary on the parent run
    and, unless final=false, the retrain of its best configuration."""
    name = study.study_name
    states = {t.state.name for t in study.get_trials(deepcopy=False)}
    if "COMPLETE" not in states:
        if states & {"RUNNING", "WAITING"}:  # other workers may still complete one
            print(f"study {name}: no completed trial yet", file=sys.stderr)
            return None
        raise UserError(
            f"study {name} has no completed trial (all failed or pruned); see the trial"
            " runs' error tags"
        )
    finished = search.counted(study)
    if finished < settings.n_trials and not settings.timeout:
        if states & {"RUNNING", "WAITING"}:  # the worker that finishes the last one retrains
            then = (
                "other workers are running the rest; the one that finishes the last trial"
                " retrains the best, unless it runs with final=false (then run this command"
                " again)"
            )
        else:
            then = "run the same command again to continue"
        print(
            f"study {name}: {finished} of {settings.n_trials} trials finished (failures do"
            f" not count); {then}",
            file=sys.stderr,
        )
        return None
    return final.finish(study, settings, parent, run_tags)


def tune(settings: TuneSettings) -> dict:
    """Run (or join) the study, then conclude it; returns the JSON-able result."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space.check_base(settings)  # before a study or a run exists
    digest, name, study, created, study_id = open_checked(settings)
    shown = storage.redact(settings.storage)  # a password stays out of params and config.json
    params = {**settings.params(), "storage": shown}
    tags = worker_tags(settings, name, digest)
    started = time.time()
    run_config = {**settings.to_dict(), "storage": shown}
    with tracking.step_run(
        "tune", params, name=identity.tune_run_name(settings), config=run_config, tags=tags
    ) as own:
        parent = search.parent_run(study, own, created)
        role = "parent" if parent == own else "worker"
        dashboard = DASHBOARD_URL.format(study_id)
        tags = {"tune.role": role, "tune.parent_run_id": parent, "optuna.dashboard_url": dashboard}
        tags["mlflow.note.content"] = (  # the run's description in the MLflow UI
            f"Optuna study `{name}`: {settings.n_trials} trials of {settings.base.model}"
            f" ({settings.pruner} pruner, {settings.sampler} sampler), objective val_accuracy."
            f" Trials and the retrains of the best configuration are child runs of {parent}."
            f"\n\n`optuna-dashboard {storage.dashboard_arg(settings.storage)}`, then {dashboard}"
        )
        tracking.set_tags(own, tags)
        tracking.log_json(space.describe(settings), "search_space.json", own)
        run_tags = child_tags(name, digest, own)
        timed_out = search.search(study, settings, parent, run_tags)
        outcome = conclude(study, settings, parent, run_tags)
        # `main` reuses a tune run only when its study was complete (and retrained, unless
        # final=false): a run that left trials to do is run again, and resumes the study
        done = search.counted(study) >= settings.n_trials or bool(settings.timeout)
        ended = {"tune.complete": str(done).lower()}
        if timed_out:  # the UI tells a study cut short by `timeout` from a full one
            ended["tune.timed_out"] = "true"
        tracking.set_tags(own, ended)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return {
        "run_id": own,
        "study": name,
        "parent_run_id": parent,
        "n_trials": search.counted(study),  # finished (complete or pruned) trials
        "best_val_accuracy": study.best_value if complete else None,
        "seconds": round(time.time() - started, 1),
        "timed_out": timed_out,
        "dashboard": f"optuna-dashboard {storage.dashboard_arg(settings.storage)}",
        "dashboard_url": DASHBOARD_URL.format(study_id),
        **(outcome or {}),
    }
