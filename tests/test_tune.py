"""The tune step: nested runs on both sides of the Optuna/MLflow link, pruning, the trial cap
across re-runs and parallel workers (PostgreSQL, journal file), killed workers, bad input.

Expensive setup is shared: the module prepares the real data once and keeps one MLflow store
(creating its schema costs ~7 s); each test works on a study of its own name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, clean_env, mlflow_run, run_step, store_client, store_env

from pipeline import data

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TINY = ["--model", "mlp", "--subset", "300", "--batch_size", "64"]  # seconds per trial
HEARTBEAT_S, GRACE_S = 2, 5  # the kill test's settings (defaults are 10 and 30 s)
MAIN = {"model": "mlp", "epochs": 2, "subset": 300, "batch_size": 64}
MAIN.update(n_trials=6, final_epochs=1, final_seeds=1, pruner="odd_trials")  # odd: pruned
FINISHED = ("COMPLETE", "PRUNED")


# --- shared setup ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(real_data, tmp_path_factory) -> dict[str, str]:
    """Store environment for the module's processes: data prepared, MLflow store created."""
    from pipeline import tracking

    env = {**store_env(tmp_path_factory.mktemp("tune")), "FASHION_MNIST_DIR": str(real_data)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
            patch.delenv(key, raising=False)
        _, manifest, _ = data.write_cache(data.load_raw(real_data), 0.1, 42)
        # parallel workers must not race to create the schema and the experiment
        import mlflow

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        tracking.ensure_experiment()
    env["DIGEST"] = manifest["digest"]  # names the main study; ignored by the children
    return env


def client(env):
    return store_client(env["MLFLOW_TRACKING_URI"])  # the store may still be being created


def runs_where(env, filter_string: str) -> list:
    c = client(env)
    experiment = c.get_experiment_by_name("fashion-mnist").experiment_id
    return c.search_runs([experiment], filter_string=filter_string, max_results=1000)


def default_storage(env) -> str:
    return f"sqlite:///{env['FMB_MLRUNS_DIR']}/optuna.db"


def journal_storage(path) -> object:
    """The Optuna journal file at `path` (a storage without heartbeats)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def load_study(name: str, storage: str):
    import optuna

    if storage.startswith("journal:"):
        storage = journal_storage(storage[len("journal:") :])
    return optuna.load_study(study_name=name, storage=storage)


def finished(study) -> list:
    return [t for t in study.trials if t.state.name in FINISHED]


def start_worker(args: list[str], env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "tune", *args],
        cwd=ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_trial_runs(env, study) -> dict:
    """Each started trial names exactly one child run of the study's parent, and back."""
    parent = study.user_attrs["mlflow_parent_run_id"]
    # every trial that started training; a surplus trial ends FAIL before it has a run
    started = [
        t for t in study.trials if t.state.name != "WAITING" and not t.user_attrs.get("surplus")
    ]
    ids = [t.user_attrs["mlflow_run_id"] for t in started]
    runs = runs_where(env, f"tags.`optuna.study` = '{study.study_name}'")
    children = {r.info.run_id: r for r in runs if r.data.tags["pipeline.step"] == "trial"}
    assert sorted(children) == sorted(ids), "not exactly one child run per trial"
    assert len({t.number for t in study.trials}) == len(study.trials)
    for trial in started:
        tags = children[trial.user_attrs["mlflow_run_id"]].data.tags
        assert tags["mlflow.parentRunId"] == parent
        assert tags["trial.number"] == str(trial.number)
    return children


# --- 1 and 2: a study through `mlflow run`, then resumed --------------------------------


@pytest.fixture(scope="module")
def main_study(env, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cwd")
    result = mlflow_run("tune", MAIN, env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    from pipeline import cli
    from pipeline.study import search

    argv = [f"--{k}={v}" for k, v in MAIN.items()]
    name = search.study_name(cli.parse("tune", argv), env["DIGEST"])
    assert name.startswith(f"mlp-base-e2-s300-{env['DIGEST'][:8]}-")
    return name, load_study(name, default_storage(env)), cwd


def test_study_through_mlflow_run(main_study, env, tmp_path):
    name, study, _ = main_study
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    parent = client(env).get_run(parent_id)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and tags["pipeline.step"] == "tune"
    assert tags["mlflow.project.entryPoint"] == "tune"  # the run `mlflow run` created
    assert tags["optuna.study"] == name and tags["tune.role"] == "parent"
    assert tags["optuna.storage"] == default_storage(env) and tags["optuna.sampler"] == "tpe"
    assert "optuna.pruner" in tags
    assert len(study.trials) == MAIN["n_trials"] == len(finished(study))
    assert study.trials[0].params == {"lr": 1e-3, "optimizer": "adam", "loss": "ce", "flip": False}
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "the forced pruner pruned nothing"
    children = check_trial_runs(env, study)
    for trial in study.trials:
        run = children[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"  # COMPLETE and PRUNED alike
        assert run.data.tags["trial.state"] == trial.state.name
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        curve = client(env).get_metric_history(run.info.run_id, "val_accuracy")
        assert {m.step: m.value for m in curve} == pytest.approx(trial.intermediate_values)
        assert len(curve) == (1 if trial.state.name == "PRUNED" else MAIN["epochs"])
    check_final_and_artifacts(env, study, parent, tmp_path)
    # optuna-dashboard shows the metric's name and each trial links to its run
    assert study.metric_names == ["val_accuracy"]
    for trial in study.trials:
        url = trial.user_attrs["mlflow_run_url"]
        assert url.endswith(f"/runs/{trial.user_attrs['mlflow_run_id']}")
    # the parent's best-so-far curve, one point per completed trial (step = trial number)
    curve = client(env).get_metric_history(parent_id, "best_trial_val_accuracy")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    points = {m.step: m.value for m in curve}  # no point at a trial that does not exist
    assert len(curve) == len(points)  # and none twice (the UI drew the curve back to it)
    assert sorted(points) == [t.number for t in complete]
    best = [max(t.value for t in complete if t.number <= n) for n in sorted(points)]
    assert [points[n] for n in sorted(points)] == pytest.approx(best)


def check_final_and_artifacts(env, study, parent, tmp_path):
    c = client(env)
    (final_id,) = parent.data.tags["tune.final_run_ids"].split(",")
    final = c.get_run(final_id)
    assert final.data.tags["pipeline.step"] == "train" and final.info.status == "FINISHED"
    assert final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert final.data.tags["evaluated"] == "true" and "test_accuracy" in final.data.metrics
    assert final.data.tags["evaluated_by"] == parent.info.run_id  # the tune run that scored it
    assert final.data.tags["tune.best_trial"] == str(study.best_trial.number)
    assert final.data.tags["tune.tuned"] == "true"
    assert final.data.params["seed"] == "43"  # trials train with seed 42: a fresh one
    assert {"final_test_accuracy", "final_val_accuracy", "n_pruned"} <= set(parent.data.metrics)
    names = {a.path for a in c.list_artifacts(parent.info.run_id)}
    plots = ("optimization_history", "param_importances", "parallel_coordinate")
    assert {f"{p}.png" for p in (*plots, "intermediate_values")} <= names, names
    assert {"trials.csv", "best_params.json", "config.json"} <= names

    def artifact(name: str) -> str:
        return Path(c.download_artifacts(parent.info.run_id, name, str(tmp_path))).read_text()

    assert json.loads(artifact("best_params.json")) == study.best_trial.params
    assert len(artifact("trials.csv").strip().splitlines()) == 1 + len(study.trials)


def test_rerun_resumes_up_to_the_cap(main_study, env):
    name, study, cwd = main_study
    parent = study.user_attrs["mlflow_parent_run_id"]
    store = client(env)
    before = {k: store.get_metric_history(parent, k) for k in ("n_trials", "final_val_accuracy")}
    again = mlflow_run("tune", MAIN, env, cwd=cwd)  # the same command: the study is full
    assert again.returncode == 0, again.stderr[-4000:]
    # it reports the retrains it found (their values were missing), logging nothing twice
    result = json.loads(again.stdout.strip().splitlines()[-1])
    (final_val,) = before["final_val_accuracy"]
    assert result["final_val_accuracy"] == pytest.approx(final_val.value, abs=1e-12)
    assert {"final_test_accuracy", "final_run_ids"} <= set(result)
    for key, history in before.items():
        assert store.get_metric_history(parent, key) == history, key
    study = load_study(name, default_storage(env))
    assert len(study.trials) == MAIN["n_trials"]
    finals = runs_where(env, f"tags.`optuna.study` = '{name}' and tags.`pipeline.step` = 'train'")
    assert len(finals) == 1, "the unchanged best trial was retrained again"
    workers = runs_where(env, f"tags.`optuna.study` = '{name}' and tags.`pipeline.step` = 'tune'")
    assert len(workers) == 2
    rerun = next(r.data.tags for r in workers if r.info.run_id != parent)
    assert rerun["tune.role"] == "worker" and rerun["tune.parent_run_id"] == parent
    args = ["--epochs", "2", "--n_trials", "7", "--final", "false", "--pruner", "odd_trials"]
    more = run_step(["tune", *TINY, *args], env)  # a raised cap: exactly one more trial
    assert more.returncode == 0, more.stderr[-4000:]
    study = load_study(name, default_storage(env))
    assert len(study.trials) == len(finished(study)) == 7
    check_trial_runs(env, study)


def test_a_later_worker_retrains_under_the_finished_parent(main_study, env):
    """Another final_epochs retrains the best trial, from a run that is not the study's
    parent (which finished long ago): MLflow starts nested runs only under the active run,
    so this crashed with a traceback before the retrain run was made as a child first."""
    name, study, _ = main_study
    parent = study.user_attrs["mlflow_parent_run_id"]
    args = ["--epochs", "2", "--n_trials", "6", "--pruner", "odd_trials", "--final_seeds", "1"]
    again = run_step(["tune", *TINY, *args, "--final_epochs", "2"], env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "retrained already" not in again.stderr
    own = json.loads(again.stdout.strip().splitlines()[-1])["run_id"]
    tags = client(env).get_run(own).data.tags
    (retrain,) = tags["tune.final_run_ids"].split(",")  # on the worker's own run, for main
    assert client(env).get_run(parent).data.tags["tune.final_run_ids"] == retrain
    assert tags["tune.role"] == "worker" and tags["tune.complete"] == "true"
    run = client(env).get_run(retrain)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["epochs"] == "2" and run.data.tags["evaluated"] == "true"
    counted = len(finished(load_study(name, default_storage(env))))  # 7 after the test above
    assert run.data.tags["pipeline.step"] == "train" and run.data.tags["tune.n_trials"] == str(
        counted
    )
    wide = run_step(["tune", *TINY, *args, "--study_name", name, "--space", "wide"], env)
    lines = wide.stderr.strip().splitlines()
    assert wide.returncode != 0 and len(lines) == 1, wide.stderr[-4000:]
    assert lines[0].startswith("error:") and "space=base (here wide)" in lines[0]


# --- 3: parallel workers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_missing() -> str | None:
    import importlib.util
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user: apt-get install postgresql"
    if not (PG_BIN / "initdb").is_file() or shutil.which("runuser") is None:
        return f"PostgreSQL 15 not installed ({PG_BIN}); apt-get install postgresql"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg missing: pip install 'psycopg[binary]'"
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 (initdb refuses root: run as postgres)."""
    missing = postgres_missing()
    if os.geteuid() != 0:
        missing = "starting a PostgreSQL cluster as the postgres user needs root"
    if missing and os.environ.get("CI"):
        pytest.fail(missing)  # CI installs it: a skip there would hide a broken setup
    if missing:
        pytest.skip(missing)
    directory = Path(tempfile.mkdtemp(prefix="fmb-pg-"))  # pytest's tmp is 0700 root-only
    shutil.chown(directory, "postgres", "postgres")
    as_postgres, pgdata, port = ["runuser", "-u", "postgres", "--"], directory / "data", free_port()
    subprocess.run(
        [*as_postgres, str(PG_BIN / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1"
    pg_ctl = [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(pgdata)]
    # -l: without a log file the server inherits our pipes and run() never returns
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(directory / "server.log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_parallel_workers_share_one_study(kind, env, tmp_path, request):
    if kind == "postgresql":
        storage = request.getfixturevalue("postgres_url")
    else:
        storage = f"journal:{tmp_path / 'study.journal'}"
    # four workers on two cores (the load), each racing the others for the last trials
    name, n_trials, n_workers = f"parallel-{kind}", 6, 4
    args = [*TINY, "--epochs", "1", "--n_trials", str(n_trials), "--pruner", "none"]
    args += ["--final", "false", "--storage", storage, "--study_name", name]
    workers = [start_worker(args, env) for _ in range(n_workers)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-4000:]
    study = load_study(name, storage)
    assert len(finished(study)) == n_trials  # exactly: a surplus trial never trains
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == n_trials and len({t.number for t in complete}) == n_trials
    check_trial_runs(env, study)
    runs = runs_where(env, f"tags.`optuna.study` = '{name}' and tags.`pipeline.step` = 'tune'")
    assert len(runs) == n_workers and all(r.info.status == "FINISHED" for r in runs)
    roles = sorted(r.data.tags["tune.role"] for r in runs)
    assert roles == ["parent"] + ["worker"] * (n_workers - 1)
    assert {r.data.tags["tune.parent_run_id"] for r in runs} == {
        study.user_attrs["mlflow_parent_run_id"]
    }


# --- 4: a killed worker -----------------------------------------------------------------


def wait_for_running_trial(env, name: str, storage, worker: subprocess.Popen, timeout=180):
    """The first trial once its run has logged an epoch: mid-trial, heartbeat recorded."""
    import optuna

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, worker.communicate()[1][-4000:]
        try:
            trials = optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:  # the worker has not created the study yet
            trials = []
        running = [t for t in trials if "mlflow_run_id" in t.user_attrs]
        if running and client(env).get_metric_history(
            running[0].user_attrs["mlflow_run_id"], "val_accuracy"
        ):
            return running[0]
        time.sleep(0.5)
    raise AssertionError("no trial started in time")


@pytest.mark.reliability
@pytest.mark.slow
def test_killed_worker_trial_is_failed_closed_and_retried(env):
    import optuna

    name, n_trials = "killed-worker", 2
    # long trials, so the worker is killed mid-trial; the later worker must run the same
    # (a study is joined only with the settings that created it): about 7 s a trial
    args = [*TINY, "--n_trials", str(n_trials), "--pruner", "none", "--final", "false"]
    args += ["--epochs", "40"]
    args += ["--study_name", name, "--heartbeat_s", str(HEARTBEAT_S), "--grace_s", str(GRACE_S)]
    # the schema exists before the worker starts: polling must not race it creating tables
    storage = optuna.storages.RDBStorage(default_storage(env))
    worker = start_worker(args, env)
    try:
        trial = wait_for_running_trial(env, name, storage, worker)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate()
    run_id, worker_run = trial.user_attrs["mlflow_run_id"], trial.user_attrs["mlflow_worker_run_id"]
    assert client(env).get_run(run_id).info.status == "RUNNING"  # nothing closed it yet
    time.sleep(GRACE_S + 1)
    later = run_step(["tune", *args], env)  # the same command: it continues the study
    assert later.returncode == 0, later.stderr[-4000:]
    study = load_study(name, default_storage(env))
    assert study.trials[trial.number].state.name == "FAIL"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == trial.params
    assert retries[0].user_attrs["mlflow_run_id"] != run_id
    dead = client(env).get_run(run_id)
    # FAILED by the heartbeat check, or KILLED when the next step found its process gone
    assert dead.info.status in ("FAILED", "KILLED") and dead.data.tags["trial.state"] == "FAIL"
    # the killed worker created the study, so its run is the study's parent: closed KILLED
    # when its process was found gone, then FINISHED once the later worker concluded it
    parent = client(env).get_run(worker_run)
    assert study.user_attrs["mlflow_parent_run_id"] == worker_run
    assert parent.info.status == "FINISHED", parent.info.status
    assert parent.data.tags["previous_status"] == "KILLED"
    assert (
        parent.data.tags["tune.concluded_by"] == json.loads(later.stdout.splitlines()[-1])["run_id"]
    )
    assert len(finished(study)) == n_trials
    check_trial_runs(env, study)


# --- in-process: what the search may read, and failing trials ---------------------------


def test_search_never_opens_the_test_split_and_failed_trials_end_failed(env, monkeypatch, capsys):
    import mlflow

    from pipeline import cli, fit, study

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])

    def forbidden(*args, **kwargs):
        raise AssertionError("the search opened the test split")

    original_load, original_run = np.load, fit.run
    original_test_split = data.load_test_split

    def guarded_load(path, *args, **kwargs):
        assert not str(path).endswith("test.npz"), f"the search read {path}"
        return original_load(path, *args, **kwargs)

    def run_failing_trial_2(job, **kwargs):  # fails before training opens the run
        if kwargs.get("tags", {}).get("trial.number") == "2":
            raise RuntimeError("broken configuration")
        return original_run(job, **kwargs)

    monkeypatch.setattr(data, "load_test_split", forbidden)
    monkeypatch.setattr(np, "load", guarded_load)
    monkeypatch.setattr(fit, "run", run_failing_trial_2)
    argv = [*TINY, "--epochs", "1", "--n_trials", "3", "--pruner", "odd_trials", "--final", "false"]
    result = study.tune(cli.parse("tune", [*argv, "--study_name", "in-process"]))
    found = load_study("in-process", default_storage(env))
    assert [t.state.name for t in found.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert result["n_trials"] == 2  # finished ones: a failed trial never counts
    runs = check_trial_runs(env, found)
    for trial in found.trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["trial.state"] == trial.state.name
        assert run.info.status == ("FAILED" if trial.state.name == "FAIL" else "FINISHED")
        assert run.data.tags["dataset.digest"] == env["DIGEST"] and run.data.tags["code.version"]
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]
        checkpoint = Path(env["FMB_MLRUNS_DIR"]) / "checkpoints" / f"{run.info.run_id}.pt"
        assert not checkpoint.exists(), "a pruned or failed trial left its checkpoint"
    assert (
        "broken configuration"
        in runs[found.trials[2].user_attrs["mlflow_run_id"]].data.tags["error"]
    )
    assert "n_pruned" not in result  # 2 of 3 finished: not concluded
    # the same command runs trial 3; final=false still concludes the study on its parent
    # run, without a retrain
    result = study.tune(cli.parse("tune", [*argv, "--study_name", "in-process"]))
    found = load_study("in-process", default_storage(env))
    assert [t.state.name for t in found.trials] == ["COMPLETE", "PRUNED", "FAIL", "PRUNED"]
    assert "final_run_ids" not in result and (result["n_trials"], result["n_pruned"]) == (3, 2)
    # and says that nothing retrained it (two workers, one with final=false, both ended
    # without a retrain and said nothing)
    assert "best trial 0 is not retrained (final=false)" in capsys.readouterr().err
    assert result["default_trial_val_accuracy"] == found.trials[0].value  # the base config
    assert result["best_params"] == found.best_trial.params
    parent = client(env).get_run(result["parent_run_id"])
    assert parent.data.metrics["n_trials"] == 3 and parent.data.metrics["n_pruned"] == 2
    assert "final_val_accuracy" not in parent.data.metrics
    names = {a.path for a in client(env).list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_params.json", "optimization_history.png"} <= names
    trains = runs_where(
        env, "tags.`optuna.study` = 'in-process' and tags.`pipeline.step` = 'train'"
    )
    assert trains == []
    # the retrain that follows (as main's does after its final=false workers on Ray) adds
    # its final_* values, and the summary's points only once
    monkeypatch.setattr(data, "load_test_split", original_test_split)
    monkeypatch.setattr(np, "load", original_load)
    final = ["--final", "true", "--final_seeds", "1", "--final_epochs", "1"]
    retrain = study.tune(cli.parse("tune", [*argv[:-2], *final, "--study_name", "in-process"]))
    assert len(retrain["final_run_ids"]) == 1
    for key in ("n_trials", "n_pruned", "final_val_accuracy"):
        assert len(client(env).get_metric_history(result["parent_run_id"], key)) == 1, key


@pytest.mark.reliability
def test_a_trial_stopped_by_a_signal_runs_again_with_its_parameters(env, monkeypatch):
    """Ctrl-C in the default trial (trial 0) left it FAIL for good: the resumed study never
    scored the base configuration, and Hyperband could prune it."""
    import mlflow
    import optuna

    from pipeline import cli, fit, study
    from pipeline.study import search, space

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    original = fit.run

    def stopped_in_trial_0(job, **kwargs):
        if kwargs.get("tags", {}).get("trial.number") == "0":
            raise KeyboardInterrupt
        return original(job, **kwargs)

    argv = [*TINY, "--epochs", "1", "--n_trials", "2", "--pruner", "none", "--final", "false"]
    settings = cli.parse("tune", [*argv, "--study_name", "stopped"])
    monkeypatch.setattr(fit, "run", stopped_in_trial_0)
    with pytest.raises(KeyboardInterrupt):
        study.tune(settings)
    monkeypatch.setattr(fit, "run", original)
    found = load_study("stopped", default_storage(env))
    assert [t.state.name for t in found.trials] == ["FAIL", "WAITING"]
    retry = found.trials[1]
    assert retry.params == space.defaults(settings) and search.is_default_trial(retry)
    assert "mlflow_run_id" not in retry.user_attrs  # the retry gets a run of its own
    parent = found.user_attrs[search.PARENT_ATTR]
    assert mlflow.get_run(parent).info.status == "KILLED"
    result = study.tune(settings)  # the same command
    found = load_study("stopped", default_storage(env))
    assert [t.state.name for t in found.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert result["default_trial_val_accuracy"] == found.trials[1].value
    assert not search.is_default_trial(found.trials[2])
    assert optuna.trial.TrialState.WAITING not in {t.state for t in found.trials}
    # the study's parent run, which the Ctrl-C killed, ends FINISHED once the re-run (a
    # worker of it) concluded the study; it showed the concluded study as KILLED
    assert result["parent_run_id"] == parent != result["run_id"]
    run = mlflow.get_run(parent)
    assert run.info.status == "FINISHED", run.info.status
    assert run.data.tags["tune.concluded_by"] == result["run_id"]
    assert run.data.tags["previous_status"] == "KILLED"
    assert run.data.metrics["n_trials"] == 2
    assert not result["timed_out"] and "tune.timed_out" not in run.data.tags


def test_a_timeout_ends_the_search_retrains_the_best_so_far_and_says_so(env, monkeypatch):
    """`timeout` stops the worker before n_trials; the study counts as complete (its best
    trial so far is retrained) and the run says it was cut short (no tag told it before)."""
    import mlflow

    from pipeline import cli, study

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    argv = [*TINY, "--epochs", "1", "--n_trials", "50", "--timeout", "2", "--pruner", "none"]
    settings = cli.parse("tune", [*argv, "--final_seeds", "1", "--study_name", "timed"])
    result = study.tune(settings)
    assert result["timed_out"] and 1 <= result["n_trials"] < 50, result
    assert len(result["final_run_ids"]) == 1  # the best so far, retrained
    tags = mlflow.get_run(result["run_id"]).data.tags
    assert tags["tune.timed_out"] == "true" and tags["tune.complete"] == "true"


# --- 5: bad input and help --------------------------------------------------------------


BAD = [
    (["--n_trials", "0"], "n_trials"),
    (["--pruner", "magic"], "pruner"),
    (["--sampler", "cmaes"], "sampler"),
    (["--storage", "optuna.db"], "storage"),
    (["--model", "svc"], "scikit-learn"),  # replaces TINY's model (test below)
    (["--heartbeat_s", "5", "--grace_s", "5"], "grace_s"),
    (["--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/x"], "127.0.0.1:1"),
    # the first trial is the base configuration: it trained at lr_max, the default trial's
    # score was reported for a configuration nobody asked for
    (["--lr", "0.5"], "lr=0.5 lies outside the searched range 0.0001..0.01"),
    (["--space", "wide", "--dropout", "0.6"], "dropout=0.6 lies outside"),
]


@pytest.mark.parametrize("args, word", BAD, ids=[w for _, w in BAD])
def test_bad_input_is_one_error_line(args, word, stores):
    started = time.monotonic()
    tiny = TINY[2:] if args[0] == "--model" else TINY  # a setting given twice is refused
    result = run_step(["tune", *tiny, *args], stores, timeout=120)
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], result.stderr
    assert "secret" not in result.stderr  # passwords in storage URLs are never echoed


@pytest.mark.parametrize(
    "storage, code",
    [("postgresql+psycopg://u@127.0.0.1:1/x", 3), ("postgresql+nosuchdriver://u@127.0.0.1/x", 2)],
    ids=["no answer", "no driver"],
)
def test_only_a_server_that_did_not_answer_exits_3(storage, code, stores):
    """Exit 3 tells Ray to retry the job: right for a server that may be back, never for a
    driver that is not installed (it exited 3 too)."""
    result = run_step(["tune", *TINY, "--storage", storage], stores, timeout=120)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("error: cannot open Optuna storage"), result.stderr


def test_help_documents_every_parameter():
    import yaml

    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "tune", "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["tune"]
    flags = {*entry["parameters"], "final", "final_epochs", "patience", "heartbeat_s", "grace_s"}
    for name in flags:
        assert f"--{name}" in result.stdout, f"--{name} missing from tune -h"
    from pipeline import cli

    for action in cli.parser_for("tune")._actions:
        if action.help != "==SUPPRESS==":
            assert action.help and len(action.help) > 10, action.option_strings


def test_storage_urls_are_redacted():
    from pipeline.values import redact

    assert redact("postgresql://me:pw@host:5432/db") == "postgresql://me:***@host:5432/db"
    assert redact("postgresql://me@host/db") == "postgresql://me@host/db"
    assert redact("journal:/tmp/a.log") == "journal:/tmp/a.log"
    # libpq / SQLAlchemy take the password as a query parameter too (it reached the tune
    # run's storage param, optuna.storage tag and description)
    shown = redact("postgresql://me@host/db?sslmode=require&password=pw&x=1")
    assert shown == "postgresql://me@host/db?sslmode=require&password=***&x=1"


def test_a_storage_password_stays_out_of_the_tune_runs_config_json(monkeypatch):
    """Params, tags and messages showed the storage URL redacted, but config.json had the
    password."""
    from pipeline import cli, study, tracking

    url = "postgresql://me:s3cret@db.example/optuna"
    settings = cli.parse("tune", [*TINY, "--storage", url])
    monkeypatch.setattr(study, "open_checked", lambda s: ("ab" * 32, "n", None, True, 1))
    seen = {}

    class Stop(Exception):
        pass

    def step_run(step, params, name, config, tags):
        seen.update(params=params, config=config, tags=tags)
        raise Stop

    monkeypatch.setattr(tracking, "step_run", step_run)
    with pytest.raises(Stop):
        study.tune(settings)
    assert seen["config"]["storage"] == "postgresql://me:***@db.example/optuna"
    assert "s3cret" not in json.dumps(seen)


def test_hyperband_prunes_a_lone_trial_but_never_the_default_trial():
    """The registered hyperband pruner (bootstrap_count=1) prunes a trial that reaches a rung
    first, where Optuna's default would promote it for lack of rivals, but never trial 0 (the
    enqueued default configuration); of 12 epochs, its brackets first prune at 1 or 3, never
    only at 9."""
    import optuna

    from pipeline.study import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def pruned_at(study, trial, value=0.5):
        """The epoch a trial reporting `value` every epoch is pruned at; None: it completes."""
        for epoch in range(1, 13):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return epoch
        study.tell(trial, value)
        return None

    def first_rungs(pruner) -> set[int]:
        """Trial 0, then 20 trials each worse than every trial before it, so each is pruned at
        the first rung of its bracket, whether it is alone there (bootstrap) or behind an
        earlier trial (equal values would not do: a tie with a trial pruned earlier in the
        same bracket is promoted). The fixed name fixes Optuna's bracket assignment, a hash
        of the study name and the trial number."""
        study = optuna.create_study(study_name="brackets", direction="maximize", pruner=pruner)
        assert pruned_at(study, study.ask(), value=0.1) is None  # trial 0: all 12 epochs
        return {pruned_at(study, study.ask(), value=0.09 - i / 1000) for i in range(20)}

    assert first_rungs(search.PRUNERS["hyperband"](12)) == {1, 3}
    # Optuna's own bracket count for 12 epochs adds the bracket that first prunes at epoch 9
    optunas = search.KeepsDefaultTrial(min_resource=1, max_resource=12, bootstrap_count=1)
    assert first_rungs(optunas) == {1, 3, 9}
    search.KeepsDefaultTrial(min_resource=1)  # max_resource="auto": laid out at the first prune
    plain = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=6, bootstrap_count=1)
    inner = optuna.create_study(direction="maximize", pruner=plain)
    assert pruned_at(inner, inner.ask()) in (1, 3)  # trial 0 alone: pruned without the wrapper
    default = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.HyperbandPruner(min_resource=1)
    )
    assert pruned_at(default, default.ask()) is None  # Optuna's default promotes it


def test_the_sampler_is_handed_the_study_of_a_trials_hyperband_bracket():
    """Optuna hands samplers a bracket's study only for a HyperbandPruner
    (optuna.pruners._filter_study), which the project's pruner, a wrapper, was not. (That
    study filters `get_trials`; Optuna 5's TPE reads `_get_trials`, so its proposals are the
    same either way: search.KeepsDefaultTrial.)"""
    import optuna

    from pipeline.study import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seen = []

    class Spy(optuna.samplers.TPESampler):
        def sample_relative(self, study, trial, space):
            seen.append(len(study.get_trials(deepcopy=False)))
            return super().sample_relative(study, trial, space)

    pruner = search.PRUNERS["hyperband"](12)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    study = optuna.create_study(
        study_name="hb",
        direction="maximize",
        pruner=pruner,
        sampler=Spy(seed=0, n_startup_trials=5),
    )

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for epoch in range(1, 13):
            trial.report(x * epoch / 12, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study.optimize(objective, n_trials=20)
    assert seen[-1] < 20  # trial 19 sampled among its own bracket's trials only, not all 20


def runs_in_state(status: dict[str, str]):
    """A stand-in for tracking.get_run: each run id's run, in the state `status` gives it."""
    from types import SimpleNamespace

    return lambda run_id: SimpleNamespace(info=SimpleNamespace(status=status[run_id]))


def test_one_worker_at_a_time_retrains_the_best_trial(tmp_path, monkeypatch):
    """Two workers concluding one study at once (final=true, the default) both retrained its
    best trial: the retrain lock is taken by one; a holder that died leaves it to the next."""
    import optuna

    from pipeline import tracking
    from pipeline.study import final

    status = {"a": "RUNNING"}
    monkeypatch.setattr(tracking, "get_run", runs_in_state(status))
    storage = journal_storage(tmp_path / "j.log")
    study = optuna.create_study(study_name="s", storage=storage)
    assert final.claim(study, "a") is None  # a retrains
    assert final.claim(study, "b") == "a"  # b leaves it to a
    status["a"] = "KILLED"  # a was killed while retraining, its run closed since
    assert final.claim(study, "b") is None
    final.release(study, "b")
    assert final.claim(study, "c") is None
    final.release(study, "c")
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["s"]


def test_a_worker_that_finds_the_retrain_lock_taken_does_not_retrain(tmp_path, monkeypatch):
    """finish() itself asks for the lock: while another live worker holds it, this one
    retrains nothing and logs nothing; once it is free, it retrains and releases it."""
    import optuna

    from pipeline import cli, tracking
    from pipeline.study import final

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    monkeypatch.setattr(tracking, "get_run", runs_in_state({"other": "RUNNING"}))
    retrains = []

    def retrain_best(study, settings, parent, run_tags):
        retrains.append(run_tags["tune.worker_run_id"])
        study.set_user_attr("final_run_ids", ["r1"])
        return ["r1"]

    monkeypatch.setattr(final, "retrain_best", retrain_best)
    monkeypatch.setattr(final, "final_values", lambda ids: {})
    monkeypatch.setattr(final, "retrained", lambda study, settings: None)
    for name in ("set_tags", "log_metrics", "finish_continued"):
        monkeypatch.setattr(tracking, name, lambda *a, **k: None)
    monkeypatch.setattr(final, "log_study", lambda *a: None)
    study = optuna.create_study(
        study_name="s", storage=journal_storage(tmp_path / "j.log"), direction="maximize"
    )
    study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True), n_trials=1)
    settings = cli.parse("tune", [*TINY, "--n_trials", "1"])
    assert final.claim(study, "other") is None  # a live worker retrains it now
    assert final.finish(study, settings, "parent", {"tune.worker_run_id": "me"}) is None
    assert retrains == []
    final.release(study, "other")
    outcome = final.finish(study, settings, "parent", {"tune.worker_run_id": "me"})
    assert retrains == ["me"] and outcome["final_run_ids"] == ["r1"]
    assert final.claim(study, "next") is None  # released after the retrain


def test_the_retrain_lock_is_not_stolen_on_a_failed_request_nor_left_without_owner(
    tmp_path, monkeypatch
):
    """tracking.get_run says UserError for any failure: one failed request about a live
    holder's run handed its lock to another worker, whose lock the holder then released. A
    worker stopped between creating the lock and naming itself left a lock nobody took."""
    from types import SimpleNamespace

    import optuna

    from pipeline import tracking
    from pipeline.errors import UserError
    from pipeline.study import final

    blip = {"on": False}

    def get_run(run_id):
        if blip["on"]:
            raise UserError(f"run {run_id} does not exist in http://server")
        return SimpleNamespace(info=SimpleNamespace(status="RUNNING"))

    monkeypatch.setattr(tracking, "get_run", get_run)
    storage = journal_storage(tmp_path / "j.log")
    study = optuna.create_study(study_name="s", storage=storage)
    assert final.claim(study, "a") is None
    blip["on"] = True
    assert final.claim(study, "b") == "a"  # a, alive, keeps it
    blip["on"] = False
    final.release(study, "b")  # not b's: kept
    assert final.claim(study, "c") == "a"
    final.release(study, "a")

    def refused(*args):
        raise KeyboardInterrupt  # or a request that failed

    monkeypatch.setattr(storage, "set_study_user_attr", refused)
    with pytest.raises(KeyboardInterrupt):
        final.claim(study, "d")
    monkeypatch.undo()
    monkeypatch.setattr(tracking, "get_run", get_run)
    assert final.claim(study, "e") is None  # no lock without owner was left
    # Ray retries a killed job in the same run: it found itself the holder and never retrained
    assert final.claim(study, "e") is None


def test_a_killed_workers_trial_is_failed_and_queued_again_without_heartbeats(
    tmp_path, monkeypatch
):
    """A journal file has no heartbeats: a killed worker's trial stayed RUNNING for ever, was
    counted against n_trials, and every rerun ended at once (a surplus trial) with the study
    one trial short. Its worker's run, closed KILLED by the next step, now marks it dead."""
    import optuna

    from pipeline import tracking
    from pipeline.study import storage as study_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    status = {"dead": "KILLED", "alive": "RUNNING"}
    monkeypatch.setattr(tracking, "get_run", runs_in_state(status))
    monkeypatch.setattr(tracking, "close_run", lambda *args, **kwargs: None)
    study = optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j.log"))
    for worker in ("dead", "alive"):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.set_user_attr("mlflow_worker_run_id", worker)
    assert study_storage.fail_orphaned_trials(study) == 1
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "WAITING"]  # the dead one queued again
    assert study.trials[2].params == study.trials[0].params
    assert study_storage.fail_orphaned_trials(study) == 0


def test_the_final_seeds_of_the_largest_seed_are_valid_seeds():
    """seed=4294967295 is accepted, but its retrains' seeds were not: the study ran every
    trial, then ended with `error: seed must be ...`."""
    from pipeline import cli
    from pipeline.study import final

    settings = cli.parse("tune", [*TINY, "--seed", "4294967295", "--final_seeds", "2"])
    seeds = final.final_seeds(settings)
    assert seeds == [0, 1]
    for seed in seeds:
        settings.base.replace(seed=seed)  # valid settings


def test_a_surplus_trial_is_one_line_not_a_traceback():
    """Every parallel worker but one ends on a surplus trial, which Optuna logged as a failed
    trial with a traceback and a second line."""
    import logging

    from optuna.study._optimize import _log_failed_trial

    from pipeline.study import search

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(logging.Formatter().format(record))

    logger, quiet, keep = logging.getLogger("optuna.study._optimize"), search.QuietSurplus(), Keep()
    logger.addFilter(quiet)
    logger.addHandler(keep)
    try:
        for number, error in ((3, search.Surplus(3, 3)), (4, RuntimeError("broken"))):
            try:
                raise error
            except Exception as exc:
                _log_failed_trial(number, {}, repr(exc), exc_info=sys.exc_info())
    finally:
        logger.removeFilter(quiet)
        logger.removeHandler(keep)
    assert lines[0] == "the study already has 3 trials; trial 3 not run"
    assert "Traceback" in lines[1] and "broken" in lines[1]  # a real failure keeps it
    assert len(lines) == 3  # its "failed with value None" line stays; the surplus one went


def test_an_auto_study_name_tells_studies_of_other_settings_apart():
    """A tune with other base settings, pruner or lr range joined an earlier study of the
    same model, epochs and subset, and reported its trials as its own."""
    from pipeline import cli
    from pipeline.study import search

    def name(*argv: str) -> str:
        return search.study_name(cli.parse("tune", [*TINY, "--epochs", "1", *argv]), "ab" * 32)

    base = name()
    assert base.startswith("mlp-base-e1-s300-abababab-") and base == name()  # a rerun resumes
    others = [name("--lr", "0.01"), name("--pruner", "hyperband"), name("--lr_max", "0.1")]
    assert len({base, *others}) == 4
    assert name("--n_trials", "50", "--final", "false", "--final_epochs", "3") == base
    assert name("--seed", "7") != base  # every trial trains with the seed: another study
    assert name("--study_name", "mine") == "mine"


def test_a_study_is_joined_only_with_the_settings_that_created_it():
    from types import SimpleNamespace

    from pipeline import cli, identity
    from pipeline.errors import UserError
    from pipeline.study import search

    def decided(*argv: str) -> dict:
        return search.decided_by(cli.parse("tune", [*TINY, *argv]), "ab" * 32)

    study = SimpleNamespace(study_name="mine", user_attrs={search.SETTINGS_ATTR: decided()})
    search.check_joinable(study, decided("--n_trials", "40"))  # a raised cap: the same study
    with pytest.raises(UserError, match=r"seed=42 \(here 7\), space=base \(here wide\)"):
        search.check_joinable(study, decided("--seed", "7", "--space", "wide"))
    search.check_joinable(SimpleNamespace(study_name="old", user_attrs={}), decided())

    def base(*argv: str) -> dict:
        return identity.resolved(cli.parse("tune", [*TINY, *argv]).base)

    study.user_attrs[search.BASE_ATTR] = base()  # the base settings by name, not their hash
    with pytest.raises(UserError, match=r"settings: epochs=5 \(here 3\), lr=0.001 \(here 0.01\);"):
        search.check_joinable(
            study, decided("--epochs", "3", "--lr", "0.01"), base("--epochs", "3", "--lr", "0.01")
        )


def test_the_first_trial_is_the_base_configuration_in_every_space():
    """space=wide searches dropout, batch size and augmentation: the enqueued first trial
    takes the model's own dropout, and a base value outside the choices joins them."""
    from pipeline import cli
    from pipeline.study import space

    wide = cli.parse("tune", ["--model", "mlp", "--space", "wide"])
    first = space.defaults(wide)
    assert first == {
        "lr": 1e-3,
        "optimizer": "adam",
        "loss": "ce",
        "flip": False,
        "weight_decay": 1e-6,  # 0 clamped into the log range
        "batch_size": 128,
        "augment": "none",
        "dropout": 0.2,  # mlp's own
    }
    odd = ["--model", "cnn3", "--space", "wide", "--augment", "rotate", "--batch_size", "32"]
    odd = cli.parse("tune", odd)
    described = space.describe(odd)
    assert described["augment"]["choices"][-1] == "rotate"
    assert described["batch_size"]["choices"] == [64, 128, 256, 32]
    first = space.defaults(odd)
    assert (first["augment"], first["batch_size"], first["dropout"]) == ("rotate", 32, 0.5)
    trial = space.trial_settings(odd.base, first)
    assert trial.augment == ("rotate",) and trial.batch_size == 32


def test_main_reuses_a_tune_run_only_once_its_study_is_concluded(monkeypatch):
    from types import SimpleNamespace

    from pipeline import tracking
    from pipeline.chain import concluded

    monkeypatch.setattr(tracking, "is_active", lambda run_id: run_id != "deleted")

    def run(final: str, **tags: str):
        return SimpleNamespace(data=SimpleNamespace(params={"final": final}, tags=tags))

    assert concluded(run("true", **{"tune.complete": "true", "tune.final_run_ids": "a,b"}))
    assert concluded(run("false", **{"tune.complete": "true"}))
    assert not concluded(run("true", **{"tune.complete": "true"}))  # the retrain failed
    assert not concluded(run("false", **{"tune.complete": "false"}))  # trials left to run
    assert not concluded(run("true", **{"tune.final_run_ids": "a"}))  # an older version's
    # a retrain deleted since: the study is concluded again, which retrains it
    assert not concluded(
        run("true", **{"tune.complete": "true", "tune.final_run_ids": "a,deleted"})
    )


def test_a_deleted_retrain_is_retrained_again(monkeypatch):
    """A conclusion found the best trial "retrained already" in runs deleted since, and
    reported them: their row left the leaderboard without a word."""
    from types import SimpleNamespace

    from pipeline import cli, tracking
    from pipeline.study import final

    settings = cli.parse("tune", [*TINY, "--final_seeds", "1"])
    attrs = {"final_run_ids": ["r1"], "final_best_trial": 0}
    attrs |= {"final_epochs": settings.final_epochs, "final_seeds": final.final_seeds(settings)}
    study = SimpleNamespace(user_attrs=attrs, best_trial=SimpleNamespace(number=0))
    for stage, expected in (("active", ["r1"]), ("deleted", None)):
        info = SimpleNamespace(status="FINISHED", lifecycle_stage=stage)
        run = SimpleNamespace(info=info, data=SimpleNamespace(tags={"evaluated": "true"}))
        monkeypatch.setattr(tracking, "get_run", lambda run_id, run=run: run)
        assert final.retrained(study, settings) == expected, stage
