"""The main job: a profile's steps as child runs of one main run, in order
prepare -> train -> tune -> evaluate -> compare.

As in MLflow's multistep example, each step is `mlflow run` of this project's own entry
point, and a finished step whose entry point, settings, code version and data all match is
reused, so an interrupted pipeline continues where it stopped. `compare` always runs anew:
its input is the set of runs. A train or tune job that fails is reported and the rest go on;
compare ranks what finished and lists what failed, and main exits non-zero at the end.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field

from pipeline import config, data, profiles, tracking
from pipeline.config import EvaluateSettings, MainSettings
from pipeline.errors import UserError


def say(text: str) -> None:
    print(f"[main] {text}", file=sys.stderr, flush=True)


def unquoted(text: str) -> str:
    """A parameter as `mlflow run` logged it (shell-quoted when it needs quotes) -> text."""
    try:
        parts = shlex.split(text)
    except ValueError:
        return text
    return parts[0] if len(parts) == 1 else text


@dataclass
class Chain:
    """Runs jobs as child runs of the main run; reuses finished matching ones."""

    settings: MainSettings
    experiment_id: str
    code_version: str
    reused: int = 0
    ran: int = 0
    failed: list[str] = field(default_factory=list)

    def matches(self, job: profiles.Job):
        cls, names = type(job.settings), {leaf.name for leaf in job.settings.leaves()}

        def same(logged: dict[str, str]) -> bool:
            try:
                found = cls.from_params({k: unquoted(v) for k, v in logged.items() if k in names})
            except UserError:
                return False
            return found == job.settings

        return same

    def resumable(self, job: profiles.Job) -> str | None:
        """A killed or failed train run of this job that left a checkpoint: continued from
        its last complete epoch instead of starting again."""
        if job.entry != "train":
            return None
        query = (
            "tags.`mlflow.project.entryPoint` = 'train' and attributes.status = '{}'"
            f" and tags.`code.version` = '{self.code_version}'"
        )
        found = [
            run for status in ("KILLED", "FAILED") for run in tracking.runs(query.format(status))
        ]
        same = self.matches(job)
        for run in found:
            if same(run.data.params) and config.checkpoint_path(run.info.run_id).is_file():
                return run.info.run_id
        return None

    def run(self, job: profiles.Job, reuse: bool = True, usable=None) -> str:
        """The run id of the job: a finished matching run, a resumed one, or a new one."""
        shown = " ".join(f"{k}={v}" for k, v in job.params().items())
        found = None
        if reuse:
            found = tracking.finished_step_run(
                job.entry, self.code_version, self.matches(job), usable
            )
        if found:
            self.reused += 1
            say(f"{job.entry} {shown}: reusing finished run {found}")
            return found
        resume = self.resumable(job) if reuse else None
        params = {**job.params(), **({"resume": "true"} if resume else {})}
        say(f"{job.entry} {shown}: " + (f"resuming run {resume}" if resume else "running"))
        started = time.time()
        run_id = tracking.run_entry_point(
            job.entry, params, self.settings.env_manager, self.experiment_id, resume
        )
        self.ran += 1
        say(f"{job.entry} done in {time.time() - started:.0f} s (run {run_id})")
        return run_id

    def try_run(self, job: profiles.Job, reuse: bool = True) -> str | None:
        """Like run(), but a failed job is recorded and the pipeline goes on."""
        try:
            return self.run(job, reuse)
        except UserError as exc:
            self.failed.append(str(exc))
            say(f"FAILED: {exc}")
            return None


def cache_exists(run) -> bool:
    """A prepare run is only reused while its cache is still on this machine (data/ may
    have been cleaned, or the run came from another machine through a shared server)."""
    return data.find_cache(run.data.tags.get("dataset.digest") or "-") is not None


def evaluate_all(chain: Chain, train_ids: list[str]) -> None:
    """One evaluate run for every train run not evaluated yet (Python starts once)."""
    todo = []
    for run_id in dict.fromkeys(train_ids):
        if tracking.get_run(run_id).data.tags.get("evaluated") == "true":
            say(f"evaluate run_id={run_id}: already evaluated")
        else:
            todo.append(run_id)
    if todo:
        settings = EvaluateSettings(run_id=",".join(todo))
        chain.try_run(profiles.Job("evaluate", settings, ("run_id",)), reuse=False)


def run_profile(profile: profiles.Profile, chain: Chain, main_run_id: str) -> str:
    """prepare -> train -> tune -> evaluate -> compare; returns the compare run's id."""
    prepared = chain.run(profile.prepare, usable=cache_exists)  # nothing goes on without it
    digest = tracking.get_run(prepared).data.tags["dataset.digest"]
    tracking.set_tags(main_run_id, {"dataset.digest": digest})
    split = profile.prepare.settings.split
    data_params = {
        "dataset": digest,
        "val_fraction": split.val_fraction,
        "split_seed": split.split_seed,
    }
    train_ids = [chain.try_run(job.with_params(**data_params)) for job in profile.train]
    for job in profile.tune:
        tuned = chain.try_run(job.with_params(**data_params))
        final = tracking.get_run(tuned).data.tags.get("tune.final_run_ids") if tuned else None
        train_ids += final.split(",") if final else []
    evaluate_all(chain, [i for i in train_ids if i])
    return chain.run(profile.compare, reuse=False)
