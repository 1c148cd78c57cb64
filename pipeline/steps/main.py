"""`main`: the whole benchmark as one MLflow parent run with the steps as child runs.

As in MLflow's multistep example, each step is `mlflow.run` of this project's entry point
(with the env manager passed on explicitly: MLflow does not forward it), and a finished step
whose entry point, parameters, code version and data digest all match is reused, so an
interrupted pipeline continues where it stopped. `compare` always runs anew: its input is
the set of runs. What is run comes from a profile: a small TOML file in profiles/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import tomllib

from pipeline import cli, config

DESCRIPTION = "Run prepare -> train -> tune -> evaluate -> compare as child runs of one run."
PROFILES_DIR = config.ROOT / "profiles"
ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


def profile_arg(text: str) -> Path:
    """A profile name from profiles/, or a path to a TOML file of the same shape."""
    path = Path(text) if text.endswith(".toml") else PROFILES_DIR / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
        raise argparse.ArgumentTypeError(
            f"profile {text!r} not found; choose {names} or a .toml path"
        )
    return path


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("main", DESCRIPTION)
    parser.add_argument(
        "--profile",
        default="quick",
        type=profile_arg,
        help="quick (default, <15 min on 2 CPU cores), full (GPU), reports, tiny (tests)",
    )
    parser.add_argument(
        "--env_manager",
        "--env-manager",
        default="local",
        type=cli.choice(ENV_MANAGERS, "env_manager"),
        help="env manager of every child `mlflow run` (MLflow does not forward it)",
    )
    return parser


# --- the profile -------------------------------------------------------------------------


def load_profile(path: Path) -> dict:
    """Parse and check a profile before any run starts; every value is checked again by the
    step's own parser when its child run starts."""
    try:
        profile = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise cli.UserError(f"profile {path}: {exc}") from None
    unknown = set(profile) - {"description", "prepare", "train", "tune", "compare"}
    if unknown:
        raise cli.UserError(f"profile {path}: unknown sections {', '.join(sorted(unknown))}")
    from pipeline.steps import train, tune

    for entry in profile.get("train", []):
        check_params(path, train.get_args_parser(), without(entry, "seeds"))
    for entry in profile.get("tune", []):
        check_params(path, tune.get_args_parser(), entry)
    return profile


def without(entry: dict, *keys: str) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


def check_params(path: Path, parser: argparse.ArgumentParser, params: dict) -> None:
    argv = [f"--{k}={as_text(v)}" for k, v in params.items()]
    known = {a.dest for a in parser._actions}
    for key in params:
        if key not in known:
            raise cli.UserError(f"profile {path}: unknown parameter {key!r} of {parser.prog}")
    try:
        parser.parse_known_args(argv)
    except SystemExit:  # the parser already printed its one error line
        raise SystemExit(2) from None


def as_text(value) -> str:
    """A profile value as the step's command line spells it."""
    from pipeline.steps.train import as_option

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):  # model options: key=value,key=[1,2]
        return ",".join(f"{k}={as_option(v)}" for k, v in value.items()) or "none"
    return str(value)


# --- child runs ----------------------------------------------------------------------------


class Steps:
    """Runs entry points as child runs of the main run; reuses finished matching ones."""

    def __init__(self, env_manager: str, experiment_id: str, code_version: str):
        import mlflow

        self.client = mlflow.MlflowClient()
        self.env_manager, self.experiment_id, self.code_version = (
            env_manager,
            experiment_id,
            code_version,
        )
        self.reused = self.ran = 0

    def find_finished(self, entry: str, params: dict, usable=None) -> str | None:
        """The newest FINISHED run of this entry point, code version and parameters (for
        which `usable(run)` holds, when given); None when there is none."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.project.entryPoint` = '{entry}' and attributes.status = 'FINISHED'"
            f" and tags.`code.version` = '{self.code_version}'",
            order_by=["attributes.start_time DESC"],
            max_results=500,
        )
        for run in runs:
            if all(run.data.params.get(k) == v for k, v in params.items()) and (
                usable is None or usable(run)
            ):
                return run.info.run_id
        return None

    def run(self, entry: str, params: dict, reuse: bool = True, usable=None) -> str:
        import mlflow

        params = {k: as_text(v) for k, v in params.items()}
        found = self.find_finished(entry, params, usable) if reuse else None
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        if found:
            self.reused += 1
            print(f"[main] {entry} {shown}: reusing finished run {found}", flush=True)
            return found
        print(f"[main] {entry} {shown}: running", flush=True)
        started = time.time()
        try:
            submitted = mlflow.projects.run(
                str(config.ROOT),
                entry_point=entry,
                parameters=params,
                env_manager=self.env_manager,
                experiment_id=self.experiment_id,
                synchronous=True,
            )
        except mlflow.exceptions.ExecutionException:
            raise cli.UserError(f"step {entry} ({shown}) failed; its run says why") from None
        self.ran += 1
        print(
            f"[main] {entry} done in {time.time() - started:.0f} s (run {submitted.run_id})",
            flush=True,
        )
        return submitted.run_id


def train_jobs(profile: dict, digest: str):
    for entry in profile.get("train", []):
        for seed in entry.get("seeds", [42]):
            yield {**without(entry, "seeds"), "seed": seed, "dataset": digest}


def evaluate_all(steps: Steps, train_ids: list[str]) -> None:
    """One evaluate run for every train run not evaluated yet (Python and MLflow start once)."""
    todo = []
    for run_id in dict.fromkeys(train_ids):
        if steps.client.get_run(run_id).data.tags.get("evaluated") == "true":
            print(f"[main] evaluate run_id={run_id}: already evaluated", flush=True)
        else:
            todo.append(run_id)
    if todo:
        steps.run("evaluate", {"run_id": ",".join(todo)}, reuse=False)


def cache_exists(run) -> bool:
    """A prepare run is only reused while its cache is still on this machine (data/ may have
    been cleaned, or the run came from another machine through a shared tracking server)."""
    from pipeline import data

    return data.find_cache(run.data.tags.get("dataset.digest") or "-") is not None


def run_pipeline(profile: dict, steps: Steps) -> list[str]:
    """prepare -> train -> tune -> evaluate -> compare; returns [the compare run's id]."""
    prepare_params = profile.get("prepare", {})
    prepared = steps.run("prepare", prepare_params, usable=cache_exists)
    digest = steps.client.get_run(prepared).data.tags["dataset.digest"]
    import mlflow

    mlflow.set_tag("dataset.digest", digest)  # the main run's data: the prepared cache's
    split = {
        "val_fraction": prepare_params.get("val_fraction", 0.1),
        "split_seed": prepare_params.get("seed", 42),
    }
    train_ids = [steps.run("train", {**job, **split}) for job in train_jobs(profile, digest)]
    for entry in profile.get("tune", []):
        tuned = steps.run("tune", {**entry, "dataset": digest})
        final = steps.client.get_run(tuned).data.tags.get("tune.final_run_id")
        train_ids += [final] if final else []
    evaluate_all(steps, train_ids)
    compare_run = steps.run("compare", profile.get("compare", {}), reuse=False)
    return [compare_run]


def show_results(compare_run: str, client) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(compare_run, "leaderboard.md", tmp)).read_text()
    print("\n".join(text.splitlines()[:40]))
    experiment_id = client.get_run(compare_run).info.experiment_id
    print(
        f"\nleaderboard: run {compare_run} (leaderboard.html in its artifacts)\n"
        f"MLflow UI: `make ui`, then http://127.0.0.1:5000/#/experiments/{experiment_id}/runs\n"
        "Optuna studies: `make dashboard`, then http://127.0.0.1:8080"
    )


def main(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    from pipeline import tracking

    tracking.apply_defaults()
    tracking.check_reachable()  # fails in seconds, naming the URI
    # Child steps run `python -m pipeline ...`: make `python` this interpreter, venv or not.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = time.time()
    with tracking.step_run(
        "main",
        {"profile": args.profile.stem, "env_manager": args.env_manager},
        run_name=f"main-{args.profile.stem}",
    ) as run:
        tracking.log_text(args.profile.read_text(), f"profile_{args.profile.stem}.toml")
        steps = Steps(args.env_manager, run.info.experiment_id, tracking.code_version())
        (compare_run,) = run_pipeline(profile, steps)
        import mlflow

        mlflow.log_metrics(
            {
                "steps_run": steps.ran,
                "steps_reused": steps.reused,
                "wall_time_s": time.time() - started,
            }
        )
        mlflow.set_tag("compare_run_id", compare_run)
    show_results(compare_run, steps.client)
    print(
        f"main run {run.info.run_id}: {steps.ran} steps run, {steps.reused} reused, "
        f"{time.time() - started:.0f} s",
        file=sys.stderr,
    )
    return 0
