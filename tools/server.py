"""`make server`: a hardened MLflow tracking server for this project's store.

    python tools/server.py [--port 5000] [--auth]     (make server [PORT=5000] [AUTH=1])

- bound to 127.0.0.1 only, with MLflow's security middleware told which Host headers are
  this server (so a request naming another host, a DNS-rebinding attack, is refused);
- artifacts served by the server itself (`--serve-artifacts`, MLflow refuses paths with `..`);
- MLflow's job runner off unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION says otherwise: it
  serves MLflow's GenAI jobs (scorers, trace rollups), which this project never submits, and
  its eight extra Python processes cost about 17 s of CPU at start and 1.7 GB of memory;
- `--auth` (AUTH=1) runs MLflow's basic-auth app (the `mlflow[auth]` extra): every request
  needs a user; it refuses to start unless MLFLOW_AUTH_ADMIN_PASSWORD is set in the
  environment (never on the command line, where `ps` would show it).
Store: a SQLite database and an artifact folder under mlruns/ (FMB_MLRUNS_DIR).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def command(
    port: int, mlruns: Path, auth: bool, mlflow: str = "mlflow", environ=os.environ
) -> tuple[list[str], dict]:
    """(argv, extra environment) of the server, for a server started with `environ`."""
    mlruns.mkdir(parents=True, exist_ok=True)
    (mlruns / "server-artifacts").mkdir(exist_ok=True)
    argv = [
        mlflow,
        "server",
        "--backend-store-uri", f"sqlite:///{mlruns / 'server.db'}",
        "--artifacts-destination", str(mlruns / "server-artifacts"),
        "--serve-artifacts",
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
        "--allowed-hosts", f"{HOST}:{port},localhost:{port},{HOST},localhost",
    ]  # fmt: skip
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get(
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
        )
    }
    if auth:
        if not environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
            raise SystemExit(
                "error: AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD in the environment (the admin"
                " user's password); set it, then run make server AUTH=1 again"
            )
        config = mlruns / "basic_auth.ini"
        config.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{mlruns / 'basic_auth.db'}\n"
            "admin_username = admin\nauthorization_function ="
            " mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        argv += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        # the auth app's CSRF protection needs a secret; several servers must share one
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = environ.get(
            "MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32)
        )
    return argv, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()
    mlruns = Path(os.environ.get("FMB_MLRUNS_DIR", ROOT / "mlruns"))
    mlflow = str(Path(sys.executable).parent / "mlflow")
    argv, env = command(args.port, mlruns, args.auth, mlflow)
    print(f"MLflow server on http://{HOST}:{args.port} (store {mlruns}); then, elsewhere:")
    print(f"  MLFLOW_TRACKING_URI=http://{HOST}:{args.port} make run", flush=True)
    os.execve(argv[0], argv, {**os.environ, **env})
    return 0


if __name__ == "__main__":
    sys.exit(main())
