"""Scale-out: wall time of a whole `main` pipeline, one job at a time and on Ray.

    python bench/bench_scale.py                       # profile tiny: local, ray x1, ray x2
    python bench/bench_scale.py --profile quick --configs local,ray:2

Each configuration runs `python -m pipeline main` from scratch in a store of its own (the
prepared data is shared and prepared once before the first timing, so every run starts
equal), one after another on this machine, and the wall time of each is printed with its
speed-up over `local`. Writes JSON (`--json`), also of the configurations that finished
when a later one fails. Needs the `ray` extra for the ray configurations.
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


class Failed(Exception):
    """A pipeline that failed: its command and its last error line."""


def pipeline(argv: list[str], data_dir: Path) -> float:
    """Seconds of one `python -m pipeline ...` in a fresh store (the data cache is shared)."""
    base = Path(tempfile.mkdtemp(prefix="fmb-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {
        "FMB_DATA_DIR": str(data_dir),
        "FMB_MLRUNS_DIR": str(base / "mlruns"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlruns' / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(base, ignore_errors=True)
    if done.returncode != 0:
        raise Failed(f"{' '.join(argv)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds


def run(profile: str, executor: str, workers: int, data_dir: Path) -> float:
    """Seconds of one whole `main` of the profile."""
    argv = ["main", "--profile", profile, "--executor", executor]
    return pipeline(argv + (["--workers", str(workers)] if executor == "ray" else []), data_dir)


def prepare(profile: str, data_dir: Path) -> None:
    """The profile's prepared data, made before any timing: the first configuration timed
    the preparation too (8 s of a tiny profile's 84 s), the later ones reused it."""
    job = profiles.load(config.ProfileKind().read(profile, "profile")).prepare
    pipeline(["prepare", *(f"--{k}={v}" for k, v in job.params().items())], data_dir)


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
    rows, failed = [], None
    try:
        prepare(args.profile, Path(args.data_dir))
        for executor, workers in args.configs:
            seconds = run(args.profile, executor, workers, Path(args.data_dir))
            rows.append({"executor": executor, "workers": workers, "seconds": seconds})
            print(f"executor={executor} workers={workers or '-'} wall_s={seconds:.1f}", flush=True)
    except Failed as exc:  # what finished before it is still written
        failed = str(exc)
    local = next((r["seconds"] for r in rows if r["executor"] == "local"), None)
    for row in rows:
        if local and row["executor"] == "ray":
            print(
                f"speedup executor=ray workers={row['workers']} vs local: {local / row['seconds']:.2f}x"
            )
    report = {"profile": args.profile, "runs": rows, "failed": failed}
    files.atomic_write_text(Path(args.json), json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    if failed:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
