"""What a user sees in the MLflow UI and optuna-dashboard, checked through the API: one
spelling per setting whichever way a run started, named runs, the experiment's kind, datasets
and logged models as MLflow 3 intends, results on stdout and progress on stderr.

The browser itself is checked by tools/screenshots.py (outside `make test`: it needs Debian's
chromium); these tests carry the same checks in CI.
"""

from __future__ import annotations

import importlib
import json
import re

import pytest
import test_pipeline as tp
from conftest import ROOT, clean_env, run_step

from pipeline import config

RANDOM_NAME = re.compile(r"[a-z]+-[a-z]+-\d+")  # MLflow's adjective-animal-123
SYNTHETIC = ["--model", "mlp", "--epochs", "1", "--batch_size", "64"]


def runs_of(uri: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.EXPERIMENT_NAME)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def one_spelling_per_value(runs: list) -> dict[str, dict]:
    """param -> {parsed value -> {spellings}} for train and trial runs, where a value has
    more than one spelling (empty when every value has one)."""
    kinds = {leaf.name: leaf.kind for leaf in config.TrainSettings.leaves()}
    seen: dict[str, dict] = {}
    for run in runs:
        for name, text in run.data.params.items():
            if name in kinds:
                value = repr(kinds[name].parse(text, name))
                seen.setdefault(name, {}).setdefault(value, set()).add(text)
    return {k: v for k, v in seen.items() if any(len(s) > 1 for s in v.values())}


@pytest.mark.realdata
@pytest.mark.slow
def test_one_spelling_per_value_whichever_way_a_run_started(tiny_idx_dir, stores, tiny_sqlite):
    """`python -m pipeline` with the other spellings a user may type, next to the shared
    tiny pipeline's runs: its train runs were started by `mlflow run` (what `main` passes,
    and the MLproject defaults) and its trials by a study."""
    prepared = run_step(
        ["prepare", "--source", str(tiny_idx_dir), "--allow_unofficial", "true"], stores
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    digest = json.loads(prepared.stdout.strip().splitlines()[-1])["digest"]  # JSON last
    typed = ["--flip", "False", "--augment", "", "--dropout", "none", "--deterministic", "0"]
    by_module = run_step(["train", *SYNTHETIC, "--dataset", digest, *typed, "--lr", "1e-3"], stores)
    assert by_module.returncode == 0, by_module.stderr[-3000:]
    mine = runs_of(stores["MLFLOW_TRACKING_URI"])
    assert sorted(r.data.tags["pipeline.step"] for r in mine) == ["prepare", "train"]
    shared = tiny_sqlite.runs()
    by_mlflow = [r for r in shared if r.data.tags.get("mlflow.project.entryPoint") == "train"]
    assert by_mlflow, "no train run of the shared pipeline was started by `mlflow run`"
    assert any(r.data.tags["pipeline.step"] == "trial" for r in shared)
    runs = [*mine, *shared]
    assert one_spelling_per_value(runs) == {}
    assert {r.data.params["flip"] for r in runs if "flip" in r.data.params} <= {"false", "true"}
    for run in runs:
        assert not RANDOM_NAME.fullmatch(run.info.run_name), run.info.run_name
    for result in (prepared, by_module):
        assert json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
        assert "epoch 1:" not in result.stdout  # progress goes to stderr


@pytest.mark.realdata
@pytest.mark.slow
def test_runs_are_named_and_the_experiment_opens_on_them(tiny_sqlite):
    client = tiny_sqlite.client()
    experiment = client.get_experiment(tiny_sqlite.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {r.data.tags["pipeline.step"]: r.info.run_name for r in tiny_sqlite.children()}
    assert names["compare"] == "compare" and names["prepare"] == "prepare split_seed=42"
    assert names["tune"] == "tune mlp (3 trials)" and names["evaluate"] == "evaluate 4 runs"
    main = tiny_sqlite.client().get_run(tiny_sqlite.main_run_id)
    assert main.info.run_name == "main tiny"
    for run in tiny_sqlite.runs():
        assert not RANDOM_NAME.fullmatch(run.info.run_name), run.info.run_name
    for run in tiny_sqlite.steps("train"):
        seed, subset = run.data.params["seed"], run.data.tags["train.subset"]
        named = f"train {run.data.tags['model']} seed={seed}"
        if subset != "0":  # a subset run says so
            named += f" subset={subset}"
        assert run.info.run_name.startswith(named)
    assert one_spelling_per_value(tiny_sqlite.runs()) == {}
    assert (
        json.loads(tiny_sqlite.stdout.strip().splitlines()[-1])["run_id"] == tiny_sqlite.main_run_id
    )


@pytest.mark.realdata
@pytest.mark.slow
def test_datasets_and_logged_models_as_mlflow_intends(tiny_sqlite):
    import mlflow

    digest = tiny_sqlite.steps("prepare")[0].data.tags["dataset.digest"]
    for run in tiny_sqlite.steps("train"):
        inputs = {(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs}
        subset, seed = run.data.tags["train.subset"], run.data.params["seed"]
        sample = f"-subset{subset}-seed{seed}" if subset != "0" else ""
        assert {
            (f"fashion-mnist-train-{digest[:12]}{sample}", "training"),
            (f"fashion-mnist-val-{digest[:12]}", "validation"),
            (f"fashion-mnist-test-{digest[:12]}", "test"),  # evaluated
        } == inputs
    mlflow.set_tracking_uri(tiny_sqlite.uri)
    try:
        models = mlflow.search_logged_models(
            experiment_ids=[tiny_sqlite.experiment_id],
            order_by=[{"field_name": "metrics.test_accuracy", "ascending": False}],
            output_format="list",
        )
    finally:
        mlflow.set_tracking_uri(None)
    scores = []
    for model in models:
        run = tiny_sqlite.client().get_run(model.source_run_id)
        assert model.model_type == run.data.tags["model"]
        assert model.params["seed"] == run.data.params["seed"]
        # a baseline's model lists no torch setting (the run has `mlflow run`'s defaults)
        baseline = run.data.params["model"] in config.SKLEARN_MODEL_NAMES
        assert ("epochs" in model.params) is not baseline
        linked = {m.key: m for m in model.metrics}
        assert linked["test_accuracy"].value == run.data.metrics["test_accuracy"]
        assert linked["test_accuracy"].dataset_name == f"fashion-mnist-test-{digest[:12]}"
        assert "val_f1_macro" in linked and "val_model_accuracy" in linked
        scores.append(linked["test_accuracy"].value)
    assert len(models) == tp.TINY_TRAIN_RUNS + 1 and scores == sorted(scores, reverse=True)


def test_a_training_subset_is_a_dataset_of_its_own(stores):
    """MLflow keys a dataset by name and digest and keeps the first profile logged under
    them: a 300-image subset logged under the whole split's name showed in the UI as the
    whole split (54,000 images), and two seeds' different samples as one dataset."""
    import mlflow
    import numpy as np

    from pipeline import tracking
    from pipeline.data import Split

    rng = np.random.default_rng(0)
    whole = Split(rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8), np.arange(50) % 10)
    digest = "ab" * 32
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        client = mlflow.MlflowClient()
        experiment = tracking.ensure_experiment()
        logged = {}
        for label, split, sampled in (
            ("whole", whole, None),
            ("seed 1", Split(whole.images[:20], whole.labels[:20]), {"train": 1}),
            ("seed 2", Split(whole.images[20:40], whole.labels[20:40]), {"train": 2}),
        ):
            run_id = client.create_run(experiment).info.run_id
            tracking.log_datasets(run_id, {"train": split}, digest, "/data", sampled)
            (found,) = client.get_run(run_id).inputs.dataset_inputs
            rows = json.loads(found.dataset.profile)["targets_shape"][0]
            logged[label] = (found.dataset.name, found.dataset.digest, rows)
    finally:
        mlflow.set_tracking_uri(None)
    assert logged["whole"] == (f"fashion-mnist-train-{digest[:12]}", digest[:16], 50)
    assert logged["seed 1"][0] == f"fashion-mnist-train-{digest[:12]}-subset20-seed1"
    assert logged["seed 1"][2] == logged["seed 2"][2] == 20
    assert len({digest for _, digest, _ in logged.values()}) == 3


def test_a_run_is_resumed_only_by_the_code_that_started_it(stores, monkeypatch):
    """Seeds are comparable only when one code version trained each of them: a resume by
    other code is refused (it would re-tag the run with the resuming code's version)."""
    import mlflow

    from pipeline import tracking
    from pipeline.errors import UserError

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        with tracking.step_run("train", {}, name="train mlp seed=1") as run_id:
            pass
        tracking.set_tags(run_id, {"code.version": "0123abc"})  # started by other code
        refused = pytest.raises(UserError, match="started by code 0123abc")
        with refused, tracking.step_run("train", {}, name="train mlp seed=1", run_id=run_id):
            pass
        assert tracking.get_run(run_id).data.tags["code.version"] == "0123abc"
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def signals_installed(monkeypatch):
    """The pipeline's SIGINT/SIGTERM handler in this process, put back afterwards."""
    import signal

    from pipeline import interrupts

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(interrupts, "_count", 0)
    monkeypatch.setattr(interrupts, "_returning", None)
    interrupts.install()
    yield interrupts
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_is_held_until_the_deferred_block_ends(signals_installed):
    import os
    import signal

    reached = False
    with pytest.raises(KeyboardInterrupt), signals_installed.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        reached = True  # the handler ran (Python runs it at the next bytecode) and waited
    assert reached and signals_installed.received()


@pytest.mark.reliability
def test_a_signal_inside_a_database_call_is_raised_once_the_call_returns(stores, signals_installed):
    """A KeyboardInterrupt raised inside SQLAlchemy leaves its connection holding SQLite's
    lock while the exception lives: the write that ends the run then waits out the 20 s busy
    timeout and fails (seen in CI: an evaluate run left RUNNING, exit 1). SIGTERM at random
    moments of a stream of store calls: the interrupt comes every time, and with it still
    alive the database takes a write at once."""
    import os
    import random
    import signal
    import sqlite3
    import sys
    import threading
    import time

    import mlflow

    from pipeline import tracking

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    database = stores["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    rng = random.Random(0)
    try:
        with tracking.step_run("evaluate", {}, name="evaluate mlp") as run_id:
            store = mlflow.MlflowClient()
            for attempt in range(40):
                signal_soon = threading.Timer(
                    rng.uniform(0, 0.03), os.kill, (os.getpid(), signal.SIGTERM)
                )
                deadline = time.monotonic() + 10
                try:
                    signal_soon.start()  # a short delay may fire while start() returns
                    while time.monotonic() < deadline:  # reads and writes, nothing else
                        store.set_tag(run_id, "attempt", str(attempt))
                        store.log_metric(run_id, "m", attempt)
                        store.get_run(run_id)
                    pytest.fail("the signal never raised KeyboardInterrupt")
                except KeyboardInterrupt:
                    probe = sqlite3.connect(database, timeout=0.5)
                    try:
                        probe.execute("BEGIN EXCLUSIVE")  # fails while a connection holds a lock
                    finally:
                        probe.close()
                signal_soon.join()
        assert tracking.get_run(run_id).info.status == "FINISHED"
        assert signals_installed.received() and sys.getprofile() is None
    finally:
        mlflow.set_tracking_uri(None)


def test_a_signal_while_the_run_is_created_ends_it_killed(stores, signals_installed, monkeypatch):
    """SIGTERM right after MLflow created the run, before the step could end it: the run
    still ends KILLED (seen under load as a run left RUNNING)."""
    import os
    import signal

    import mlflow

    from pipeline import tracking

    runs = importlib.import_module("pipeline.tracking.runs")  # `tracking.runs` is a function
    created = []

    def start_then_signal(*args):
        run = original(*args)
        created.append(run.info.run_id)
        os.kill(os.getpid(), signal.SIGTERM)
        return run

    original = runs._start
    monkeypatch.setattr(runs, "_start", start_then_signal)
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        step = tracking.step_run("evaluate", {}, name="evaluate mlp")
        with pytest.raises(KeyboardInterrupt), step:
            pytest.fail("the step's body ran after the signal")
        (run_id,) = created
        assert tracking.get_run(run_id).info.status == "KILLED"
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(None)


def test_an_interrupt_turned_into_another_error_still_ends_the_run_killed(
    stores, signals_installed
):
    import os
    import signal

    import mlflow

    from pipeline import tracking

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        step = tracking.step_run("evaluate", {}, name="evaluate mlp")
        with pytest.raises(RuntimeError), step as run_id:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:  # what some library code does with it
                raise RuntimeError("interrupted") from None
        run = tracking.get_run(run_id)
        assert run.info.status == "KILLED" and "error" not in run.data.tags
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.reliability
def test_a_signal_while_the_run_is_ended_still_ends_it(stores, signals_installed, monkeypatch):
    """mlflow.end_run takes the run off its stack, then writes its end: a SIGTERM between
    the two left it RUNNING (1 in ~60 signals at random moments of a short step)."""
    import os
    import signal

    import mlflow

    from pipeline import tracking

    original = mlflow.MlflowClient.set_terminated

    def signal_then_end(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # lands here, before the write
        return original(self, *args, **kwargs)

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        step = tracking.step_run("evaluate", {}, name="evaluate mlp")
        with pytest.raises(KeyboardInterrupt), step as run_id:
            monkeypatch.setattr(mlflow.MlflowClient, "set_terminated", signal_then_end)
        monkeypatch.undo()
        assert tracking.get_run(run_id).info.status == "FINISHED"  # its work was done
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.reliability
def test_a_signal_while_optuna_tells_a_trial_stops_the_search_cleanly(
    signals_installed, monkeypatch
):
    """A SIGTERM between a trial's end and Optuna's `tell` left the trial RUNNING (the next
    tune failed the finished trial and ran it again) and surfaced as Optuna's
    UnboundLocalError: exit 1, not 130."""
    import os
    import signal

    import optuna
    import optuna.study._optimize as optimize

    from pipeline.config import TuneSettings
    from pipeline.study import search

    original = optimize._tell_with_warning

    def signal_then_tell(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(optimize, "_tell_with_warning", signal_then_tell)
    monkeypatch.setattr(search, "fail_orphaned_trials", lambda study: 0)
    monkeypatch.setattr(search, "objective_for", lambda *a: lambda trial: 0.5)
    monkeypatch.setattr(search, "best_so_far", lambda parent: lambda study, trial: None)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    settings = TuneSettings().replace(n_trials=3)
    with pytest.raises(KeyboardInterrupt):
        search.search(study, settings, "parent", {})
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


@pytest.mark.reliability
def test_a_second_signal_while_a_trial_run_is_ended_still_ends_it(
    stores, signals_installed, monkeypatch
):
    """A trial stopped by a signal ends its run KILLED in the objective's cleanup (a tag,
    then the end): a second signal between the two (a scheduler signalling the process
    group, then `main` cancelling its child) left the trial's run RUNNING."""
    import os
    import signal

    import mlflow
    import optuna

    from pipeline import tracking
    from pipeline.config import TuneSettings
    from pipeline.study import search

    def first_signal(job, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # training stopped

    def second_signal_then_tag(run_id, tags):
        os.kill(os.getpid(), signal.SIGTERM)  # lands before the run is ended
        original(run_id, tags)

    original = tracking.set_tags
    monkeypatch.setattr(search.fit, "prepare", lambda settings: None)
    monkeypatch.setattr(search.fit, "run", first_signal)
    monkeypatch.setattr(search.tracking, "set_tags", second_signal_then_tag)
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        parent = mlflow.MlflowClient().create_run(tracking.ensure_experiment()).info.run_id
        study = optuna.create_study(direction="maximize")
        objective = search.objective_for(
            study, TuneSettings(), parent, {"tune.worker_run_id": parent}
        )
        trial = study.ask()
        with pytest.raises(KeyboardInterrupt):
            objective(trial)
        run_id = trial.user_attrs["mlflow_run_id"]
        run = tracking.get_run(run_id)
        assert (run.info.status, run.data.tags["trial.state"]) == ("KILLED", "FAIL")
    finally:
        mlflow.set_tracking_uri(None)


def test_an_empty_tracking_variable_counts_as_unset(tmp_path, monkeypatch):
    """As MLflow reads them (a script exporting an unset shell variable): an empty
    MLFLOW_TRACKING_URI was refused as a folder store."""
    import os

    from pipeline import config
    from pipeline.tracking import store

    monkeypatch.setenv("FMB_MLRUNS_DIR", str(tmp_path))
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(key, "")
    for key in store.HTTP_DEFAULTS:
        monkeypatch.setenv(key, "")
    store.apply_defaults()
    assert os.environ["MLFLOW_TRACKING_URI"] == config.default_tracking_uri()
    assert str(tmp_path) in store.tracking_uri()
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == config.EXPERIMENT_NAME
    assert {key: os.environ[key] for key in store.HTTP_DEFAULTS} == store.HTTP_DEFAULTS


PROBE = """
import runpy, sys
from pipeline import interrupts
from pipeline.steps import compare

def stopped_inside_generated_code(settings):
    exec("raise KeyboardInterrupt")  # a signal while dataclasses or SQLAlchemy run source

compare.main = stopped_inside_generated_code
if sys.argv[1:] == ["unfixed"]:
    interrupts.clear_exit_mark = lambda: None
sys.argv = ["pipeline", "compare"]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


@pytest.mark.reliability
def test_a_step_stopped_inside_code_run_from_source_exits_130_not_by_sigint(tmp_path):
    """CPython marks an interrupt that ends an `exec`/`eval` of source as unhandled even when
    it is caught; under `python -m` the process then died of SIGINT (-2, no traceback) after
    its step had printed "interrupted" and ended its run KILLED (seen in a loop of SIGTERMed
    evaluate steps, 1 in 34). The step itself runs as `python -m pipeline` does."""
    import subprocess
    import sys

    (tmp_path / "probe.py").write_text(PROBE)
    env = clean_env({"PYTHONPATH": str(ROOT)})

    def probe(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "probe", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    stopped = probe()
    assert (stopped.returncode, stopped.stderr) == (130, "interrupted\n"), stopped.stderr
    # the interpreter's behaviour this guards against, still there without the guard
    assert probe("unfixed").returncode == -2


def test_a_deleted_or_missing_experiment_is_one_error_line_and_no_run(stores, monkeypatch):
    """MLflow refused a run in a deleted experiment, or a missing MLFLOW_EXPERIMENT_ID, with
    a 40-line traceback and exit 1, in every step."""
    import mlflow

    from pipeline.errors import UserError
    from pipeline.tracking import store

    c = mlflow.MlflowClient(stores["MLFLOW_TRACKING_URI"])
    gone = c.create_experiment("gone")
    c.delete_experiment(gone)
    done = run_step(["compare"], {**stores, "MLFLOW_EXPERIMENT_NAME": "gone"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: experiment 'gone'") and "is deleted" in lines[0]
    assert c.search_runs([gone], run_view_type=mlflow.entities.ViewType.ALL) == []
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "99999")
    with pytest.raises(UserError, match="MLFLOW_EXPERIMENT_ID 99999: no such experiment"):
        store.ensure_experiment()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", gone)
    with pytest.raises(UserError, match="is deleted"):
        store.ensure_experiment()


@pytest.mark.reliability
def test_a_run_stopped_while_logging_its_model_leaves_no_pending_model(stores):
    """A model being logged when its run was stopped (a signal in the step, or a SIGKILL
    whose run a later step closes) stayed PENDING in the Models tab, with no files."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from pipeline import tracking

    def pending_model(run_id: str) -> str:
        return mlflow.initialize_logged_model(name="model", source_run_id=run_id).model_id

    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    try:
        store = mlflow.MlflowClient()
        stopping = tracking.step_run("train", {}, name="train mlp seed=1")
        with pytest.raises(KeyboardInterrupt), stopping as run_id:
            stopped = pending_model(run_id)
            raise KeyboardInterrupt
        assert store.get_run(run_id).info.status == "KILLED"
        assert store.get_logged_model(stopped).status == LoggedModelStatus.FAILED
        left = store.create_run(tracking.ensure_experiment()).info.run_id  # a SIGKILLed one's
        orphan = pending_model(left)
        tracking.close_run(left, "KILLED")
        assert store.get_logged_model(orphan).status == LoggedModelStatus.FAILED
    finally:
        mlflow.set_tracking_uri(None)
