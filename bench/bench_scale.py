"""Scale-out: wall time of a whole `main` pipeline, one job at a time and on Ray.

    python bench/bench_scale.py                       # profile tiny: local, ray x1, ray x2
    python bench/bench_scale.py --profile quick --configs local,ray:2

Each configuration runs `python -m pipeline main` from scratch in a store of its own (the
prepared data is shared, so every run starts equal), one after another on this machine, and
the wall time of each is printed with its speed-up over `local`. Writes JSON (`--json`).
Needs the `ray` extra for the ray configurations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_scale.py` from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline import cli, config, files, profiles  # noqa: E402  (standard library only: no torch)
from pipeline.errors import UserError  # noqa: E402


def run(profile: str, executor: str, workers: int, data_dir: Path) -> float:
    """Seconds of one pipeline in a fresh store (the data cache is shared)."""
    base = Path(tempfile.mkdtemp(prefix="fmb-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {
        "FMB_DATA_DIR": str(data_dir),
        "FMB_MLRUNS_DIR": str(base / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlruns' / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    argv = [sys.executable, "-m", "pipeline", "main", "--profile", profile, "--executor", executor]
    argv += ["--workers", str(workers)] if executor == "ray" else []
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(base, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(
            f"error: {' '.join(argv[3:])} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    return seconds


def profile(text: str) -> str:
    """An argparse type: a profile that loads (name or .toml path), checked before any run."""
    try:
        profiles.load(config.ProfileKind().read(text, "profile"))
    except (ValueError, UserError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def configs(text: str) -> list[tuple[str, int]]:
    """An argparse type: (executor, workers) per comma-separated `local` or `ray:<workers>`,
    checked here so that a typo fails before the first pipeline runs, not after it."""
    out = []
    for spec in text.split(","):
        executor, sep, workers = spec.partition(":")
        if executor not in config.EXECUTORS:
            raise argparse.ArgumentTypeError(
                f"unknown executor {executor!r} in {spec!r}; use local or ray:<workers>"
            )
        if sep and executor != "ray":  # the pipeline refuses workers with executor=local
            raise argparse.ArgumentTypeError(f"{spec!r}: only ray takes :<workers>")
        if sep and not workers.isdecimal():  # no sign; int() reads every such string
            raise argparse.ArgumentTypeError(
                f"{spec!r}: workers must be a whole number (0, or ray alone: what Ray offers)"
            )
        out.append((executor, int(workers or 0)))
    if any(e == "ray" for e, _ in out) and importlib.util.find_spec("ray") is None:
        # else the local pipeline ran for minutes before the first ray config failed
        raise argparse.ArgumentTypeError(
            f"{text!r} needs Ray: pip install -e '.[ray]' (or --configs local)"
        )
    return out


def main() -> int:
    parser = cli.StepParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=profile, default="tiny")
    parser.add_argument(
        "--configs", type=configs, default="local,ray:1,ray:2", help="local, ray:<workers>"
    )
    parser.add_argument("--data-dir", default=os.environ.get("FMB_DATA_DIR", str(ROOT / "data")))
    parser.add_argument(
        "--json", type=cli.output_file, default=str(ROOT / "bench" / "results" / "bench_scale.json")
    )
    args = parser.parse_args()
    print(
        f"bench_scale profile={args.profile} cpus={os.cpu_count()} (each config from an empty store)"
    )
    rows = []
    for executor, workers in args.configs:
        seconds = run(args.profile, executor, workers, Path(args.data_dir))
        rows.append({"executor": executor, "workers": workers, "seconds": seconds})
        print(f"executor={executor} workers={workers or '-'} wall_s={seconds:.1f}", flush=True)
    local = next((r["seconds"] for r in rows if r["executor"] == "local"), None)
    for row in rows:
        if local and row["executor"] == "ray":
            print(
                f"speedup executor=ray workers={row['workers']} vs local: {local / row['seconds']:.2f}x"
            )
    files.atomic_write_text(
        Path(args.json), json.dumps({"profile": args.profile, "runs": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
