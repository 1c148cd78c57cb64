"""The compare job (pipeline/comparison.py) and the registry when several compares run at
once, and compare's errors. The store is faked except in the registry test."""

from __future__ import annotations

import types

import numpy as np
import pytest
from test_leaderboard import frame, scored

from pipeline import comparison, tracking
from pipeline.errors import UserError


@pytest.fixture
def fake_store(monkeypatch):
    """tracking as compare uses it, in memory: `snapshots` are what runs_frame returns in
    turn (the last one from then on), `registered` the run ids given the alias, in order."""
    state = types.SimpleNamespace(snapshots=[], registered=[])

    def runs_frame():
        return state.snapshots.pop(0) if len(state.snapshots) > 1 else state.snapshots[0]

    def register_champion(run_id, model_uri, tags):
        state.registered.append(run_id)
        return str(len(state.registered))

    run = types.SimpleNamespace(data=types.SimpleNamespace(tags={"model.uri": "models:/m-1"}))
    monkeypatch.setattr(tracking, "runs_frame", runs_frame)
    monkeypatch.setattr(tracking, "register_champion", register_champion)
    monkeypatch.setattr(tracking, "get_run", lambda run_id: run)
    monkeypatch.setattr(tracking, "drop_deleted_champion", lambda: None)
    for name in ("set_tags", "log_metrics", "log_frame", "log_text", "log_table", "log_figure"):
        monkeypatch.setattr(tracking, name, lambda *a, **k: None)
    monkeypatch.setattr(comparison, "correct_predictions", lambda run_id: np.ones(10, bool))
    return state


@pytest.mark.reliability
def test_a_compare_that_ranked_a_stale_snapshot_does_not_leave_the_alias_on_it(fake_store):
    """Another compare saw a better run and set the alias while this one still ranked its
    older snapshot: this one looks again after setting the alias, and ranks again."""
    old = scored("old-best", 0.90, 0.90, key="k1")
    new = scored("new-best", 0.91, 0.95, key="k2", minute=5)
    fake_store.snapshots = [frame(old), frame(old, new)]
    result = comparison.compare("compare-run", "test_accuracy")
    assert fake_store.registered == ["old-best", "new-best"]  # the last word is the best's
    assert result["champion_run_id"] == "new-best" and result["n_ranked"] == 2


def test_a_compare_whose_champion_still_holds_sets_the_alias_once(fake_store):
    fake_store.snapshots = [frame(scored("best", 0.9, 0.9), scored("other", 0.8, 0.8, key="k2"))]
    result = comparison.compare("compare-run", "test_accuracy")
    assert fake_store.registered == ["best"] and result["champion_version"] == "1"


def test_a_metric_no_run_has_is_one_error_line(fake_store):
    """Runs evaluated before 0.2 have no test_log_loss: a UserError, not a traceback."""
    fake_store.snapshots = [frame(scored("r1", 0.9, 0.9))]
    with pytest.raises(UserError, match="no evaluated train run has the metric test_log_loss"):
        comparison.compare("compare-run", "test_log_loss")


def test_a_metric_no_run_has_leaves_no_compare_run(fake_store, monkeypatch):
    """The step checks the metric against the runs before its own run exists (it was left
    FAILED)."""
    from pipeline import cli
    from pipeline.steps import compare as step

    fake_store.snapshots = [frame(scored("r1", 0.9, 0.9))]
    started = []
    monkeypatch.setattr(tracking, "check_reachable", lambda: None)
    monkeypatch.setattr(tracking, "step_run", lambda *a, **k: started.append(a))
    with pytest.raises(UserError, match="no evaluated train run has the metric test_log_loss"):
        step.main(cli.parse("compare", ["--metric", "test_log_loss"]))
    assert started == []


@pytest.mark.reliability
def test_two_compares_registering_one_run_at_once_leave_one_version(stores, monkeypatch):
    """Both searched before either registered: the later registration is deleted again, and
    the alias points at the one version of the run; once that run is deleted, a compare
    that finds no champion removes the alias."""
    import mlflow

    from pipeline import config
    from pipeline.tracking import registry
    from pipeline.tracking.store import client

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        with mlflow.start_run() as run:
            model = mlflow.create_external_model(name="model")
        uri, run_id = f"models:/{model.model_id}", run.info.run_id
        register = mlflow.register_model

        def other_compare_first(*args, **kwargs):  # the other compare registers in between
            register(uri, config.REGISTERED_MODEL)
            return register(*args, **kwargs)

        monkeypatch.setattr(mlflow, "register_model", other_compare_first)
        version = registry.register_champion(run_id, uri, {"k": "v"})
        name = config.REGISTERED_MODEL
        versions = client().search_model_versions(f"name='{name}' and run_id='{run_id}'")
        assert [str(v.version) for v in versions] == ["1"] and version == "1"
        assert str(client().get_model_version_by_alias(name, config.CHAMPION_ALIAS).version) == "1"
        monkeypatch.setattr(mlflow, "register_model", register)
        assert registry.register_champion(run_id, uri, {}) == "1"  # registered once per run
        assert registry.drop_deleted_champion() is None  # its run exists: kept
        client().delete_run(run_id)
        assert registry.drop_deleted_champion() == run_id  # no alias on a deleted run
        assert registry.champion_run_id() is None
    finally:
        mlflow.set_tracking_uri(None)


def test_the_summary_says_how_many_runs_are_not_ranked(fake_store):
    """The console summary named the ranked rows only: failed or unevaluated train runs were
    in the artifacts alone."""
    failed = scored("broken", 0.99, 0.99, key="k2", status="FAILED")
    fake_store.snapshots = [frame(scored("best", 0.9, 0.9), failed)]
    lines = comparison.compare("compare-run", "test_accuracy")["lines"]
    assert lines[-1] == "not ranked: 1 train run(s) (1 FAILED); see unranked_runs.csv", lines
    fake_store.snapshots = [frame(failed)]
    lines = comparison.compare("compare-run", "test_accuracy")["lines"]
    assert lines[0] == "no evaluated train runs yet: train and evaluate first", lines


def test_a_compare_in_another_experiment_has_a_registered_model_of_its_own(stores, monkeypatch):
    """The registry is the store's, compare ranks one experiment: a compare in a scratch
    experiment moved the main experiment's champion onto its own, worse run."""
    import mlflow

    from pipeline import config
    from pipeline.tracking import registry

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        runs = {}
        for experiment in (config.EXPERIMENT_NAME, "team/scratch: lr sweep"):
            monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
            # not mlflow.set_experiment: its active experiment would outlive this test
            experiment_id = mlflow.MlflowClient().create_experiment(experiment)
            with mlflow.start_run(experiment_id=experiment_id) as run:
                model = mlflow.create_external_model(name="model")
            runs[registry.model_name()] = run.info.run_id
            registry.register_champion(run.info.run_id, f"models:/{model.model_id}", {})
        (scratch,) = set(runs) - {config.REGISTERED_MODEL}
        assert scratch.startswith(f"{config.REGISTERED_MODEL}-team-scratch-lr-sweep-")
        assert list(runs) == [config.REGISTERED_MODEL, scratch]
        assert registry.champion_run_id() == runs[scratch]
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", config.EXPERIMENT_NAME)
        assert registry.champion_run_id() == runs[config.REGISTERED_MODEL]  # untouched
    finally:
        mlflow.set_tracking_uri(None)


def test_a_compare_whose_store_keeps_changing_reports_the_records_it_ranked(fake_store):
    """After CHAMPION_CHECKS looks compare stops; its tables and its record count (the
    n_train_runs metric, the champion's metrics) were of two different snapshots."""
    runs = [scored(f"r{i}", 0.80 + i / 100, 0.80 + i / 100, key=f"k{i}") for i in range(8)]
    fake_store.snapshots = [frame(*runs[: i + 1]) for i in range(8)]
    result = comparison.compare("compare-run", "test_accuracy")
    assert len(fake_store.registered) == comparison.CHAMPION_CHECKS
    assert result["n_train_runs"] == result["n_ranked"]  # one snapshot: ranked what it counted


def test_the_leaderboard_table_in_the_ui_keeps_numbers_numbers(stores):
    """leaderboard.json (the MLflow UI's table) held every value as text: ranks sorted
    1, 10, 2 and accuracies compared as strings."""
    import json

    import mlflow
    import pandas as pd

    csv = pd.DataFrame(
        {"rank": [1, 10], "test_accuracy_mean": [0.9, 0.85], "p_vs_next": [0.01, np.nan]}
    )
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        with mlflow.start_run() as run:
            tracking.log_table(comparison.ui_table(csv), "leaderboard.json", run.info.run_id)
        with tracking.artifact(run.info.run_id, "leaderboard.json") as path:
            table = json.loads(path.read_text())
    finally:
        mlflow.set_tracking_uri(None)
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [r["rank"] for r in rows] == [1, 10]
    assert rows[1]["test_accuracy_mean"] == 0.85 and rows[1]["p_vs_next"] is None


def test_a_compare_given_its_experiment_by_id_registers_that_experiments_model(stores, monkeypatch):
    """`mlflow run -e compare --experiment-name scratch` hands the step MLFLOW_EXPERIMENT_ID
    only (main's children and Ray jobs too), while MLFLOW_EXPERIMENT_NAME may still hold the
    exported default: the champion went to the main experiment's fashion-mnist-classifier."""
    import mlflow

    from pipeline import config
    from pipeline.tracking import registry

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        scratch = mlflow.MlflowClient().create_experiment("scratch")
        monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", scratch)
        for exported in (config.EXPERIMENT_NAME, None):
            if exported is None:
                monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
            else:
                monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", exported)
            assert registry.model_name() == f"{config.REGISTERED_MODEL}-scratch"
    finally:
        mlflow.set_tracking_uri(None)


def test_experiments_whose_names_differ_in_slashes_or_spaces_have_models_of_their_own(
    monkeypatch,
):
    """`team/scratch`, `team scratch` and `team:scratch` all became
    fashion-mnist-classifier-team-scratch: one experiment's compare moved another's champion."""
    from pipeline.tracking import registry

    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    names = set()
    for experiment in ("team/scratch", "team scratch", "team:scratch"):
        monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
        names.add(registry.model_name())
    assert len(names) == 3
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "scratch")  # as the README says
    assert registry.model_name() == "fashion-mnist-classifier-scratch"
