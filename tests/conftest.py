"""Shared fixtures: tiny synthetic IDX files, temporary stores, and step runners.

No test writes into the checkout's own mlruns/ or data/: every test points FMB_DATA_DIR,
FMB_MLRUNS_DIR and MLFLOW_TRACKING_URI at a temporary directory.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))  # its scripts, e.g. `import server` (make server)
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# Tests that start whole pipelines share them (the session's tiny flows, Ray instances):
# under pytest-xdist (`make test` runs two workers) they all go to one worker, so each flow
# runs once and two local Ray instances never compete; every other test goes to whichever
# worker is free.
PIPELINE_FIXTURES = {"tiny_sqlite", "tiny_server", "tiny_ray", "flows"}


def pytest_itemcollected(item):
    # at collection, before any pytest_collection_modifyitems (where xdist reads the groups)
    uses_flows = PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ()))
    if uses_flows or item.module.__name__ == "test_scale" or "bench_scale" in item.name:
        item.add_marker(pytest.mark.xdist_group("pipelines"))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX (magic 0x0000080N, big-endian dimensions, data)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    payload = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def synthetic(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class c has a bright 6x6 block at a class-specific place."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + (c // 5) * 12, 1 + (c % 5) * 5
        images[i, r : r + 6, col : col + 6] = 200 + rng.integers(0, 55)
    return images, labels.astype(np.uint8)


def write_dataset(directory: Path, n_train_per_class=60, n_test_per_class=20, gz=True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic(n_train_per_class, 0)
    test_x, test_y = synthetic(n_test_per_class, 1)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    for key, array in arrays.items():
        write_idx(directory / NAMES[key], array, gz=gz)
    return directory


@pytest.fixture(scope="session")
def tiny_idx_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny-idx"))


def store_env(base: Path) -> dict[str, str]:
    """Environment variables that send every store of a step into `base`."""
    (base / "mlruns").mkdir(parents=True, exist_ok=True)
    return {
        "FMB_DATA_DIR": str(base / "data"),
        "FMB_MLRUNS_DIR": str(base / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlruns' / 'mlflow.db'}",
        "MLFLOW_EXPERIMENT_NAME": "fashion-mnist",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(autouse=True)
def no_leftover_tracking_uri():
    """mlflow.set_tracking_uri is process-wide and outranks MLFLOW_TRACKING_URI: a test that
    set it and did not reset it sent the next test's clients (tracking.client()) to its own
    store ("No Experiment with id=1" in a later test of the same worker)."""
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def stores(tmp_path, monkeypatch) -> dict[str, str]:
    """A fresh temporary store for this test, also applied to this process."""
    env = store_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    return env


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def store_client(uri: str):
    """An MlflowClient on `uri`, made as the pipeline makes its own (tracking.store.client:
    the first one under the store lock), so a test may poll a store a pipeline is creating."""
    from pipeline.tracking.store import client

    return client(uri)


def run_step(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout=600):
    """`python -m pipeline ...` in a subprocess; returns CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mlflow_run(entry: str, params: dict, env: dict[str, str], cwd: Path, timeout=900, extra=()):
    """`mlflow run <repo> -e entry --env-manager local -P k=v ...` from `cwd`."""
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "run",
        str(ROOT),
        "-e",
        entry,
        "--env-manager",
        "local",
        *extra,
    ]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return subprocess.run(
        command, cwd=cwd, env=clean_env(env), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The Debian package's files; a missing package fails in CI instead of skipping."""
    if (REAL_DATA / "train-images-idx3-ubyte.gz").is_file():
        return REAL_DATA
    if os.environ.get("CI"):
        pytest.fail(
            f"real Fashion-MNIST missing at {REAL_DATA}: .ci/run must install dataset-fashion-mnist"
        )
    pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def real_prepared(real_data, tmp_path_factory) -> Path:
    """A data directory (for FMB_DATA_DIR) holding the real data prepared once per session
    with the default split, so tests that train on real data skip the preparation."""
    from pipeline import data

    directory = tmp_path_factory.mktemp("real-prepared")
    before = os.environ.get("FMB_DATA_DIR")
    os.environ["FMB_DATA_DIR"] = str(directory)
    try:
        data.write_cache(data.load_raw(real_data), 0.1, 42)
    finally:
        if before is None:
            os.environ.pop("FMB_DATA_DIR")
        else:
            os.environ["FMB_DATA_DIR"] = before
    return directory


# --- the session's finished tiny pipelines (tests/test_pipeline.py: Flows) ---------------------


@pytest.fixture(scope="session")
def flows(request, tmp_path_factory, real_data):
    import test_pipeline

    return test_pipeline.start_flows(request, tmp_path_factory, real_data)


@pytest.fixture(scope="session")
def tiny_sqlite(flows):
    """The tiny pipeline on an embedded SQLite store in a temporary directory."""
    import test_pipeline

    return test_pipeline.finished(flows, "sqlite")


@pytest.fixture(scope="session")
def tiny_server(flows):
    """The tiny pipeline on a real `mlflow server` (its own SQLite DB and artifact folder)."""
    import test_pipeline

    return test_pipeline.finished(flows, "server")


@pytest.fixture(scope="session")
def tiny_ray(flows):
    """The same pipeline with executor=ray workers=2 on a local Ray instance."""
    import test_pipeline

    return test_pipeline.finished(flows, "ray")


# --- the bench scripts (tests/test_bench.py, tests/test_bench_inputs.py) ----------------------


@pytest.fixture
def bench_env(tmp_path) -> dict[str, str]:
    """Synthetic IDX files as the data source (loadable: a script that let a bad input
    through would go on to work), an empty data directory for the cache, no GPU (the
    tiny runs are CPU format checks, and `--device cuda` then asks for an absent device)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FMB_"))}
    env.update(
        FASHION_MNIST_DIR=str(write_dataset(tmp_path / "idx")),
        FMB_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def run_script(script: str, args: list[str], env: dict[str, str], timeout: int = 120):
    """`python bench/<script> ...`, its output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
