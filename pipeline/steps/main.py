"""Run a profile's steps (prepare -> train -> tune -> evaluate -> compare) as child runs of
one MLflow run; finished steps with the same settings, code and data are reused."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pipeline import cli, config
from pipeline.config import MainSettings


def show(compare_run: str, experiment: str, main_run: str) -> None:
    from pipeline import tracking

    with tracking.artifact(compare_run, "leaderboard.md") as path:
        print("\n".join(path.read_text().splitlines()[:40]))
    studies = tracking.runs(
        f"tags.`mlflow.parentRunId` = '{main_run}' and tags.`pipeline.step` = 'tune'"
    )
    urls = sorted(
        {
            r.data.tags["optuna.dashboard_url"]
            for r in studies
            if "optuna.dashboard_url" in r.data.tags
        }
    )
    dashboard = "`make dashboard`"
    storages = {r.data.tags["optuna.storage"] for r in studies if "optuna.storage" in r.data.tags}
    # the Makefile's STORAGE when FMB_MLRUNS_DIR is not set: else name the storage, so the
    # command also works from a shell without it
    if storages - {f"sqlite:///{config.ROOT / 'mlruns' / 'optuna.db'}"}:
        args = sorted(s.removeprefix("journal:") for s in storages)  # optuna-dashboard's form
        dashboard = " or ".join(f"`make dashboard STORAGE={a}`" for a in args)
    print(
        f"\nleaderboard: run {compare_run} (leaderboard.html in its artifacts)\n"
        f"MLflow UI: `make ui`, then http://127.0.0.1:5000/#/experiments/{experiment}/runs"
        "?workflowType=machine_learning\n"  # MLflow 3.17's UI switch starts on GenAI
        f"Optuna: {dashboard}, then {' '.join(urls) or 'http://127.0.0.1:8080'}",
        file=sys.stderr,
    )


def check_jobs(profile, check) -> None:
    """check(settings) on each job's training settings (a tune's: its base); a ValueError or
    UserError becomes one line naming the profile and the job's table, before any run
    (not in a child run after prepare and the other jobs)."""
    from pipeline.errors import UserError

    for job in (*profile.train, *profile.tune):
        s = job.settings if job.entry == "train" else job.settings.base
        try:
            check(s)
        except (ValueError, UserError) as exc:
            raise UserError(f"profile {profile.path}, [[{job.entry}]]: {exc}") from None


def check_models(profile) -> None:
    """Each job's model builds with its options (profiles, standard library only, cannot
    build one), and a scikit-learn baseline is given no torch setting (train checks that
    only once its data is loaded)."""
    from pipeline import models

    def buildable(s) -> None:
        models.check_options(s.model, s.options, s.dropout)
        s.check_baseline()

    check_jobs(profile, buildable)


def main(settings: MainSettings) -> int:
    from pipeline import profiles

    profile = profiles.load(settings.profile)  # every entry checked before any run starts
    check_models(profile)
    from pipeline import executors, tracking

    tracking.apply_defaults()
    tracking.check_reachable()
    executor = executors.EXECUTORS[settings.executor](settings)  # Ray checked before any run
    try:
        check_jobs(profile, lambda s: executor.check_device(s.device))  # before prepare
        with tracking.pipeline_lock():  # a second pipeline on this store fails: "store busy"
            return run(settings, profile, executor)
    finally:
        executor.close()


def run(settings: MainSettings, profile, executor) -> int:
    from pipeline import chain, tracking
    from pipeline.errors import UserError

    # Child steps run `python -m pipeline ...`: make `python` this interpreter, venv or not.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    started = time.time()
    described = {"mlflow.note.content": f"Profile {profile.name}: {profile.description}"}
    with tracking.step_run(
        "main",
        settings.params(),
        name=f"main {profile.name}",
        config=settings.to_dict(),
        tags=described,
    ) as run_id:
        tracking.log_text(profile.text, f"profile_{profile.name}.toml", run_id)
        experiment = tracking.get_run(run_id).info.experiment_id
        executor.bind(experiment, run_id)
        steps = chain.Chain(settings, experiment, tracking.code_version(), executor)
        compare_run = chain.run_profile(profile, steps, run_id)
        seconds = time.time() - started
        counts = {"steps_run": steps.ran, "steps_reused": len(steps.reused)}
        tracking.log_metrics(run_id, {**counts, "wall_time_s": seconds})
        tracking.set_tags(run_id, {"compare_run_id": compare_run})
        show(compare_run, experiment, run_id)
        print(f"main run {run_id}: {counts}, {seconds:.0f} s", file=sys.stderr)
        if steps.failed:  # the run ends FAILED, the exit code is non-zero
            raise UserError(f"{len(steps.failed)} step(s) failed: " + "; ".join(steps.failed))
    cli.print_result({"run_id": run_id, "compare_run_id": compare_run, **counts})
    return 0
