"""`main` on Ray (executor=ray): the same runs as one job at a time, side by side; a job
killed mid-run is retried from its checkpoint; bad input is one line before any run.

Runs on a local Ray instance (the `ray` extra, installed by `make test`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import test_pipeline as tp
from conftest import REAL_DATA, ROOT, clean_env, run_step, store_client

from pipeline import config

pytestmark = pytest.mark.slow


def train_runs(flow) -> set[tuple]:
    return {
        (r.data.tags["model"], r.data.params["seed"], r.data.tags["config.key"], r.info.status)
        for r in flow.steps("train")
        if r.data.tags.get("tune.tuned") != "true"
    }


def leaderboard(flow, tmp_path: Path) -> set[tuple]:
    compare = [r for r in flow.children() if r.data.tags["pipeline.step"] == "compare"][-1]
    table = pd.read_csv(flow.download(compare.info.run_id, "leaderboard.csv", tmp_path))
    return set(zip(table["section"], table["config_key"], table["n_seeds"], strict=True))


@pytest.mark.realdata
def test_ray_gives_the_same_runs_as_one_job_at_a_time_side_by_side(tiny_sqlite, tiny_ray, tmp_path):
    assert train_runs(tiny_ray) == train_runs(tiny_sqlite)
    assert leaderboard(tiny_ray, tmp_path / "ray") == leaderboard(tiny_sqlite, tmp_path / "local")
    tp.check_parent_and_children(tiny_ray, evaluate_runs=None)
    spans = sorted((r.info.start_time, r.info.end_time) for r in tiny_ray.steps("train"))
    overlaps = [a for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert overlaps, f"no two train runs ran side by side: {spans}"
    main = tiny_ray.client().get_run(tiny_ray.main_run_id)
    assert main.data.params["executor"] == "ray" and main.data.params["workers"] == "2"


KILLABLE = """description = "two slow train jobs"
[prepare]
split_seed = 42
[[train]]
model = "mlp"
subset = 6000
epochs = 5
patience = 5
batch_size = 32
seeds = [1, 2]
"""


@pytest.mark.realdata
def test_a_job_killed_mid_run_is_retried_from_its_checkpoint(real_prepared, stores, tmp_path):

    env = {**stores, "FMB_DATA_DIR": str(real_prepared), "FASHION_MNIST_DIR": str(REAL_DATA)}
    (tmp_path / "killable.toml").write_text(KILLABLE)
    args = ["main", "--profile", str(tmp_path / "killable.toml"), "--executor", "ray"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args, "--workers", "2"],
        cwd=ROOT, env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    client = store_client(env["MLFLOW_TRACKING_URI"])
    victim, deadline = None, time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        experiment = client.get_experiment_by_name(config.EXPERIMENT_NAME)
        for run in (
            client.search_runs([experiment.experiment_id], "tags.`pipeline.step` = 'train'")
            if experiment
            else []
        ):
            if client.get_metric_history(run.info.run_id, "val_accuracy") and run.data.tags.get(
                "process.pid"
            ):
                victim = run
        time.sleep(0.2)
    assert victim is not None, "no train run logged an epoch in time"
    os.kill(int(victim.data.tags["process.pid"]), signal.SIGKILL)  # the job's own process
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    run = client.get_run(victim.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["evaluated"] == "true"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
    assert steps == [1, 2, 3, 4, 5], "the retry did not continue the same run exactly once"
    experiment = client.get_experiment_by_name(config.EXPERIMENT_NAME).experiment_id
    assert len(client.search_runs([experiment], "tags.`pipeline.step` = 'train'")) == 2
    running = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert not running, [r.info.run_name for r in running]


@pytest.mark.realdata
def test_sigterm_on_ray_ends_main_and_its_jobs_killed(real_prepared, stores, tmp_path):
    """Ray's own SIGTERM handler (a stack dump, then abort) made this exit 134 with the main
    run FAILED and its jobs' runs left RUNNING."""
    from test_reliability import no_run_left_running, runs, start, wait_for_epoch

    env = {**stores, "FMB_DATA_DIR": str(real_prepared), "FASHION_MNIST_DIR": str(REAL_DATA)}
    (tmp_path / "killable.toml").write_text(KILLABLE)
    args = ["main", "--profile", str(tmp_path / "killable.toml"), "--executor", "ray"]
    proc = start([*args, "--workers", "2"], env)
    wait_for_epoch(env, "train", 1, proc, timeout=300)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "SIGTERM received" not in stderr, stderr[-3000:]
    statuses = {r.info.run_name: r.info.status for r in runs(env)}
    assert statuses["main killable"] == "KILLED", statuses
    trains = [status for name, status in statuses.items() if name.startswith("train mlp")]
    assert trains and set(trains) == {"KILLED"}, statuses
    no_run_left_running(env)


def test_executor_ray_without_ray_is_one_line(stores, tmp_path):
    fake = tmp_path / "no-ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**stores, "PYTHONPATH": str(fake.parent)}
    result = run_step(["main", "--profile", "tiny", "--executor", "ray"], env, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: executor=ray needs Ray")
    assert not (Path(stores["FMB_MLRUNS_DIR"]) / "mlflow.db").exists()  # before any run


def test_an_unreachable_ray_address_is_one_line(stores):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**stores, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    started = time.monotonic()
    result = run_step(["main", "--profile", "tiny", "--executor", "ray"], env, timeout=120)
    assert result.returncode != 0 and time.monotonic() - started < 60
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error: the Ray cluster at RAY_ADDRESS=127.0.0.1")
        and "Traceback" not in result.stderr
    )


def test_workers_without_ray_is_refused(stores):
    result = run_step(["main", "--profile", "tiny", "--workers", "2"], stores, timeout=60)
    assert result.returncode != 0 and "workers applies to executor=ray" in result.stderr


def test_a_step_that_refuses_its_input_is_not_retried_by_ray(monkeypatch):
    """A refused setting, device or data (exit 2, one `error:` line) refuses again on every
    retry: Ray ran it three times (1 + MAX_RETRIES) before main reported it. A crash or a
    kill is still retried."""
    from pipeline import executors

    def exiting(code, line):
        def run(argv, **kwargs):
            return subprocess.CompletedProcess(argv, code, "", f"progress\n{line}\n")

        return run

    monkeypatch.setattr(executors.subprocess, "run", exiting(2, "error: device=cuda but no"))
    with pytest.raises(executors.JobRefused, match="^error: device=cuda but no$"):
        executors.run_job("evaluate", {"run_id": "x"}, "0" * 32, "1" * 32)
    monkeypatch.setattr(executors.subprocess, "run", exiting(-9, "Killed"))
    with pytest.raises(executors.JobFailed):
        executors.run_job("evaluate", {"run_id": "x"}, "0" * 32, "1" * 32)
    ray = object.__new__(executors.Ray)  # options() without starting Ray
    ray.env, ray.gpus = {}, 0.0
    options = ray.options(executors.Launch("train", {}, torch=True))
    assert options["retry_exceptions"] == [executors.JobFailed]
    assert options["max_retries"] == executors.MAX_RETRIES


def test_a_tracking_server_that_does_not_answer_is_retried_by_ray(stores, monkeypatch):
    """Every UserError exited 2, an unreachable or stopped server too: run_job called it
    refused and Ray never retried it (nor resumed a train run from its checkpoint once the
    server was back). It exits 3 and stays a JobFailed."""
    from pipeline import executors

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{tp.free_port()}")  # none there
    with pytest.raises(executors.JobFailed, match="is unreachable"):
        executors.run_job("evaluate", {"run_id": "0" * 32}, "0" * 32, "1" * 32)


def test_the_reason_of_a_failed_ray_job_is_the_steps_own_line():
    from pipeline import executors

    class TaskError(Exception):  # as ray.exceptions.RayTaskError: the task's exception
        cause = executors.JobRefused("error: device=cuda but no CUDA GPU is visible")

    assert executors.reason(TaskError("Traceback ...\n...")) == (
        "device=cuda but no CUDA GPU is visible"
    )


def test_ray_jobs_get_the_tracking_token(stores, monkeypatch):
    """On a cluster a task sees only what runtime_env sends: a server behind a token (or a
    private CA) answered the jobs 401 (or a TLS error) while main itself got in."""
    from pipeline import executors

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", "/etc/ca.pem")
    env = executors.job_env()
    assert env["MLFLOW_TRACKING_TOKEN"] == "t0ken"
    assert env["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/etc/ca.pem"


def test_a_queued_ray_run_refused_by_its_step_says_so(stores):
    """The run main makes for a Ray task has its step tag already, so a step that refused
    its input left it named `train (queued)` with no reason of its own."""
    from pipeline import tracking

    tracking.apply_defaults()
    client = store_client(stores["MLFLOW_TRACKING_URI"])
    experiment = tracking.ensure_experiment()
    parent = client.create_run(experiment, run_name="main", tags={"pipeline.step": "main"})
    given = {"model": "mlp", "epochs": "-1", "seed": "3"}
    queued = tracking.project_child_run(parent.info.run_id, "train", given)
    args = [f"--{k}={v}" for k, v in given.items()]
    result = run_step(["train", *args], {**stores, "MLFLOW_RUN_ID": queued})
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error:")
    run = client.get_run(queued)
    assert run.info.run_name == "train (refused)" and "epochs" in run.data.tags["error"]
    # what it was given, as `mlflow run` logs its -P values: the leaderboard's "not
    # ranked" row names the model and seed
    assert run.data.params == given


def test_a_ctrl_c_between_two_submissions_leaves_no_run_running(stores, monkeypatch):
    """Ray.map registered a round's tasks as pending only once the round was submitted: a
    Ctrl-C while the next job's run was being made left the runs of the jobs submitted
    before it RUNNING (close() neither cancelled them nor ended their runs)."""
    from pipeline import executors, tracking

    tracking.apply_defaults()
    experiment = tracking.ensure_experiment()
    client = store_client(stores["MLFLOW_TRACKING_URI"])
    main = client.create_run(experiment, run_name="main", tags={"pipeline.step": "main"})
    made = []

    def interrupted_at_the_second(parent, entry, params):
        if made:
            raise KeyboardInterrupt
        made.append(real(parent, entry, params))
        return made[-1]

    real = tracking.project_child_run
    monkeypatch.setattr(tracking, "project_child_run", interrupted_at_the_second)
    ray = executors.Ray(config.MainSettings.from_params({"executor": "ray", "workers": "2"}))
    try:
        ray.bind(experiment, main.info.run_id)
        with pytest.raises(KeyboardInterrupt):
            ray.map([executors.Launch("compare", {}), executors.Launch("compare", {})])
    finally:
        ray.close()
    assert client.get_run(made[0]).info.status == "KILLED"


def test_a_sigterm_while_ray_starts_is_an_interrupt(monkeypatch):
    """ray.init puts its own SIGTERM handler (sys.exit(15)) in place while it starts the
    local instance: a SIGTERM then ended main with exit 15 and no word, not 130."""
    import types

    from pipeline import executors

    def init(**kwargs):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(KeyboardInterrupt):
        executors.connect(0)


@pytest.mark.parametrize("workers_ran", [False, True])
def test_a_rerun_reuses_the_retrain_job_of_a_complete_parallel_study(monkeypatch, workers_ran):
    """On Ray with a PostgreSQL study, main ran the study's retrain job with reuse=False: every
    rerun of an unchanged profile started another tune run (which found the retrain done).
    It is reused while every worker was reused; a worker that ran now retrains again."""
    from types import SimpleNamespace

    from pipeline import chain, executors, profiles

    settings = config.TuneSettings.from_params(
        {"model": "mlp", "storage": "postgresql+psycopg://u@127.0.0.1/optuna"}
    )
    job = profiles.Job("tune", settings, ("model", "storage"))
    ray = object.__new__(executors.Ray)  # no Ray started: only its class and workers count
    ray.workers = 2
    calls = []

    class Recorded(chain.Chain):
        def run_all(self, jobs, reuse=True, usable=None):
            calls.append((len(jobs), reuse))
            if len(jobs) > 1 and workers_ran:
                self.ran += len(jobs)
            return [f"run{i}" for i in range(len(jobs))]

    tags = {"tune.final_run_ids": "retrained"}
    monkeypatch.setattr(
        chain.tracking, "get_run", lambda _: SimpleNamespace(data=SimpleNamespace(tags=tags))
    )
    steps = Recorded(config.MainSettings(), "1", "code", ray)
    assert chain.tune_all(steps, [job]) == ["retrained"]
    assert calls == [(2, True), (1, workers_ran is False)]


def test_the_workers_of_a_study_reusing_one_run_count_it_once(monkeypatch):
    """Both workers of a parallel study are the same job: on a rerun each found the same
    finished tune run, and steps_reused counted (and the log announced) it twice."""
    from pipeline import chain, profiles

    settings = config.TuneSettings.from_params({"model": "mlp"})
    job = profiles.Job("tune", settings, ("model",))
    monkeypatch.setattr(chain.tracking, "finished_step_run", lambda *a, **k: "tune-run")
    said = []
    monkeypatch.setattr(chain, "say", said.append)
    steps = chain.Chain(config.MainSettings(), "1", "code", executor=None)
    assert steps.run_all([job, job]) == ["tune-run", "tune-run"]
    assert steps.reused == {"tune-run"} and len(said) == 1, said
