"""The search: samplers and pruners (registries), the study's name, creating or joining it,
its parent run, and the objective (one nested MLflow run per trial).

Runs: the study's parent run is the run of the worker that created the study (study user
attribute `mlflow_parent_run_id`); every trial is a child run of it, whichever worker ran
it, and each side names the other (trial user attributes `mlflow_run_id` and
`mlflow_run_url`; run tags `trial.number` and `optuna.study`).

Workers: the study is created once and later workers (parallel, or a re-run of the same
command) join it. The study holds exactly `n_trials` finished (COMPLETE or PRUNED) trials
at the end: a trial that would exceed the cap because other workers started theirs first
ends FAIL before it trains (user attribute `surplus`) and stops its worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings

import optuna

from pipeline import config, files, fit, identity, interrupts, tracking
from pipeline.config import TuneSettings
from pipeline.errors import UserError
from pipeline.study import space
from pipeline.study.storage import fail_orphaned_trials, queue_again, reason

PARENT_ATTR = "mlflow_parent_run_id"
SETTINGS_ATTR = "settings"  # decided_by() of the tune that created the study
BASE_ATTR = "base_settings"  # and its base training settings (identity.resolved), by name
PARENT_WAIT_S = 30  # how long a joining worker waits for the creator to name the parent run
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
AHEAD = (*COUNTED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
METRIC = "val_accuracy"  # what every trial maximises (the dashboard's objective name)


class OddTrialPruner(optuna.pruners.BasePruner):
    """For tests: prunes every odd-numbered trial at its first report, so a study has both
    pruned and complete trials (a best trial and importances) whatever the accuracies."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1


class KeepsDefaultTrial(optuna.pruners.HyperbandPruner):
    """Optuna's HyperbandPruner that never stops trial 0, the enqueued default configuration
    (open_study enqueues it when it creates the study, and Optuna numbers an enqueued trial
    at once), nor a retry of it (is_default_trial).

    Hyperband still sees trial 0's values (it records them in its rungs), so the default is
    what the next trials at a rung are compared with, and a study always completes at least
    that one trial, which the final retrain is held against.

    A subclass, not a wrapper around the pruner, so Optuna treats it as a Hyperband pruner:
    when `isinstance(study.pruner, HyperbandPruner)` it hands samplers a study of the trial's
    own bracket (optuna.pruners._filter_study). That study filters `get_trials` only; Optuna
    5's TPE reads `_get_trials`, so TPE still models every bracket's trials, and samples
    exactly as it did behind the wrapper (checked: the same 40 proposals; bench_pruning's
    figures unchanged). The brackets are laid out at once when max_resource is explicit."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(self._max_resource, int):  # "auto" needs the study: the first prune
            self._try_initialization(None)

    def prune(self, study, trial) -> bool:
        return super().prune(study, trial) and not is_default_trial(trial)


def is_default_trial(trial) -> bool:
    """Trial 0, the enqueued base configuration, or a retry of it (storage.queue_again:
    a stopped or dead worker's trial runs again under a new number)."""
    return trial.number == 0 or trial.system_attrs.get("failed_trial") == 0


def hyperband(epochs: int) -> optuna.pruners.BasePruner:
    """Rungs at 1, 3, 9, ... epochs (reduction factor 3), in the brackets whose first rung
    comes at most halfway through a trial: with 12 epochs, two brackets (first rungs at 1
    and 3 epochs), not Optuna's three.

    Optuna reads max_resource only to count the brackets, floor(log3(max_resource)) + 1,
    and to share the trials among them; the rungs sit at 1, 3, 9, ... whatever its value,
    and no trial is ever stopped at max_resource. Given the trials' epochs it adds a bracket
    whose first rung comes late (9 of 12 epochs): 3 in 17 trials ran at least 9 epochs, for
    little saved (the paper's last bracket is plain random search, which the unpruned study
    already is). Given half the epochs, a study of 30 trials of up to 12 epochs trained 35%
    of the unpruned epochs instead of 44%, both 0.06 points below the unpruned best
    (bench/bench_pruning.py, 3 seeds, README "Performance").

    bootstrap_count=1: a trial reaching a rung first, with nothing to compare it with, is
    pruned there instead of promoted (except the default trial, see KeepsDefaultTrial).
    With Optuna's default (0), every bracket promoted its first trials at every rung (50% of
    the unpruned epochs in the study above). Optuna needs an explicit max_resource for it.
    """
    return KeepsDefaultTrial(
        min_resource=1, max_resource=max(1, epochs // 2), reduction_factor=3, bootstrap_count=1
    )


# name -> maker(epochs per trial): steps are epochs, counted from 1
PRUNERS = {
    # warm-up 1 lets a trial be pruned after epoch 1
    "median": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    "hyperband": hyperband,
    "none": lambda epochs: optuna.pruners.NopPruner(),
    "odd_trials": lambda epochs: OddTrialPruner(),
}
SAMPLERS = {
    # multivariate said, not left to the default: Optuna 5 defaults to it, the 4.9 that
    # pyproject.toml admits did not (the same seed drew other trials there)
    "tpe": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=5, multivariate=True
    ),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


class Surplus(Exception):
    """This trial would take the study past n_trials."""

    def __init__(self, number: int, n_trials: int) -> None:
        super().__init__(f"the study already has {n_trials} trials; trial {number} not run")
        self.number = number


class QuietSurplus(logging.Filter):
    """Optuna logs a surplus trial (the cap reached while other workers ran the last trials:
    the designed stop of every worker but one) as a failed trial, with a traceback and a
    second line; one line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Surplus):
            self.numbers.add(exc.number)
            record.msg, record.args = str(exc), ()
            record.exc_info = record.exc_text = None
            return True
        text = record.getMessage()
        return not any(text == f"Trial {n} failed with value None." for n in self.numbers)


def decided_by(settings: TuneSettings, digest: str) -> dict[str, str]:
    """What decides a study's trials: the data, the base training settings' key and seed
    (every trial trains with it, and draws its subset with it), the search space and lr
    range, the pruner and the sampler. Recorded on the study when it is created (user
    attribute `settings`) and checked when a tune joins it."""
    b = settings.base
    decides = {
        "data": digest,
        "config": identity.config_key(b),
        "seed": b.seed,
        "space": settings.space,
        "lr_min": settings.lr_min,
        "lr_max": settings.lr_max,
        "pruner": settings.pruner,
        "sampler": settings.sampler,
    }
    return {key: str(value) for key, value in decides.items()}


def study_name(settings: TuneSettings, digest: str) -> str:
    """The given name, or one derived from what decides the study: readable (model, space,
    epochs, subset, data) and a hash of all of it (decided_by). Without the hash a tune
    with other settings joined an earlier study and reported its trials; a rerun or a
    parallel worker of the same command gets the same name, so it resumes or shares the
    study."""
    if settings.study_name != "auto":
        return settings.study_name
    b = settings.base
    tail = hashlib.sha256(repr(sorted(decided_by(settings, digest).items())).encode())
    return f"{b.model}-{settings.space}-e{b.epochs}-s{b.subset}-{digest[:8]}-{tail.hexdigest()[:6]}"


def check_joinable(study, asked: dict[str, str], base: dict | None = None) -> None:
    """A tune joins a study only with the settings that created it (studies of older
    versions recorded none): a trial's value would otherwise mean something else. The
    message names each setting that differs; the base training settings by name where the
    study recorded them (`base`: identity.resolved of this tune's), not by their hash."""
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if not recorded or recorded == asked:
        return
    theirs = study.user_attrs.get(BASE_ATTR)
    named = (
        [  # a setting newer than the study's record reads as None there
            f"{n}={theirs.get(n)} (here {v})" for n, v in (base or {}).items() if theirs.get(n) != v
        ]
        if theirs
        else []
    )
    differ = []
    for key in (k for k in asked if recorded.get(k) != asked[k]):
        if key == "config" and named:
            differ += named
        else:
            differ.append(f"{key}={recorded.get(key)} (here {asked[key]})")
    raise UserError(
        f"study {study.study_name} was created with other settings: {', '.join(differ)};"
        " repeat the command that created it, or choose another study_name"
    )


def open_study(name: str, storage, settings: TuneSettings, digest: str):
    """(study, created): create it, or join it when another worker (or run) created it with
    the same settings. Creation is atomic in RDB and journal storages, so exactly one
    worker is the creator."""
    pruner = PRUNERS[settings.pruner](settings.base.epochs)
    asked = decided_by(settings, digest)
    try:
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction="maximize",
                sampler=SAMPLERS[settings.sampler](settings.sampler_seed),
                pruner=pruner,
            )
        except optuna.exceptions.DuplicatedStudyError:
            # the same seed in every worker would make them propose the same configurations
            seed = (settings.sampler_seed * 1_000_003 + os.getpid()) % 2**31
            sampler = SAMPLERS[settings.sampler](seed)
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
            joined = True
        else:
            joined = False
    except Exception as exc:
        raise UserError(f"cannot open study {name}: {reason(exc)}") from None
    base = identity.resolved(settings.base)
    if joined:
        check_joinable(study, asked, base)
        return study, False
    study.set_user_attr(SETTINGS_ATTR, asked)
    study.set_user_attr(BASE_ATTR, base)
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])
    study.enqueue_trial(space.defaults(settings), skip_if_exists=True)
    return study, True


def parent_run(study, own_run_id: str, created: bool) -> str:
    """The study's parent run: the creator's run. A joining worker waits briefly for the
    creator to record it, and takes over when it never comes or is gone from the store."""
    if not created:
        deadline = time.monotonic() + PARENT_WAIT_S
        while True:
            parent = study.user_attrs.get(PARENT_ATTR)
            if parent and tracking.is_active(parent):
                return parent
            if parent or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    study.set_user_attr(PARENT_ATTR, own_run_id)
    return own_run_id


def counted(study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def check_not_surplus(study, trial, n_trials: int) -> None:
    """Raise Surplus when n_trials trials numbered before this one are finished or still
    going: trial numbers are unique and ordered, so exactly the first n_trials count."""
    ahead = [t for t in study.get_trials(deepcopy=False, states=AHEAD) if t.number < trial.number]
    if len(ahead) >= n_trials:
        trial.set_user_attr("surplus", True)
        study.stop()
        raise Surplus(trial.number, n_trials)


def pruning_hook(trial):
    def report(epoch: int, metrics: dict) -> None:
        trial.report(metrics[METRIC], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return report


def end_trial_run(run_id: str | None, state: str, error: BaseException | None = None) -> None:
    """Tag the Optuna state; end the run if a failure left it RUNNING (before training
    opened it, or before it started at all), KILLED when a signal stopped the trial."""
    if run_id is None:  # the run was never created
        return
    tags = {"trial.state": state}
    status = tracking.run_status(error) if state == "FAIL" else "FINISHED"
    if status == "FAILED":
        tags["error"] = f"{type(error).__name__}: {error}"[:5000]
    tracking.set_tags(run_id, tags)
    if state == "FAIL":
        tracking.close_run(run_id, status)
    files.discard(config.checkpoint_path(run_id))  # pruned and failed trials leave one


def start_trial_run(trial, parent: str, model: str, run_tags: dict[str, str]) -> tuple[str, dict]:
    """The trial's child run, linked both ways; returns (run id, its tags)."""
    tags = {"pipeline.step": "trial", "trial.number": str(trial.number), **run_tags}
    run_id = tracking.child_run(parent, identity.trial_run_name(trial.number, model), tags)
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("mlflow_run_url", tracking.run_url(run_id))
    # closed by the next worker if this one dies (see storage.close_and_retry)
    trial.set_user_attr("mlflow_worker_run_id", run_tags["tune.worker_run_id"])
    return run_id, tags


def objective_for(study, settings: TuneSettings, parent: str, run_tags: dict[str, str]):
    """`run_tags`: the study's tags for every child run (see child_tags)."""

    def objective(trial) -> float:
        check_not_surplus(study, trial, settings.n_trials)
        params = space.suggest(trial, settings)
        run_id, state, error = None, "FAIL", None
        try:
            with interrupts.deferred():  # a signal now would leave the new run RUNNING
                run_id, tags = start_trial_run(trial, parent, settings.base.model, run_tags)
            trial_settings = space.trial_settings(settings.base, params)
            # trials are stopped by the pruner, not by patience
            job = fit.prepare(trial_settings.replace(patience=trial_settings.epochs))
            _, summary = fit.run(
                job,
                step="trial",
                name=identity.trial_run_name(trial.number, trial_settings.model),
                run_id=run_id,
                hook=pruning_hook(trial),
                tags=tags,
                finished_on=(optuna.TrialPruned,),
            )
            state = "COMPLETE"
            # what the configuration's logged model scores (with restore_best=false the
            # last epoch's, not the best epoch's), as the leaderboard ranks it
            return summary["logged_val_accuracy"]
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except BaseException as exc:
            error = exc
            if tracking.run_status(exc) == "KILLED":  # Ctrl-C or SIGTERM, as runs record it
                # a stopped trial is no verdict on its configuration: the same command runs
                # it again (the default trial was lost for good, and the retrain was held
                # against no baseline)
                with interrupts.held():
                    queue_again(study, study._storage.get_trial(trial._trial_id))
            raise
        finally:
            with interrupts.held():  # a second signal must not leave the trial's run RUNNING
                end_trial_run(run_id, state, error)

    return objective


def best_so_far(parent: str):
    """A study callback: the parent run's `best_trial_val_accuracy`, step = trial number."""

    def log(study, trial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = study.best_value
            tracking.log_metrics(parent, {"best_trial_val_accuracy": best}, step=trial.number)

    return log


def stop_if_signalled(study, trial) -> None:
    """A study callback: a signal held while Optuna told the trial ends the search now."""
    if interrupts.received():
        raise KeyboardInterrupt


def search(study, settings: TuneSettings, parent: str, run_tags: dict[str, str]) -> bool:
    """Run trials until the study holds n_trials finished ones (or the timeout); True when
    the timeout stopped this worker first."""
    fail_orphaned_trials(study)  # a killed worker's trial, where no heartbeat failed it
    finished = counted(study)
    remaining = settings.n_trials - finished
    if remaining <= 0:
        print(
            f"study {study.study_name} already has {finished} finished trials"
            f" (n_trials={settings.n_trials})",
            file=sys.stderr,
        )
        return False
    started = time.monotonic()
    quiet, logger = QuietSurplus(), logging.getLogger("optuna.study._optimize")
    logger.addFilter(quiet)
    objective = objective_for(study, settings, parent, run_tags)

    def interruptible(trial) -> float:
        with interrupts.allowed():
            return objective(trial)

    try:
        # Optuna's own code (ask, tell, callbacks) holds a signal: one between a trial's end
        # and its tell left the trial RUNNING (a finished trial failed and run again by the
        # next tune) and surfaced as Optuna's UnboundLocalError (exit 1, not 130). Only the
        # objective is interrupted; a signal held meanwhile stops the search after the tell
        with interrupts.deferred():
            study.optimize(
                interruptible,
                n_trials=remaining,  # this worker's bound; failed trials count here, not the cap
                timeout=settings.timeout or None,
                callbacks=[
                    optuna.study.MaxTrialsCallback(settings.n_trials, states=COUNTED),
                    best_so_far(parent),
                    stop_if_signalled,
                ],
                catch=(Exception,),  # one failing configuration must not end the search
            )
    finally:
        logger.removeFilter(quiet)
    # Optuna starts no trial once the timeout has passed: that, not the cap, ended it
    late = bool(settings.timeout) and time.monotonic() - started >= settings.timeout
    return late and counted(study) < settings.n_trials
