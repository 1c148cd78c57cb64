"""The model registry: the champion's registered version and alias."""

from __future__ import annotations

import hashlib
import re

from pipeline import config
from pipeline.tracking.log import timed
from pipeline.tracking.store import client, ensure_experiment


def model_name() -> str:
    """The registered model that compare's champion goes to: `fashion-mnist-classifier` for
    the contract's experiment, `fashion-mnist-classifier-<experiment>` for another. The
    registry is the whole store's and compare ranks one experiment: with one name, a compare
    in a scratch experiment moved the main experiment's champion onto its own best run.

    The experiment is the one the step uses (ensure_experiment, MLFLOW_EXPERIMENT_ID first):
    `mlflow run --experiment-name X`, main's children and Ray jobs name it by id only, while
    MLFLOW_EXPERIMENT_NAME may still hold the Makefile's (or README's) `fashion-mnist`."""
    experiment = client().get_experiment(ensure_experiment()).name
    if experiment == config.EXPERIMENT_NAME:
        return config.REGISTERED_MODEL
    # MLflow refuses '/' and ':' in model names (Databricks-style experiment paths have '/')
    slug = re.sub(r"[/:\s]+", "-", experiment).strip("-")
    if slug != experiment:  # `a/b`, `a b` and `a:b` are three experiments, three models
        slug += "-" + hashlib.sha256(experiment.encode()).hexdigest()[:8]
    return f"{config.REGISTERED_MODEL}-{slug}"


def _versions_of(name: str, run_id: str) -> list[int]:
    found = client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return sorted(int(v.version) for v in found)


def register_champion(run_id: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register the run's model as model_name() (once per run), point the `champion` alias
    at that version and tag it; returns the version.

    Two compares at once may both find the run unregistered and both register it: each then
    looks again and keeps the lowest version of the run, deleting its own if another is
    lower (everyone who saw the higher one also sees the lower), so a run has one version.
    """
    import mlflow

    name = model_name()
    with timed():
        versions = _versions_of(name, run_id)
        if not versions:
            mine = int(mlflow.register_model(model_uri, name).version)
            versions = _versions_of(name, run_id) or [mine]
            if mine != versions[0]:  # another compare registered this run first
                client().delete_model_version(name, str(mine))
        version = str(versions[0])
        client().set_registered_model_alias(name, config.CHAMPION_ALIAS, version)
        for key, value in tags.items():
            client().set_model_version_tag(name, version, key, str(value))
    return version


def champion_run_id() -> str | None:
    """The run behind `<model_name()>@champion`, None when there is none."""
    try:
        version = client().get_model_version_by_alias(model_name(), config.CHAMPION_ALIAS)
    except Exception:
        return None
    return version.run_id


def drop_deleted_champion() -> str | None:
    """Remove the `champion` alias when the run behind it was deleted (a compare that finds
    no champion leaves no alias on a deleted run); returns that run's id, else None. A
    champion whose run still exists is left alone."""
    from mlflow.exceptions import MlflowException

    run_id = champion_run_id()
    if run_id is None:
        return None
    try:
        if client().get_run(run_id).info.lifecycle_stage != "deleted":
            return None
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    client().delete_registered_model_alias(model_name(), config.CHAMPION_ALIAS)
    return run_id
