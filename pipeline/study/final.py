"""After the search: the best configuration retrained on fresh seeds and evaluated, and the
study's plots and tables on the parent run.

The best trial's validation accuracy is the best of many draws, so it is optimistic. Its
configuration is therefore trained again on `final_seeds` seeds none of the trials used;
those runs are ordinary train runs (children of the parent, tagged `tune.tuned=true` with
the number of trials behind them) and compete on the leaderboard with their own, unbiased
validation accuracy. Each best trial is retrained once, whoever concludes the study.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np
import optuna
import optuna.visualization.matplotlib as vis

from pipeline import config, evaluation, fit, identity, interrupts, tracking
from pipeline.config import TuneSettings
from pipeline.study import search, space

PLOTS = {
    "optimization_history.png": vis.plot_optimization_history,
    "param_importances.png": vis.plot_param_importances,
    "parallel_coordinate.png": vis.plot_parallel_coordinate,
    "intermediate_values.png": vis.plot_intermediate_values,
}
FINAL_KEYS = ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro")


def final_seeds(settings: TuneSettings) -> list[int]:
    """Seeds none of the trials used (they all train with base.seed), wrapping past the
    largest seed (a study with seed=4294967295 failed at its retrain, after every trial)."""
    span = config.SEED_MAX + 1
    return [(settings.base.seed + 1 + i) % span for i in range(settings.final_seeds)]


def retrained(study, settings: TuneSettings) -> list[str] | None:
    """The retrain runs of the current best trial, when all of them finished evaluated with
    this command's final_epochs and seeds (another final_epochs or final_seeds retrains)
    and none was deleted since."""
    attrs = study.user_attrs
    ids = attrs.get("final_run_ids") or []
    asked = {
        "final_best_trial": study.best_trial.number,
        "final_epochs": settings.final_epochs,
        "final_seeds": final_seeds(settings),
    }
    if not ids or any(attrs.get(key) != value for key, value in asked.items()):
        return None
    for run_id in ids:
        try:
            run = tracking.get_run(run_id)
        except Exception:
            return None
        if run.info.status != "FINISHED" or run.data.tags.get("evaluated") != "true":
            return None
        if run.info.lifecycle_stage != "active":
            return None
    return ids


LOCK_OWNER = "worker_run_id"


def lock_name(study) -> str:
    return f"{study.study_name}.final-lock"


def _held(storage, name: str) -> tuple[int, str | None]:
    """(the lock study's id, its holder's run id or None); KeyError when there is no lock."""
    lock = storage.get_study_id_from_name(name)
    return lock, storage.get_study_user_attrs(lock).get(LOCK_OWNER)


def claim(study, worker: str) -> str | None:
    """Take the study's retrain lock: None when this worker holds it now, else the run id of
    the worker that holds it. The lock is a study of its own (lock_name): creating a study
    is atomic in RDB and journal storages, so of two workers concluding at once exactly one
    retrains. A lock whose holder's run is no longer RUNNING (it crashed, or was killed and
    closed since) is removed and taken; one whose holder's run cannot be read is not. A
    job retried in its own run (Ray) takes back the lock its killed attempt held."""
    storage, name = study._storage, lock_name(study)
    for _ in range(3):
        try:
            # a signal or a failed request between creating the lock and naming its owner
            # left a lock without owner, which no worker would ever take
            with interrupts.deferred():
                lock = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
                try:
                    storage.set_study_user_attr(lock, LOCK_OWNER, worker)
                except BaseException:
                    with contextlib.suppress(Exception):
                        storage.delete_study(lock)
                    raise
            return None
        except optuna.exceptions.DuplicatedStudyError:
            pass
        try:
            lock, holder = _held(storage, name)
        except KeyError:  # released meanwhile
            continue
        if holder is None:  # its creator is naming itself right now
            return "(another worker)"
        if holder == worker:  # a retry in the same run (Ray): the attempt that took it died
            return None
        try:
            running = tracking.get_run(holder).info.status == "RUNNING"
        except Exception:  # a failed request (tracking.get_run says UserError for any)
            return holder  # is no proof that the holder died: two would retrain at once
        if running:
            return holder
        with contextlib.suppress(KeyError):  # another worker removed it first
            storage.delete_study(lock)
    return "(another worker)"


def release(study, worker: str) -> None:
    """Remove the retrain lock if `worker` still holds it (it may have been taken over)."""
    storage = study._storage
    with contextlib.suppress(KeyError):
        lock, holder = _held(storage, lock_name(study))
        if holder == worker:
            storage.delete_study(lock)


def retrain_one(settings, seed: int, parent: str, tags: dict[str, str]) -> str:
    """One retrain of the best configuration as a train run under the parent, evaluated.

    The run is created as the parent's child first, as a trial's is: the parent may be
    another process's run (the worker that created the study, finished long ago), and
    MLflow starts a nested run only under the active one."""
    job = fit.prepare(settings.replace(seed=seed))
    name = identity.train_run_name(job.settings, tuned=True)
    with interrupts.deferred():  # a signal now would leave the new run RUNNING
        run_id = tracking.child_run(parent, name, {"pipeline.step": "train", **tags})
    fit.run(job, name=name, run_id=run_id, tags=tags)
    evaluation.evaluate(evaluation.check(run_id))
    # as the evaluate step tags the runs it scores: here the tune run that retrained it
    tracking.set_tags(run_id, {"evaluated_by": tags["tune.worker_run_id"]})
    return run_id


def retrain_best(study, settings: TuneSettings, parent: str, run_tags: dict) -> list[str]:
    """Train the best trial's configuration on the fresh seeds; returns their run ids."""
    best = study.best_trial
    base = space.trial_settings(settings.base, best.params)
    base = base.replace(epochs=settings.final_epochs)
    tags = {
        **run_tags,
        "tune.tuned": "true",
        "tune.best_trial": str(best.number),
        "tune.n_trials": str(search.counted(study)),
    }
    ids = [retrain_one(base, seed, parent, tags) for seed in final_seeds(settings)]
    study.set_user_attr("final_run_ids", ids)
    study.set_user_attr("final_best_trial", best.number)
    study.set_user_attr("final_epochs", settings.final_epochs)
    study.set_user_attr("final_seeds", final_seeds(settings))
    return ids


def final_values(run_ids: list[str]) -> dict[str, float]:
    """The retrains' means, read from their runs (also when an earlier worker made them):
    the logged weights' validation accuracy and the test metrics their evaluation logged."""
    runs = [tracking.get_run(run_id).data.metrics for run_id in run_ids]
    out = {"final_val_accuracy": float(np.mean([m["logged_val_accuracy"] for m in runs]))}
    return out | {f"final_{k}": float(np.mean([m[k] for m in runs])) for k in FINAL_KEYS}


def default_trial(study, settings: TuneSettings):
    """The completed trial of the enqueued base configuration, if there is one."""
    defaults = space.defaults(settings)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.params == defaults:
            return trial
    return None


def log_study(study, settings: TuneSettings, run_id: str) -> None:
    """Plots, trials table, best parameters and the search space on the parent run."""
    for name, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():  # the matplotlib backend is "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # singular axis limits
                axes = plot(study)
        except Exception as exc:  # e.g. importances need two completed trials
            note = f"not drawn: {type(exc).__name__}: {exc}\n"
            tracking.log_text(note, name.replace(".png", ".txt"), run_id)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        tracking.log_figure(figure, name, run_id)
    tracking.log_frame(study.trials_dataframe(), "trials.csv", run_id)
    tracking.log_json(study.best_trial.params, "best_params.json", run_id)


def log_outcome(study, settings: TuneSettings, parent: str, result: dict) -> None:
    """The study's summary metrics, plots and tables on the parent run."""
    best = study.best_trial
    metrics = {k: float(v) for k, v in result.items()}
    # best_trial_val_accuracy is a curve over completed trials (search.best_so_far): its
    # final value goes at the best trial's own step, where the curve has it already (a
    # worker that ran no trial still logs it), never at a trial number that does not exist,
    # and only once: a second point at that step drew the curve back to it in the UI
    best_point = {"best_trial_val_accuracy": metrics.pop("best_trial_val_accuracy")}
    if best.number not in tracking.metric_steps(parent, "best_trial_val_accuracy"):
        tracking.log_metrics(parent, best_point, step=best.number)
    # each point once: a re-run that changed nothing added the same points again, and so
    # would the retrain that follows a summary by final=false workers (main on Ray)
    step = len(study.trials)
    fresh = {k: v for k, v in metrics.items() if (step, v) not in tracking.metric_points(parent, k)}
    if fresh:
        tracking.log_metrics(parent, fresh, step=step)
    log_study(study, settings, parent)
    if not settings.final and study.user_attrs.get("final_best_trial") != best.number:
        # two workers, one with final=false, could both end without a retrain and exit 0
        print(
            f"study {study.study_name} is complete; its best trial {best.number} is not"
            " retrained (final=false): run the same command with --final true to retrain"
            " and evaluate it",
            file=sys.stderr,
        )


def finish(study, settings: TuneSettings, parent: str, run_tags: dict) -> dict | None:
    """Conclude a complete study: retrain and evaluate its best configuration (once per best
    trial; not with final=false) and log the outcome, plots and tables on the parent run.
    None when another worker is concluding it right now."""
    best = study.best_trial
    states = [t.state for t in study.trials]
    result = {
        "n_trials": search.counted(study),  # finished ones: failed and surplus trials never count
        "n_pruned": states.count(optuna.trial.TrialState.PRUNED),
        "best_trial_val_accuracy": best.value,
    }
    default = default_trial(study, settings)
    if default is not None:  # the configuration the search started from, for comparison
        result["default_trial_val_accuracy"] = default.value
    worker = run_tags["tune.worker_run_id"]
    holder = claim(study, worker)  # also without a retrain: one worker logs the summary
    if holder is not None:  # two workers concluding at once retrained it twice
        what = "retrained" if settings.final else "summarised"
        where = "the tag tune.final_run_ids of " if settings.final else ""
        print(
            f"best trial {best.number} is being {what} by the tune run {holder}; see"
            f" {where}the parent run {parent}",
            file=sys.stderr,
        )
        return None
    try:  # checked under the lock: another worker may have just retrained it
        ids = retrained(study, settings) if settings.final else None
        if ids:
            print(f"best trial {best.number} was retrained already: runs {ids}", file=sys.stderr)
        elif settings.final:
            ids = retrain_best(study, settings, parent, run_tags)
    finally:
        release(study, worker)
    if ids:
        result |= final_values(ids)
        # on the parent, and on this worker's own run when it is another (`main` reads the
        # retrain runs to evaluate from the tune run it started)
        for run_id in dict.fromkeys([parent, worker]):
            tracking.set_tags(run_id, {"tune.final_run_ids": ",".join(ids)})
    log_outcome(study, settings, parent, result)
    # a parent killed (Ctrl-C) or failed before the study was complete showed the concluded
    # study as KILLED in the UI: its study is done, by this worker's re-run
    tracking.finish_continued(parent, {"tune.concluded_by": worker})
    final = {"final_run_ids": ids} if ids else {}
    return {**final, **result, "best_params": best.params}
