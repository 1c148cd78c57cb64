"""The main job: a profile's steps as child runs of one main run, in order
prepare -> train and tune -> evaluate -> compare.

As in MLflow's multistep example, each step is this project's own entry point run as a child
of the main run, and a finished step whose entry point, settings, code version and data all
match is reused, so an interrupted pipeline continues where it stopped; a killed train run
with a checkpoint is resumed, not started again. `compare` always runs anew: its input is
the set of runs. Independent jobs (the train runs, the workers of a study, evaluations) go
to the executor (pipeline/executors.py): one after another, or side by side on Ray. A job
that fails is reported and the rest go on; compare ranks what finished and lists what
failed, and main exits non-zero at the end.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import config, data, executors, profiles, tracking
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
    executor: object  # executors.Local or executors.Ray
    reused: set[str] = field(default_factory=set)  # run ids: a study's workers share one
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
        same = self.matches(job)
        for status in ("KILLED", "FAILED"):
            for run in tracking.runs(query.format(status)):
                if same(run.data.params) and config.checkpoint_path(run.info.run_id).is_file():
                    return run.info.run_id
        return None

    def finished(self, job: profiles.Job, usable=None) -> str | None:
        found = tracking.finished_step_run(job.entry, self.code_version, self.matches(job), usable)
        if found and found not in self.reused:
            self.reused.add(found)
            say(f"{job.entry} {job.shown()}: reusing finished run {found}")
        return found

    def launch(self, job: profiles.Job, reuse: bool = True) -> executors.Launch:
        resume = self.resumable(job) if reuse else None
        params = {**job.params(), **({"resume": "true"} if resume else {})}
        say(f"{job.entry} {job.shown()}: " + (f"resuming run {resume}" if resume else "running"))
        torch = job.entry in ("train", "tune") and not getattr(job.settings, "is_sklearn", False)
        return executors.Launch(job.entry, params, resume, torch)

    def run_all(
        self, jobs: list[profiles.Job], reuse: bool = True, usable=None
    ) -> list[str | None]:
        """Each job's run id (None for a failed one): finished matching runs are reused, the
        rest run on the executor; failures are recorded and the pipeline goes on."""
        found = [self.finished(job, usable) if reuse else None for job in jobs]
        todo = [i for i, run_id in enumerate(found) if run_id is None]
        started = time.time()
        # one at a time: each job's "running" line when it starts; on Ray: all submitted
        batches = [todo] if isinstance(self.executor, executors.Ray) else [[i] for i in todo]
        outcomes = []
        for batch in batches:
            outcomes += self.executor.map([self.launch(jobs[i], reuse) for i in batch])
        for i, outcome in zip(todo, outcomes, strict=True):
            self.ran += 1
            if outcome.error:
                self.failed.append(outcome.error)
                say(f"FAILED: {outcome.error}")
            else:
                found[i] = outcome.run_id
        if todo:
            say(f"{len(todo)} job(s) done in {time.time() - started:.0f} s")
        return found

    def run(self, job: profiles.Job, reuse: bool = True, usable=None) -> str:
        """One job that the rest depends on (prepare, compare): its failure stops main."""
        (run_id,) = self.run_all([job], reuse, usable)
        if run_id is None:
            raise UserError(self.failed.pop())
        return run_id


def prepared_usable(run) -> bool:
    """A prepare run is only reused while its cache is still on this machine (data/ may
    have been cleaned, or the run came from another machine through a shared server), and
    when it read the folder this `source` reads now (with source=auto, FASHION_MNIST_DIR
    decides: other files would otherwise pass for the data prepared before)."""
    read = run.data.tags.get("dataset.source")
    source = run.data.params.get("source", "auto")
    if not read or not Path(read).is_relative_to(data.source_path(source)):
        return False
    return data.find_cache(run.data.tags.get("dataset.digest") or "-") is not None


def study_workers(chain: Chain, job: profiles.Job) -> list[profiles.Job]:
    """The tune jobs of one study: several workers side by side on Ray when the Optuna
    storage is a server (SQLite and journal files are not for parallel writers: one
    worker), each with final=false; the retrain follows once the study is complete."""
    parallel = isinstance(chain.executor, executors.Ray) and chain.executor.workers > 1
    if not (parallel and job.settings.storage.startswith(config.SERVER_STORAGES)):
        return [job]
    return [job.with_params(final=False)] * chain.executor.workers


def retrain_ids(tags: dict[str, str]) -> list[str]:
    """The retrain runs a tune run names (tag tune.final_run_ids, comma-separated)."""
    return [i for i in tags.get("tune.final_run_ids", "").split(",") if i]


def concluded(run) -> bool:
    """A tune run `main` may reuse: its study was complete, and its best configuration was
    retrained (tune.final_run_ids, none of them deleted since) unless it ran with
    final=false. A deleted retrain's row left the leaderboard without a word."""
    tags = run.data.tags
    ids = retrain_ids(tags)
    retrained = run.data.params.get("final") == "false" or (
        bool(ids) and all(tracking.is_active(i) for i in ids)
    )
    return tags.get("tune.complete") == "true" and retrained


def tune_all(chain: Chain, jobs: list[profiles.Job]) -> list[str]:
    """Every study's retrained runs (to evaluate)."""
    final = []
    for job, workers in ((job, study_workers(chain, job)) for job in jobs):
        ran = chain.ran
        ids = chain.run_all(workers, usable=concluded)
        if len(workers) > 1 and all(ids):  # the study is complete: retrain its best once
            # its finished retrain job is reused while no worker ran now (a rerun of main
            # started another tune run each time, which only found the retrain done)
            ids = chain.run_all([job], reuse=chain.ran == ran, usable=concluded)
        for run_id in ids:
            tags = tracking.get_run(run_id).data.tags if run_id else {}
            final += retrain_ids(tags)
    return final


def evaluate_all(chain: Chain, train_ids: list[str]) -> None:
    """Every train run not evaluated yet: one evaluate run for all of them (Python starts
    once) with executor=local; on Ray one evaluate run per worker, side by side."""
    todo = []
    for run_id in dict.fromkeys(train_ids):
        if tracking.get_run(run_id).data.tags.get("evaluated") == "true":
            say(f"evaluate run_id={run_id}: already evaluated")
        else:
            todo.append(run_id)
    width = chain.executor.workers if isinstance(chain.executor, executors.Ray) else 1
    groups = [todo[i::width] for i in range(width)]
    jobs = [
        profiles.Job("evaluate", EvaluateSettings(run_id=",".join(ids)), ("run_id",))
        for ids in groups
        if ids
    ]
    chain.run_all(jobs, reuse=False)


def run_profile(profile: profiles.Profile, chain: Chain, main_run_id: str) -> str:
    """prepare -> train and tune -> evaluate -> compare; returns the compare run's id."""
    prepared = chain.run(profile.prepare, usable=prepared_usable)  # nothing goes on without it
    digest = tracking.get_run(prepared).data.tags["dataset.digest"]
    tracking.set_tags(main_run_id, {"dataset.digest": digest})
    split = profile.prepare.settings.split
    on_data = {
        "dataset": digest,
        "val_fraction": split.val_fraction,
        "split_seed": split.split_seed,
    }
    train_ids = chain.run_all([job.with_params(**on_data) for job in profile.train])
    train_ids += tune_all(chain, [job.with_params(**on_data) for job in profile.tune])
    evaluate_all(chain, [i for i in train_ids if i])
    return chain.run(profile.compare, reuse=False)
