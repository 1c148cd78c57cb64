"""Screenshots of the MLflow UI on a finished store, taken by headless Chromium.

    python tools/screenshots.py [--store mlruns/mlflow.db] [--out docs/screenshots]

Starts `mlflow ui` on the store (a free local port), opens the experiment's runs table, the
compare view of its train runs (parallel coordinates of their parameters) and the logged
models, and saves one PNG each. It needs Debian's chromium (`apt-get install chromium`) and
says so when it is missing; `make screenshots` runs it on the default store after `make run`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ML_VIEW = "machine_learning"  # the UI's workflowType for model training
# Without the background-networking flags Chromium's connections are refused by a closed
# network, many at a time; --virtual-time-budget lets the single-page app finish rendering.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=2560,1100",
    "--virtual-time-budget=25000",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: mlflow ui exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: mlflow ui did not answer on {url} within {timeout:.0f} s")


def pages(store: str, base: str) -> dict[str, str]:
    """File name -> UI address: the runs table (all, and filtered to train runs, which
    lists them flat with their datasets), the compare view of the train runs, the models."""
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("fashion-mnist")
    if experiment is None:
        raise SystemExit(f"error: no experiment fashion-mnist in {store}; run `make run` first")
    eid = experiment.experiment_id
    train = client.search_runs([eid], "tags.`pipeline.step` = 'train'", max_results=20)
    ids = json.dumps([r.info.run_id for r in train], separators=(",", ":"))
    compare = urllib.parse.quote(ids) + "&experiments=" + urllib.parse.quote(json.dumps([eid]))
    train_filter = urllib.parse.quote("tags.`pipeline.step` = 'train'")
    # MLflow 3.17's UI has a global GenAI / model-training switch that wins over the
    # experiment's mlflow.experimentKind tag; a fresh browser starts on GenAI.
    kind = f"workflowType={ML_VIEW}"
    return {
        "mlflow_runs.png": f"{base}/#/experiments/{eid}/runs?{kind}",
        "mlflow_train_runs.png": f"{base}/#/experiments/{eid}/runs?{kind}&searchFilter={train_filter}",
        "mlflow_compare_train_runs.png": f"{base}/#/compare-runs?runs={compare}&{kind}",
        "mlflow_models.png": f"{base}/#/experiments/{eid}/models?{kind}",
    }


def shoot(chromium: str, url: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        command += [f"--screenshot={target}", url]
        subprocess.run(command, capture_output=True, timeout=180, check=False)
    if not target.is_file():
        raise SystemExit(f"error: chromium saved no screenshot of {url}")
    print(f"{target}: {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "mlruns" / "mlflow.db"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print(
            "error: chromium not found; install Debian's: apt-get install chromium", file=sys.stderr
        )
        return 2
    store = args.store if "://" in args.store else f"sqlite:///{Path(args.store).resolve()}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [
            mlflow_bin,
            "ui",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(base, server)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, url in pages(store, base).items():
            shoot(chromium, url, out / name)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
