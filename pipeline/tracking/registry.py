"""The model registry: the champion's registered version and alias."""

from __future__ import annotations

from pipeline import config
from pipeline.tracking.log import timed
from pipeline.tracking.store import client


def register_champion(run_id: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register the run's model as `fashion-mnist-classifier` (once per run), point the
    `champion` alias at that version and tag it; returns the version."""
    import mlflow

    name = config.REGISTERED_MODEL
    with timed():
        found = client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
        version = found[0].version if found else mlflow.register_model(model_uri, name).version
        client().set_registered_model_alias(name, config.CHAMPION_ALIAS, version)
        for key, value in tags.items():
            client().set_model_version_tag(name, version, key, str(value))
    return str(version)


def champion_run_id() -> str | None:
    """The run behind `fashion-mnist-classifier@champion`, None when there is none."""
    try:
        version = client().get_model_version_by_alias(
            config.REGISTERED_MODEL, config.CHAMPION_ALIAS
        )
    except Exception:
        return None
    return version.run_id
