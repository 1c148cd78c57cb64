"""The whole pipeline as users run it: `mlflow run <repo> -P profile=tiny`, on an embedded
SQLite store and on a real `mlflow server`, plus the MLproject <-> parser contract.

The two tiny pipelines are the expensive part (about 3 minutes each on 2 CPU cores, mostly
process starts). Each runs once per session, in a background thread, side by side (each
keeps about one core busy), started as soon as the first test needs either; every test
below, and those of test_evaluate.py, only read what they left behind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, clean_env, run_step, store_env
from server import command as server_command

from pipeline import config

MLFLOW = str(Path(sys.executable).parent / "mlflow")

PIPELINE_TIMEOUT_S = 900
SERVER_START_TIMEOUT_S = 180
# The tiny profile's expected runs (profiles/tiny.toml): 2 models x 2 seeds, one study.
TINY_TRAIN_RUNS = 4
TINY_MODELS = {"mlp", "logreg"}
EVALUATION_ARTIFACTS = {
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "classification_report.json",
    "predictions.csv",
    "roc_pr_curves.png",
    "reliability_diagram.png",
    "misclassified.png",
    "sample_predictions.png",
    "most_confused_pairs.csv",
}
STEP_ARTIFACTS = {
    "main": {"config.json", "profile_tiny.toml"},
    "prepare": {"config.json", "manifest.json", "class_balance.csv", "class_balance.png"},
    "train": {"config.json", *EVALUATION_ARTIFACTS},
    "tune": {"config.json", "search_space.json", "trials.csv", "best_params.json"},
    "evaluate": {"config.json"},
    "compare": {"config.json", "leaderboard.csv", "leaderboard.md", "leaderboard.html"},
}


# --- the session's pipelines ----------------------------------------------------------------


@dataclass
class Flow:
    """One finished `mlflow run <repo> -P profile=tiny` and the store it wrote."""

    name: str
    base: Path
    env: dict[str, str]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    main_run_id: str = ""
    experiment_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def tail(self, n: int = 4000) -> str:
        return (
            f"{self.name} pipeline: rc={self.returncode} after {self.seconds:.0f} s (full output"
            f" in {self.base}/pipeline.std*)\n--- stdout\n{self.stdout[-n:]}\n--- stderr\n"
            f"{self.stderr[-n:]}"
        )

    def runs(self, filter_string: str = "") -> list:
        return self.client().search_runs(
            [self.experiment_id], filter_string, max_results=5000, order_by=["start_time ASC"]
        )

    def steps(self, step: str) -> list:
        return self.runs(f"tags.`pipeline.step` = '{step}'")

    def children(self, parent_run_id: str | None = None) -> list:
        parent = parent_run_id or self.main_run_id
        return self.runs(f"tags.`mlflow.parentRunId` = '{parent}'")

    def artifacts(self, run_id: str) -> set[str]:
        return {a.path for a in self.client().list_artifacts(run_id)}

    def download(self, run_id: str, path: str, into: Path) -> Path:
        return Path(self.client().download_artifacts(run_id, path, str(into)))


def run_main(flow: Flow, procs: list, *params: str) -> Flow:
    """`mlflow run <repo> -P profile=tiny --env-manager local`: the default entry point."""
    command = [MLFLOW, "run", str(ROOT), "-P", "profile=tiny", "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=flow.base,
        env=clean_env(flow.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: teardown can stop all its children
    )
    procs.append(proc)
    try:
        flow.stdout, flow.stderr = proc.communicate(timeout=PIPELINE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        flow.stdout, flow.stderr = proc.communicate()
    flow.returncode, flow.seconds = proc.returncode, time.monotonic() - started
    (flow.base / "pipeline.stdout").write_text(flow.stdout)  # kept for a post-mortem
    (flow.base / "pipeline.stderr").write_text(flow.stderr)
    return flow


def _kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"mlflow server not healthy in {SERVER_START_TIMEOUT_S} s:\n{log.read_text()}"
    )


class Flows:
    """The session's pipelines, each started at most once, in background threads."""

    def __init__(self, factory, data_dir: Path):
        self.factory, self.data_dir = factory, data_dir
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiny-pipeline")
        self.futures: dict[str, Future] = {}
        self.procs: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self, name: str) -> Future:
        with self.lock:
            if name not in self.futures:
                base = self.factory.mktemp(f"tiny-{name}")
                env = {**store_env(base), "FASHION_MNIST_DIR": str(self.data_dir)}
                job = {"sqlite": self._sqlite, "server": self._server, "ray": self._ray}[name]
                self.futures[name] = self.pool.submit(job, Flow(name, base, env))
            return self.futures[name]

    def _sqlite(self, flow: Flow) -> Flow:
        return self._finish(run_main(flow, self.procs))

    def _ray(self, flow: Flow) -> Flow:
        """The same pipeline with its jobs side by side on a local Ray instance."""
        return self._finish(run_main(flow, self.procs, "executor=ray", "workers=2"))

    def _server(self, flow: Flow) -> Flow:
        """`mlflow server` on a free port, its own process group, then the pipeline on it."""
        port, log = free_port(), flow.base / "server.log"
        url = f"http://127.0.0.1:{port}"
        # `make server`'s own command (tools/server.py): a SQLite store and served artifacts
        command, extra = server_command(port, flow.base, False, MLFLOW, clean_env({}))
        with log.open("w") as out:
            self.server = subprocess.Popen(
                command,
                cwd=flow.base,
                env=clean_env(extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        wait_healthy(url, self.server, log)
        flow.extra["server_start_s"] = time.monotonic() - started
        # A real server answers slower than a file: the step defaults' bounded retries.
        flow.env |= {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
        }
        return self._finish(run_main(flow, self.procs))

    @staticmethod
    def _finish(flow: Flow) -> Flow:
        if flow.returncode != 0:
            return flow
        client = flow.client()
        flow.experiment_id = client.get_experiment_by_name(config.EXPERIMENT_NAME).experiment_id
        (main,) = flow.steps("main")
        flow.main_run_id = main.info.run_id
        return flow

    def close(self) -> None:
        for proc in [*self.procs, *([self.server] if self.server else [])]:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    proc.wait()
        self.pool.shutdown(wait=True)


def start_flows(request, tmp_path_factory, real_data) -> Flows:
    """The session's Flows (the `flows` fixture in conftest.py, made once per session):
    starts every pipeline the selected tests need (fixtures tiny_sqlite, tiny_server,
    tiny_ray) at once, so that they run side by side."""
    flows = Flows(tmp_path_factory, real_data)
    request.addfinalizer(flows.close)
    needed = {n for item in request.session.items for n in getattr(item, "fixturenames", ())}
    for name in ("server", "sqlite", "ray"):  # the server first: it takes ~20 s to start
        if f"tiny_{name}" in needed:
            flows.start(name)
    return flows


def finished(flows: Flows, name: str) -> Flow:
    flow = flows.start(name).result()
    assert flow.returncode == 0, flow.tail()
    return flow


# --- the pipeline's runs --------------------------------------------------------------------


def check_parent_and_children(flow: Flow, evaluate_runs: int | None = 1) -> dict[str, list]:
    """Main run FINISHED with one child per step (train x4); returns children by step.
    evaluate_runs: how many evaluate runs main starts (None: any number)."""
    client = flow.client()
    main = client.get_run(flow.main_run_id)
    assert main.info.status == "FINISHED"
    assert main.data.tags["pipeline.step"] == "main"
    assert main.data.tags["mlflow.project.entryPoint"] == "main"
    assert main.data.params["profile"] == "tiny"
    by_step: dict[str, list] = {}
    for child in flow.children():
        by_step.setdefault(child.data.tags.get("pipeline.step"), []).append(child)
        assert child.info.status == "FINISHED", child.data.tags.get("error")
        assert child.data.tags["mlflow.project.entryPoint"] == child.data.tags["pipeline.step"]
    counts = {step: len(runs) for step, runs in by_step.items()}
    if evaluate_runs is None:
        counts.pop("evaluate")
    expected = {"prepare": 1, "train": TINY_TRAIN_RUNS, "tune": 1, "evaluate": evaluate_runs}
    assert counts == {**{k: v for k, v in expected.items() if v is not None}, "compare": 1}
    assert {r.data.tags["model"] for r in by_step["train"]} == TINY_MODELS
    assert main.data.tags["compare_run_id"] == by_step["compare"][0].info.run_id
    return by_step


@pytest.mark.realdata
@pytest.mark.slow
def test_main_is_a_parent_run_with_one_child_run_per_step(tiny_sqlite):
    by_step = check_parent_and_children(tiny_sqlite)
    # the study's trials and its retrained best are children of the tune run, not of main
    tune_id = by_step["tune"][0].info.run_id
    below_tune = {r.data.tags["pipeline.step"] for r in tiny_sqlite.children(tune_id)}
    assert below_tune == {"trial", "train"}
    assert len(tiny_sqlite.steps("trial")) == 3
    # the one evaluate run evaluated the four train runs (tune evaluated its own)
    evaluated = by_step["evaluate"][0].data.tags["evaluated_run_id"].split(",")
    assert sorted(evaluated) == sorted(r.info.run_id for r in by_step["train"])


@pytest.mark.realdata
@pytest.mark.slow
def test_main_says_how_to_open_its_studies_where_they_are(tiny_sqlite):
    """Its stores are under FMB_MLRUNS_DIR, not the Makefile's default: the printed command
    names the study's storage, so `make dashboard` does not open an empty one."""
    storage = f"sqlite:///{tiny_sqlite.base / 'mlruns' / 'optuna.db'}"
    assert f"Optuna: `make dashboard STORAGE={storage}`, then http" in tiny_sqlite.stderr


@pytest.mark.realdata
@pytest.mark.slow
def test_every_run_carries_the_contract_tags(tiny_sqlite):
    digest = tiny_sqlite.steps("prepare")[0].data.tags["dataset.digest"]
    assert len(digest) == 64
    for run in tiny_sqlite.runs():
        tags = run.data.tags
        assert tags.get("pipeline.step") in config_steps(), tags
        assert tags.get("dataset.digest") == digest, (tags["pipeline.step"], tags)
        assert tags.get("code.version"), tags["pipeline.step"]


def config_steps() -> set[str]:
    return {"prepare", "train", "trial", "tune", "evaluate", "compare", "main"}


@pytest.mark.realdata
@pytest.mark.slow
def test_each_step_logs_its_artifacts(tiny_sqlite):
    for step, expected in STEP_ARTIFACTS.items():
        runs = tiny_sqlite.steps(step)
        assert runs, step
        for run in runs:
            missing = expected - tiny_sqlite.artifacts(run.info.run_id)
            assert not missing, (step, run.info.run_id, missing)


def compare_run(flow: Flow):
    (run,) = [r for r in flow.children() if r.data.tags["pipeline.step"] == "compare"]
    return run


@pytest.mark.realdata
@pytest.mark.slow
def test_the_leaderboard_has_a_row_per_configuration(tiny_sqlite, tmp_path):
    run = compare_run(tiny_sqlite)
    table = pd.read_csv(tiny_sqlite.download(run.info.run_id, "leaderboard.csv", tmp_path))
    assert {"section", "rank", "model", "n_seeds", "test_accuracy_mean", "best_run_id"} <= set(
        table.columns
    )
    by_model = table.groupby("model")["n_seeds"].max().to_dict()
    assert set(by_model) == TINY_MODELS
    assert all(n >= 2 for n in by_model.values()), by_model
    # the tiny runs use a 300-image subset: their own section, never the main one
    assert (table["section"] == "official data, training subset 300").all()
    assert sorted(table["rank"]) == list(range(1, len(table) + 1))
    md = tiny_sqlite.download(run.info.run_id, "leaderboard.md", tmp_path).read_text()
    html = tiny_sqlite.download(run.info.run_id, "leaderboard.html", tmp_path).read_text()
    for text in (md, html):
        assert "Fashion-MNIST leaderboard" in text and "logreg" in text and "mlp" in text
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert run.data.metrics["n_ranked"] == len(table)


def expected_champion(flow: Flow) -> tuple[str, float]:
    """(run id, mean best_val_accuracy of its configuration), computed here from the store:
    the configuration with the highest mean best_val_accuracy, its best run by val."""
    rows = [
        {
            "run_id": r.info.run_id,
            "config": r.data.tags["config.key"],
            "val": r.data.metrics["best_val_accuracy"],
        }
        for r in flow.steps("train")
        if r.info.status == "FINISHED" and r.data.tags.get("evaluated") == "true"
    ]
    frame = pd.DataFrame(rows)
    means = frame.groupby("config")["val"].mean()
    best_config = means.idxmax()
    assert (means >= means.max() - 1e-12).sum() == 1, "a tie: the champion is ambiguous"
    group = frame[frame["config"] == best_config].sort_values("val", ascending=False)
    return group.iloc[0]["run_id"], float(means.max())


def check_champion(flow: Flow) -> None:
    client = flow.client()
    version = client.get_model_version_by_alias(config.REGISTERED_MODEL, config.CHAMPION_ALIAS)
    best_run_id, val_mean = expected_champion(flow)
    assert version.run_id == best_run_id
    run = compare_run(flow)
    assert run.data.tags["champion.run_id"] == best_run_id
    metrics = run.data.metrics
    assert metrics["champion_val_accuracy_mean"] == pytest.approx(val_mean, abs=1e-9)
    best = client.get_run(best_run_id)
    # champion_<metric> are the registered run's own figures, what @champion scores
    assert metrics["champion_val_accuracy"] == best.data.metrics["logged_val_accuracy"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert metrics[f"champion_test_{key}"] == best.data.metrics[f"test_{key}"]
        assert 0 < metrics[f"champion_test_{key}_mean"] <= 1
    config_runs = [
        r
        for r in flow.steps("train")
        if r.data.tags["config.key"] == best.data.tags["config.key"]
        and r.data.tags.get("evaluated") == "true"
    ]
    test_mean = np.mean([r.data.metrics["test_accuracy"] for r in config_runs])
    assert metrics["champion_test_accuracy_mean"] == pytest.approx(test_mean, abs=1e-9)


@pytest.mark.realdata
@pytest.mark.slow
def test_the_champion_alias_marks_the_best_validation_run(tiny_sqlite):
    check_champion(tiny_sqlite)


@pytest.mark.realdata
@pytest.mark.slow
def test_a_second_identical_run_reuses_every_finished_step(tiny_sqlite, tmp_path):
    counts = {step: len(tiny_sqlite.steps(step)) for step in config_steps()}
    result = subprocess.run(
        [MLFLOW, "run", str(ROOT), "-P", "profile=tiny", "--env-manager", "local"],
        cwd=tiny_sqlite.base,
        env=clean_env(tiny_sqlite.env),
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    after = {step: len(tiny_sqlite.steps(step)) for step in config_steps()}
    # nothing trained, tuned, prepared or evaluated again; a fresh main and compare run
    assert after == {**counts, "main": counts["main"] + 1, "compare": counts["compare"] + 1}
    main = [r for r in tiny_sqlite.steps("main") if r.info.run_id != tiny_sqlite.main_run_id]
    (second,) = main
    assert second.info.status == "FINISHED"
    assert second.data.metrics["steps_run"] == 1  # compare only
    assert second.data.metrics["steps_reused"] == 1 + TINY_TRAIN_RUNS + 1  # prepare, train, tune
    children = tiny_sqlite.children(second.info.run_id)
    assert [r.data.tags["pipeline.step"] for r in children] == ["compare"]
    assert second.data.tags["compare_run_id"] == children[0].info.run_id
    assert "reusing finished run" in result.stderr and "already evaluated" in result.stderr
    check_champion(tiny_sqlite)  # the same runs: the same champion


@pytest.mark.realdata
@pytest.mark.slow
def test_the_champion_served_over_http_predicts_as_in_process(tiny_sqlite, tmp_path):
    """`make serve`: MLflow's scoring server on `models:/...@champion` answers /invocations
    with the probabilities the registered model gives in process (its signature: float32
    (N, 1, 28, 28) raw pixels)."""
    import json

    import mlflow

    uri = f"models:/{config.REGISTERED_MODEL}@{config.CHAMPION_ALIAS}"
    port, log = free_port(), tmp_path / "serve.log"
    # the server starts uvicorn by name, as `make serve` allows with .venv/bin on PATH
    path = f"{Path(MLFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    argv = [MLFLOW, "models", "serve", "-m", uri, "--env-manager", "local"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv,
            env=clean_env({**tiny_sqlite.env, "PATH": path}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # uvicorn's worker goes with it
        )
    images = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28)).astype(np.float32)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.array(json.loads(response.read())["predictions"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    mlflow.set_tracking_uri(tiny_sqlite.uri)  # reset after the test (conftest)
    local = np.asarray(mlflow.pyfunc.load_model(uri).predict(images))
    assert served.shape == (6, 10) and np.allclose(served.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-6)


# --- a real tracking server -----------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.slow
def test_the_pipeline_logs_to_a_real_server(tiny_server, tmp_path):
    check_parent_and_children(tiny_server)
    check_champion(tiny_server)
    experiment = tiny_server.client().get_experiment(tiny_server.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    run = compare_run(tiny_server)
    md = tiny_server.download(run.info.run_id, "leaderboard.md", tmp_path)  # over HTTP
    text = md.read_text()
    assert text.startswith("# Fashion-MNIST leaderboard") and "logreg" in text
    # the artifacts live where the server keeps them, not in the client's folders
    served = list((tiny_server.base / "server-artifacts").rglob("leaderboard.md"))
    assert len(served) == 1 and served[0].read_text() == text
    assert not list((tiny_server.base / "mlruns").rglob("leaderboard.md"))
    assert not (tiny_server.base / "mlruns" / "mlflow.db").exists()


def test_an_unreachable_server_fails_in_seconds_naming_it(tmp_path):
    port = free_port()  # bound and released: nothing listens there
    uri = f"http://127.0.0.1:{port}"
    # without the tests' bounded-retry settings: the step must bound them itself
    env = {k: v for k, v in store_env(tmp_path).items() if not k.startswith("MLFLOW_HTTP")}
    env["MLFLOW_TRACKING_URI"] = uri
    started = time.monotonic()
    result = run_step(["compare"], env, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode != 0
    assert seconds < 30, seconds
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert uri in result.stderr and "Traceback" not in result.stderr


# --- MLproject <-> the steps' parsers -------------------------------------------------------


def mlproject_entry_points() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]


ENTRY_POINTS = sorted(mlproject_entry_points())


def test_mlproject_has_an_entry_point_per_step():
    assert set(ENTRY_POINTS) == set(config.STEPS)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_mlproject_parameter_reaches_the_steps_parser(entry):
    from pipeline import cli

    spec = mlproject_entry_points()[entry]
    params = spec.get("parameters", {})
    command = " ".join(spec["command"].split())
    for name in params:
        assert f"{{{name}}}" in command, f"{entry}: parameter {name} is not in the command"
    argv = shlex.split(command.format(**{name: p["default"] for name, p in params.items()}))
    assert argv[:4] == ["python", "-m", "pipeline", entry], argv
    try:
        settings = cli.parse(entry, argv[4:])
    except SystemExit as exc:  # the parser printed its one error line
        pytest.fail(f"{entry}: the defaults of MLproject are refused ({exc.code}): {argv[4:]}")
    assert settings == config.STEP_SETTINGS[entry]()  # the defaults are the settings' own
    assert set(params) == {leaf.name for leaf in settings.leaves()}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_steps_help_lists_its_parameters(entry):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", entry, "-h"],
        cwd=ROOT,
        env=clean_env({}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in mlproject_entry_points()[entry].get("parameters", {}):
        assert f"--{name}" in result.stdout, f"{entry} -h does not mention {name}"


# --- where the champion may come from (no store) ----------------------------------------------


def section(val: float, *, official=True, test_official=True, subset=0, main=True):
    from pipeline import leaderboard

    key = leaderboard.Section("d" if main else "e", official, subset, test_official, main)
    table = pd.DataFrame(
        {
            "rank": [1],
            "model": ["mlp"],
            "n_seeds": [2],
            "val_accuracy_mean": [val],
            "val_log_loss_mean": [0.5],
            "n_params": [100],
            "config_key": ["k"],
            "best_run_id": [f"run-{val}"],
        }
    )
    return key, table


def test_a_prepare_run_is_reused_only_for_the_folder_it_read(tmp_path, monkeypatch):
    """With source=auto, FASHION_MNIST_DIR decides what prepare reads: a run that read
    other files (an edited copy, allowed as unofficial) passed for this data."""
    from types import SimpleNamespace

    from conftest import write_dataset

    from pipeline import chain, data

    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    here, there = write_dataset(tmp_path / "here"), write_dataset(tmp_path / "there")
    digest = data.write_cache(data.load_raw(here, allow_unofficial=True), 0.1, 42)[1]["digest"]

    def run(read: Path | None, cached: str = digest):
        tags = {"dataset.digest": cached, **({"dataset.source": str(read)} if read else {})}
        return SimpleNamespace(data=SimpleNamespace(tags=tags, params={"source": "auto"}))

    monkeypatch.setenv("FASHION_MNIST_DIR", str(here))
    assert chain.prepared_usable(run(here))
    assert not chain.prepared_usable(run(there))  # other files
    assert not chain.prepared_usable(run(None))  # an older run: prepared again, cheaply
    assert not chain.prepared_usable(run(here, "0" * 64))  # its cache is gone
    monkeypatch.setenv("FASHION_MNIST_DIR", str(there))
    assert not chain.prepared_usable(run(here))


def test_the_champion_is_the_best_on_the_main_splits_validation_set():
    """The whole training split and its subsets share one validation split: the best there
    wins, whatever it trained on (a larger subset used to win with a worse score). Another
    official split (its own validation set) only when the main one has no candidate."""
    from pipeline import leaderboard

    main_key, main_table = section(0.5)
    tables = dict(
        [
            (main_key, main_table.iloc[:0]),
            section(0.99, subset=900, main=False),
            section(0.95, subset=300),
            section(0.90, subset=600),
            section(0.999, test_official=False),
            section(0.999, official=False, main=False),
        ]
    )
    found, best = leaderboard.pick_champion(tables)
    assert found.name == "official data, training subset 300" and best["best_run_id"] == "run-0.95"
    tables[main_key] = main_table  # 0.5: worse on validation than the subset runs
    assert leaderboard.pick_champion(tables)[1]["best_run_id"] == "run-0.95"
    tables[main_key] = section(0.97)[1]
    assert leaderboard.pick_champion(tables)[0].main
    only_other = {k: v for k, v in tables.items() if not k.main_digest}
    assert leaderboard.pick_champion(only_other)[1]["best_run_id"] == "run-0.99"
    unofficial = {k: v for k, v in tables.items() if not (k.official and k.test_official)}
    assert leaderboard.pick_champion({main_key: main_table.iloc[:0], **unofficial}) == (None, None)
