"""Faults, hostile input and a shared tracking server (RELIABILITY.md lists each scenario,
what the project promises and which test below shows it).

The promise: a run is FINISHED, FAILED or KILLED, never left RUNNING; nothing already
written is lost or left half-written; bad input is one clear line before work starts.
Run them alone with `pytest -m reliability`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REAL_DATA,
    ROOT,
    clean_env,
    mlflow_run,
    run_step,
    store_client,
    store_env,
)

from pipeline import config, data

pytestmark = pytest.mark.reliability
MLP = ["--model", "mlp", "--batch_size", "64"]
TIMING = {"epoch_time_s", "train_images_per_s", "train_time_s", "compile_time_s", "warmup_time_s"}


# --- helpers ---------------------------------------------------------------------------------


def client(env):
    return store_client(env["MLFLOW_TRACKING_URI"])


def runs(env, filter_string: str = "") -> list:
    c = client(env)
    experiment = c.get_experiment_by_name(config.EXPERIMENT_NAME)
    if experiment is None:
        return []
    return c.search_runs([experiment.experiment_id], filter_string, max_results=1000)


def no_run_left_running(env) -> None:
    left = [(r.info.run_name, r.info.status) for r in runs(env) if r.info.status == "RUNNING"]
    assert not left, left


def one_error_line(result, *words: str) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def start(args: list[str], env, **kwargs) -> subprocess.Popen:
    """`python -m pipeline ...` in its own process group (a terminal's job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def wait_for_epoch(env, step: str, epoch: int, proc, timeout: float = 240, exclude=()):
    """The first run of `step` (not in `exclude`) once it has logged `epoch` (polled)."""
    deadline = time.monotonic() + timeout
    checkpoints = Path(env["FMB_MLRUNS_DIR"]) / "checkpoints"
    # A train run checkpoints each epoch before logging it: until a checkpoint exists, leave
    # the store alone (a new SQLite store being created by a pipeline races a reader).
    while step == "train" and not list(checkpoints.glob("*.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for run in runs(env, f"tags.`pipeline.step` = '{step}'"):
            if run.info.run_id in exclude:
                continue
            history = client(env).get_metric_history(run.info.run_id, "val_accuracy")
            if any(m.step >= epoch for m in history):
                return run
        time.sleep(0.2)
    raise AssertionError(f"no {step} run reached epoch {epoch} in {timeout} s")


def histories(env, run_id: str) -> dict[str, list[tuple[int, float]]]:
    c = client(env)
    # system/ metrics are samples of the machine every 10 s, not results of the training
    keys = {k for k in c.get_run(run_id).data.metrics if not k.startswith("system/")} - TIMING
    return {k: sorted((m.step, m.value) for m in c.get_metric_history(run_id, k)) for k in keys}


def predictions(env, run_id: str, images: np.ndarray) -> np.ndarray:
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        model = mlflow.pyfunc.load_model(client(env).get_run(run_id).data.tags["model.uri"])
        return np.asarray(model.predict(images.astype(np.float32)))
    finally:
        mlflow.set_tracking_uri(None)


def descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def gone(processes: list, timeout: float = 30) -> bool:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def real_env(real_prepared, stores, monkeypatch) -> dict:
    """A store of this test's own, on the real data prepared once per session (also applied
    to this process, which reads the checkpoints and caches the steps write)."""
    monkeypatch.setenv("FMB_DATA_DIR", str(real_prepared))
    return {**stores, "FMB_DATA_DIR": str(real_prepared), "FASHION_MNIST_DIR": str(REAL_DATA)}


# --- 1. SIGKILL mid-epoch, then resume ---------------------------------------------------------


DETERMINISTIC = [*MLP, "--subset", "6000", "--epochs", "4", "--patience", "4", "--seed", "3"]
DETERMINISTIC += ["--deterministic", "true"]


@pytest.mark.realdata
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(
    real_env, real_prepared, tmp_path
):
    whole = run_step(["train", *DETERMINISTIC], real_env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    whole_id = json.loads(whole.stdout.strip().splitlines()[-1])["run_id"]
    proc = start(["train", *DETERMINISTIC], real_env)
    killed = wait_for_epoch(real_env, "train", 1, proc, exclude={whole_id})
    os.killpg(proc.pid, signal.SIGKILL)  # mid-epoch 2; no handler runs: the run stays RUNNING
    proc.communicate()
    killed_id = killed.info.run_id
    assert client(real_env).get_run(killed_id).info.status == "RUNNING"
    checkpoint = config.checkpoint_path(killed_id)
    whole_checkpoint = checkpoint.read_bytes()
    checkpoint.write_bytes(whole_checkpoint[: len(whole_checkpoint) // 2])  # a damaged copy
    one_error_line(run_step(["train", "--resume", killed_id], real_env), "checkpoint", "damaged")
    assert client(real_env).get_run(killed_id).info.status == "RUNNING"  # not reopened
    checkpoint.write_bytes(whole_checkpoint)
    cut_short = checkpoint.with_name(f".{checkpoint.name}.99999.tmp")  # a write a kill cut short
    cut_short.write_bytes(whole_checkpoint[:100])
    # a setting that differs from the run's own would be dropped: refused, the run untouched
    refused = run_step(["train", "--resume", killed_id, "--epochs", "9"], real_env)
    one_error_line(refused, f"resume continues run {killed_id}", "drop epochs")
    assert client(real_env).get_run(killed_id).info.status == "RUNNING"
    resumed = run_step(["train", "--resume", killed_id], real_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"KILLED: {killed_id}" in resumed.stderr  # the dead process's run was closed first
    finished = client(real_env).get_run(killed_id)
    assert finished.info.status == "FINISHED" and not cut_short.exists()
    # the kill's error is history once the run goes on: a FINISHED run showed it as its error
    assert "error" not in finished.data.tags and "killed?" in finished.data.tags["previous_error"]
    assert histories(real_env, killed_id) == histories(real_env, whole_id)
    # it resumed on the data it started on, named by digest, not prepared again as "auto"
    saved = client(real_env).download_artifacts(killed_id, "config.json", str(tmp_path))
    digest = client(real_env).get_run(killed_id).data.tags["dataset.digest"]
    assert json.loads(Path(saved).read_text())["dataset"] == digest
    val = data.load_split(data.find_cache(), "val").images[:500]
    assert np.array_equal(
        predictions(real_env, killed_id, val), predictions(real_env, whole_id, val)
    )
    before = histories(real_env, killed_id)
    again = run_step(["train", "--resume", killed_id], real_env)  # FINISHED: nothing to do
    assert again.returncode == 0 and "nothing to do" in again.stderr
    changed = run_step(["train", "--resume", killed_id, "--epochs", "9"], real_env)
    one_error_line(changed, "drop epochs")  # not dropped without a word, as it was
    assert histories(real_env, killed_id) == before and len(runs(real_env)) == 2
    assert not config.checkpoint_path(killed_id).exists()
    no_run_left_running(real_env)


def profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(f'description = "a test profile"\n[prepare]\nsplit_seed = 42\n{body}')
    return path


SLOW_TRAIN = """
[[train]]
model = "mlp"
subset = 6000
epochs = 6
patience = 6
batch_size = 32
deterministic = true
"""


@pytest.mark.realdata
@pytest.mark.slow
def test_main_killed_mid_epoch_resumes_its_train_run_when_run_again(real_env, tmp_path):
    args = ["main", "--profile", str(profile(tmp_path, SLOW_TRAIN))]
    proc = start(args, real_env)
    run = wait_for_epoch(real_env, "train", 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # main, its `mlflow run` child and the train step
    proc.communicate()
    again = run_step(args, real_env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming run {run.info.run_id}" in again.stderr
    trained = client(real_env).get_run(run.info.run_id)
    assert trained.info.status == "FINISHED" and trained.data.tags["evaluated"] == "true"
    steps = [m.step for m in client(real_env).get_metric_history(run.info.run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, 7)), "an epoch logged twice or missing"
    assert len(runs(real_env, "tags.`pipeline.step` = 'train'")) == 1
    statuses = {r.info.status for r in runs(real_env, "tags.`pipeline.step` = 'main'")}
    assert statuses == {"KILLED", "FINISHED"}
    no_run_left_running(real_env)


# --- 2. a crash inside a checkpoint write ----------------------------------------------------


def test_a_crash_between_write_and_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import torch

    from pipeline import engine

    path = tmp_path / "ckpt.pt"
    engine.atomic_torch_save({"epoch": torch.tensor(1)}, path)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        engine.atomic_torch_save({"epoch": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["epoch"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"], "a temporary file was left"


# --- 3. SIGINT and SIGTERM ---------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_train_ends_its_run_killed(sig, real_env):
    proc = start(
        ["train", *MLP, "--subset", "6000", "--epochs", "30", "--patience", "30"], real_env
    )
    run = wait_for_epoch(real_env, "train", 1, proc)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=120) != 0
    assert client(real_env).get_run(run.info.run_id).info.status == "KILLED"
    assert config.checkpoint_path(run.info.run_id).is_file()  # resumable
    no_run_left_running(real_env)


@pytest.mark.realdata
def test_sigterm_during_tune_fails_the_trial_and_kills_the_runs(real_env):
    import optuna

    args = ["tune", *MLP, "--subset", "6000", "--epochs", "30", "--n_trials", "2"]
    proc = start([*args, "--pruner", "none", "--study_name", "sigterm"], real_env)
    trial_run = wait_for_epoch(real_env, "trial", 1, proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    storage = f"sqlite:///{real_env['FMB_MLRUNS_DIR']}/optuna.db"
    trials = optuna.load_study(study_name="sigterm", storage=storage).trials
    # the stopped trial is queued again with its parameters, for the same command to run
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0
    assert client(real_env).get_run(trial_run.info.run_id).info.status == "KILLED"
    (tune_run,) = runs(real_env, "tags.`pipeline.step` = 'tune'")
    assert tune_run.info.status == "KILLED"
    no_run_left_running(real_env)


@pytest.mark.realdata
def test_sigterm_during_evaluate_kills_its_run(real_env):
    trained = run_step(["train", *MLP, "--subset", "500", "--epochs", "1"], real_env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    proc = start(["evaluate", "--run_id", run_id, "--tta", "flip"], real_env)
    deadline = time.monotonic() + 120
    while not runs(real_env, "tags.`pipeline.step` = 'evaluate'"):  # the evaluate run began
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=120)
    (evaluated,) = runs(real_env, "tags.`pipeline.step` = 'evaluate'")
    # the signal lands well inside the evaluation (about 7 s of predicting, scoring and
    # plotting after its run begins, on 2 cores): killed, never finished
    why = (evaluated.data.tags.get("error"), proc.stderr.read()[-3000:])
    assert (evaluated.info.status, code) == ("KILLED", 130), why
    assert client(real_env).get_run(run_id).data.tags.get("evaluated") != "true"
    no_run_left_running(real_env)


@pytest.mark.realdata
@pytest.mark.slow
def test_sigterm_during_main_leaves_no_process_and_no_running_run(real_env, tmp_path):
    proc = start(["main", "--profile", str(profile(tmp_path, SLOW_TRAIN))], real_env)
    wait_for_epoch(real_env, "train", 1, proc)
    children = descendants(proc.pid)
    assert children, "main started no child process"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=180) != 0
    assert gone(children), "a child process outlived main"
    statuses = {r.data.tags["pipeline.step"]: r.info.status for r in runs(real_env)}
    assert statuses["main"] == "KILLED" and statuses["train"] == "KILLED", statuses
    no_run_left_running(real_env)


# --- 5. two pipelines on one embedded store ----------------------------------------------------


QUICK = """
[[train]]
model = "logreg"
subset = 300
"""


@pytest.mark.realdata
@pytest.mark.slow
def test_two_pipelines_at_once_on_one_sqlite_store(real_data, stores, tmp_path):
    env = {**stores, "FASHION_MNIST_DIR": str(real_data)}  # prepared by the pipelines, at once
    args = ["main", "--profile", str(profile(tmp_path, QUICK))]
    first, second = start(args, env), start(args, env)
    results = [(p.wait(timeout=900), *p.communicate()) for p in (first, second)]
    for code, _, stderr in results:
        assert "database is locked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
        if code != 0:
            assert stderr.strip().splitlines()[-1].startswith("error: store busy"), stderr[-2000:]
    assert any(code == 0 for code, _, _ in results)
    no_run_left_running(env)
    caches = [p for p in (Path(env["FMB_DATA_DIR"]) / "prepared").iterdir()]
    assert len(caches) == 1 and data.intact(caches[0], data.read_manifest(caches[0]))
    train = runs(env, "tags.`pipeline.step` = 'train'")
    assert len(train) == 1 and train[0].info.status == "FINISHED"


# --- 6. corrupt data ---------------------------------------------------------------------------


def official_copy(directory: Path) -> Path:
    """The real files, the labels decoded so that they can be damaged (images linked)."""
    directory.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (directory / name).symlink_to(REAL_DATA / name)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (directory / name).write_bytes(gzip.decompress((REAL_DATA / f"{name}.gz").read_bytes()))
    return directory


def damage(path: Path, how: str) -> None:
    payload = bytearray(path.read_bytes())
    if how == "flipped byte":
        payload[len(payload) // 2] ^= 0xFF
    elif how == "label of 10":
        payload[8 + 5] = 10  # after the 8-byte IDX header
    elif how == "wrong magic":
        payload[3] = 3
    if how == "missing file":
        path.unlink()
    else:
        path.write_bytes(bytes(payload))


DAMAGE = ["flipped byte", "label of 10", "wrong magic", "missing file"]


@pytest.mark.realdata
@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_official_files_stop_prepare_and_train_naming_the_file(how, stores, tmp_path):
    source = official_copy(tmp_path / "files")
    damage(source / "train-labels-idx1-ubyte", how)
    env = {**stores, "FASHION_MNIST_DIR": str(source)}
    one_error_line(run_step(["prepare"], env), "train-labels-idx1-ubyte")
    one_error_line(run_step(["train", *MLP, "--epochs", "1"], env), "train-labels-idx1-ubyte")
    assert not (tmp_path / "data" / "prepared").exists() or not list(
        (tmp_path / "data" / "prepared").iterdir()
    )
    assert not runs(env, "tags.`pipeline.step` = 'train'")  # refused before a run started


@pytest.mark.realdata
def test_a_good_cache_outlives_damaged_official_files_and_a_damaged_cache_is_named(
    stores, tmp_path
):
    source = official_copy(tmp_path / "files")
    env = {**stores, "FASHION_MNIST_DIR": str(source)}
    assert run_step(["prepare"], env).returncode == 0
    damage(source / "train-labels-idx1-ubyte", "flipped byte")
    damage(source / "t10k-labels-idx1-ubyte", "label of 10")
    trained = run_step(["train", *MLP, "--subset", "300", "--epochs", "1"], env)
    assert trained.returncode == 0, trained.stderr[-3000:]  # the cache is still good
    run_id = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    assert run_step(["evaluate", "--run_id", run_id], env).returncode == 0
    (cache,) = (tmp_path / "data" / "prepared").iterdir()
    for name, step in (
        ("split.npz", ["train", *MLP, "--epochs", "1"]),
        ("test.npz", ["evaluate", "--run_id", run_id]),
    ):
        original = (cache / name).read_bytes()
        damage(cache / name, "flipped byte")
        one_error_line(run_step(step, env), name)
        (cache / name).write_bytes(original)
    assert len(runs(env, "tags.`pipeline.step` = 'train'")) == 1
    assert len(runs(env, "tags.`pipeline.step` = 'evaluate'")) == 1


# --- 7. bad parameters through `mlflow run` ------------------------------------------------------


BAD_VIA_MLFLOW = {
    "prepare": {"val_fraction": "nan"},
    "train": {"augment": "rotate,,zoom"},
    "tune": {"n_trials": "0"},
    "evaluate": {"run_id": "not-a-run-id"},
    "compare": {"metric": "test_nonsense"},
    "main": {"profile": "no-such-profile"},
}


@pytest.mark.parametrize("step", sorted(BAD_VIA_MLFLOW))
def test_bad_parameters_through_mlflow_run_are_one_line(step, stores, tmp_path):
    params = BAD_VIA_MLFLOW[step]
    result = mlflow_run(step, params, stores, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and next(iter(params)) in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (run,) = runs(stores)  # the run `mlflow run` made: FAILED, nothing logged into it
    assert run.info.status == "FAILED" and not run.data.metrics
    # but it says why, and which step it was (compare's "Not ranked" table reads both)
    assert run.data.tags["pipeline.step"] == step
    assert errors[0].removeprefix("error: ") == run.data.tags["error"]
    assert run.info.run_name == f"{step} (refused)"  # not MLflow's adjective-animal-123


BAD_VALUES = [
    ("train", ["--epochs", "-1"], "epochs"),
    ("train", ["--lr", "0"], "lr"),
    ("train", ["--lr", "inf"], "lr"),
    ("train", ["--batch_size", "1.5"], "batch_size"),
    ("train", ["--subset", "many"], "subset"),
    ("train", ["--momentum", "0.9"], "momentum"),
    ("train", ["--resume", "12345"], "resume"),
    ("train", ["--model", "logreg", "--dropout", "0.5"], "takes no dropout"),
    ("train", ["--subset", "5"], "subset"),
    ("tune", ["--timeout", "-5"], "timeout"),
    ("tune", ["--lr_min", "nan"], "lr_min"),
    ("evaluate", ["--run_id", "abc,,def"], "run_id"),
    ("prepare", ["--val_fraction", "1"], "val_fraction"),
    ("main", ["--env_manager", "docker"], "env_manager"),
    ("train", ["--epoch", "2"], "--epoch"),  # no abbreviations: MLflow would log `epoch`
    ("train", ["--seed", "4294967296"], "seed"),
    ("prepare", ["--split_seed", "4294967296"], "split_seed"),
    ("tune", ["--sampler_seed", "-1"], "sampler_seed"),
    ("train", ["--model", "logreg", "--device", "cuda"], "takes no device"),
    # argparse keeps the last value: `mlflow run -P batch-size=64` appends `--batch-size 64`
    # to the MLproject's `--batch_size 128`, trained 64 and logged batch_size=128
    ("train", ["--batch_size", "128", "--batch-size", "64"], "batch_size given twice"),
    ("train", ["--epochs", "1", "--epochs", "3"], "epochs given twice"),
]


@pytest.mark.parametrize(
    "step, args, word", BAD_VALUES, ids=[f"{s} {' '.join(a)}" for s, a, _ in BAD_VALUES]
)
def test_bad_values_are_one_line_before_any_run(step, args, word, stores):
    one_error_line(run_step([step, *args], stores, timeout=60), word)
    assert not runs(stores)


def test_a_mistyped_store_is_one_line(stores, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for extra, word in [
        ({"MLFLOW_TRACKING_URI": "bogus://x"}, "is not a store MLflow knows"),
        ({"MLFLOW_TRACKING_URI": str(tmp_path / "folder")}, "MLFLOW_ALLOW_FILE_STORE"),
        (
            {"FMB_MLRUNS_DIR": str(afile), "MLFLOW_TRACKING_URI": f"sqlite:///{afile}/m.db"},
            "folders",
        ),
    ]:
        one_error_line(run_step(["compare"], {**stores, **extra}, timeout=60), word)
    one_error_line(
        run_step(["prepare"], {**stores, "FMB_DATA_DIR": str(afile)}), "must name folders"
    )


@pytest.mark.realdata
def test_a_run_of_another_step_is_refused_by_resume_and_evaluate(real_env):
    prepared = run_step(["prepare"], real_env)
    run_id = json.loads(prepared.stdout.strip().splitlines()[-1])["run_id"]
    one_error_line(run_step(["train", "--resume", run_id], real_env), "not a train run")
    one_error_line(run_step(["evaluate", "--run_id", run_id], real_env), "not a train run")
    assert len(runs(real_env)) == 1
    client(real_env).delete_run(run_id)  # MLflow refused writes to it only after the work
    one_error_line(run_step(["train", "--resume", run_id], real_env), "is deleted")
    one_error_line(run_step(["evaluate", "--run_id", run_id], real_env), "is deleted")


def test_a_run_whose_process_is_alive_is_not_resumed_by_another(tmp_path):
    from types import SimpleNamespace

    from pipeline.tracking import live_owner
    from pipeline.tracking.runs import HOST, PID

    def run(status: str, pid: int):
        tags = {HOST: socket.gethostname(), PID: str(pid)}
        return SimpleNamespace(info=SimpleNamespace(status=status), data=SimpleNamespace(tags=tags))

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert live_owner(run("RUNNING", sleeper.pid)) == (
            f"process {sleeper.pid} on {socket.gethostname()}"
        )
        assert live_owner(run("KILLED", sleeper.pid)) is None
        assert live_owner(run("RUNNING", os.getpid())) is None  # resuming itself
    finally:
        sleeper.kill()
        sleeper.wait()
    assert live_owner(run("RUNNING", sleeper.pid)) is None  # its process is gone


# --- 8. a tracking server that is down, or goes down ------------------------------------------


def start_server(base: Path, port: int, auth: bool = False, env_extra: dict | None = None):
    import server

    mlflow = str(Path(sys.executable).parent / "mlflow")
    env = clean_env(env_extra or {})
    argv, extra = server.command(port, base, auth, mlflow, env)
    with open(base / f"server-{port}.log", "a") as log:  # the child keeps its own handle
        proc = subprocess.Popen(
            argv,
            env={**env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, (base / f"server-{port}.log").read_text()[-3000:]
        with contextlib.suppress(OSError):
            import urllib.request

            urllib.request.urlopen(f"{url}/health", timeout=2).read()
            return proc, url
        time.sleep(0.5)
    raise AssertionError("server not healthy in time")


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_is_down_fails_in_seconds_naming_it(stores):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in stores.items() if not k.startswith("MLFLOW_HTTP")}  # defaults
    for step in (["train", *MLP], ["compare"], ["main", "--profile", "tiny"]):
        started = time.monotonic()
        message = one_error_line(run_step(step, {**env, "MLFLOW_TRACKING_URI": uri}, timeout=120))
        assert uri in message and time.monotonic() - started < 30


@pytest.mark.realdata
@pytest.mark.slow
def test_a_server_stopped_mid_run_fails_the_step_and_the_run_resumes_later(
    real_prepared, tmp_path, monkeypatch
):
    base, port = tmp_path / "server", free_port()
    base.mkdir()
    server, url = start_server(base, port)
    env = {**store_env(tmp_path), "FMB_DATA_DIR": str(real_prepared), "MLFLOW_TRACKING_URI": url}
    monkeypatch.setenv("FMB_MLRUNS_DIR", env["FMB_MLRUNS_DIR"])  # checkpoint_path below
    env |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = start(["train", *MLP, "--subset", "6000", "--epochs", "5", "--patience", "5"], env)
    run = wait_for_epoch(env, "train", 1, proc)
    stop(server)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and time.monotonic() - started < 120
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: tracking server") and url in line and "--resume" in line
    assert config.checkpoint_path(run.info.run_id).is_file()
    server, _ = start_server(base, port)  # the same store comes back
    try:
        resumed = run_step(["train", "--resume", run.info.run_id], env, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        history = client(env).get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, 6)), "an epoch logged twice"
        assert client(env).get_run(run.info.run_id).info.status == "FINISHED"
    finally:
        stop(server)


# --- 9. `make server`: bound to localhost, Host checked, `..` refused, basic auth -------------


def request(url: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers or {}, method=method), timeout=10
        ) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_server_refuses_foreign_hosts_and_escaping_paths(tmp_path):
    server, url = start_server(tmp_path, free_port())
    try:
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert request(search) == 200
        assert request(search, {"Host": "attacker.example.com"}) == 403
        escape = f"{url}/api/2.0/mlflow-artifacts/artifacts/0/..%2F..%2Fescaped.txt"
        assert request(escape, method="PUT", body=b"x") == 400
        assert not list(tmp_path.rglob("escaped.txt"))
        import psutil

        listening = {
            c.laddr.ip for c in psutil.Process(server.pid).net_connections() if c.status == "LISTEN"
        }
        commands = []
        for child in psutil.Process(server.pid).children(recursive=True):
            try:
                listening |= {c.laddr.ip for c in child.net_connections() if c.status == "LISTEN"}
                commands.append(" ".join(child.cmdline()))
            except psutil.NoSuchProcess:
                # a child that exited after the listing (CI saw one vanish) listens on nothing;
                # the server itself is asked above without this allowance
                continue
        assert listening == {"127.0.0.1"}, listening
        # MLflow's job runner (eight processes for GenAI jobs this project never submits) is off
        assert commands and not [c for c in commands if "mlflow.server.jobs" in c], commands
    finally:
        stop(server)


@pytest.mark.slow
def test_auth_needs_an_admin_password_and_then_a_user(tmp_path):
    refused = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "server.py"), "--auth", "--port", str(free_port())],
        env={**clean_env({}), "FMB_MLRUNS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr
    password = "a-long-test-Passw0rd"
    server, url = start_server(
        tmp_path, free_port(), auth=True, env_extra={"MLFLOW_AUTH_ADMIN_PASSWORD": password}
    )
    try:
        import base64

        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert request(search) == 401
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        assert request(search, {"Authorization": f"Basic {token}"}) == 200
        wrong = base64.b64encode(b"admin:wrong").decode()
        assert request(search, {"Authorization": f"Basic {wrong}"}) == 401
    finally:
        stop(server)


# --- 10. untrusted files ---------------------------------------------------------------------


class Payload:
    """Unpickling this runs `touch <marker>`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_checkpoint_is_refused_without_running_code(tmp_path):
    import torch

    from pipeline import engine

    marker, path = tmp_path / "pwned", tmp_path / "ckpt.pt"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    with pytest.raises(pickle.UnpicklingError):
        engine.load_checkpoint_file(path, torch.device("cpu"))
    assert not marker.exists()


def test_scikit_learn_models_load_only_through_skops_with_our_trusted_types():
    from pipeline.errors import UserError
    from pipeline.tracking.models import check_safe

    ok = {"sklearn": {"serialization_format": "skops", "skops_trusted_types": ["numpy.reshape"]}}
    check_safe(ok, "models:/ok")
    pickled = {"sklearn": {"serialization_format": "cloudpickle"}}
    with pytest.raises(UserError, match="only skops"):
        check_safe(pickled, "models:/bad")
    wider = {"sklearn": {"serialization_format": "skops", "skops_trusted_types": ["builtins.exec"]}}
    with pytest.raises(UserError, match="builtins.exec"):
        check_safe(wider, "models:/bad")


@pytest.mark.parametrize("name", config.SKLEARN_MODEL_NAMES)
def test_every_baseline_needs_only_the_trusted_types(name):
    import skops.io

    from pipeline import models
    from pipeline.tracking.models import SKOPS_TRUSTED_TYPES

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (200, 1, 28, 28)).astype(np.float32)
    options = {"n_estimators": 3} if name == "random_forest" else {}
    model = models.build_baseline(name, 0, **options).fit(images, np.repeat(np.arange(10), 20))
    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    assert set(untrusted) <= set(SKOPS_TRUSTED_TYPES), untrusted


def test_skops_itself_refuses_a_type_nobody_trusted(tmp_path):
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from pipeline.tracking.models import SKOPS_TRUSTED_TYPES

    path = tmp_path / "model.skops"
    skops.io.dump(Pipeline([("f", FunctionTransformer(os.getcwd))]), path)
    with pytest.raises(Exception, match="getcwd"):
        skops.io.load(path, trusted=SKOPS_TRUSTED_TYPES)


# --- 11. a full disk, a read-only folder ---------------------------------------------------------


def limited(limit_bytes: int):
    def apply() -> None:  # in the child: a file-size limit, as a full disk would impose
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


@pytest.mark.realdata
def test_a_full_disk_while_preparing_is_one_line_and_no_corrupt_cache(real_data, stores, tmp_path):
    env = {**stores, "FASHION_MNIST_DIR": str(real_data)}
    ok = run_step(["prepare", "--split_seed", "1"], env)
    assert ok.returncode == 0
    before = sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--split_seed", "2"],
        cwd=ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limited(8 * 2**20),  # the split is ~45 MB
    )
    one_error_line(result, "File too large")
    after = sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir())
    assert after == before, "a half-written cache or temporary folder was left"
    (cache,) = (tmp_path / "data" / "prepared").iterdir()
    assert data.intact(cache, data.read_manifest(cache))


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from pipeline import engine

    path = tmp_path / "ckpt.pt"
    engine.atomic_torch_save({"epoch": torch.tensor(1)}, path)
    real_open = open

    def full(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp"):
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError, match="No space left"):
        engine.atomic_torch_save({"epoch": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["epoch"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


# Root writes into read-only folders: as root (CI's machines), the step runs without the
# capabilities that let root ignore file permissions (util-linux setpriv), like a user.
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_a_read_only_results_folder_is_one_line(tiny_idx_dir, stores, tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        env = {**stores, "FMB_DATA_DIR": str(readonly / "data")}
        args = ["prepare", "--source", str(tiny_idx_dir), "--allow_unofficial", "true"]
        result = subprocess.run(
            [*(AS_A_USER if os.geteuid() == 0 else []), sys.executable, "-m", "pipeline", *args],
            cwd=ROOT,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = one_error_line(result, str(readonly / "data"))
        assert "Permission denied" in line, line
        assert not (readonly / "data").exists()
    finally:
        readonly.chmod(0o755)
