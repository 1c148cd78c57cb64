"""`tune`: an Optuna study over the training settings, one nested MLflow run per trial.

The only module that imports optuna. Trials are chosen on the validation split; the test
split is opened once, by evaluation of the retrained best configuration at the end.

Runs: the study's parent run is the run of the worker that created the study (its id is the
study user attribute `mlflow_parent_run_id`); every trial is a child run of it, whichever
worker ran it, and each side names the other (trial user attribute `mlflow_run_id`, run tags
`trial.number` and `optuna.study`). Every worker's own run is tagged with the study.

Workers: the study is created once and later workers (parallel, or a re-run of the same
command) join it; `n_trials` caps the study's finished trials (COMPLETE + PRUNED), so W
parallel workers overshoot it by at most W-1. With an RDB storage (SQLite, PostgreSQL,
MySQL) a running trial sends heartbeats; once a worker has been silent for `grace_s`, the
next worker to ask for a trial fails it, closes its MLflow runs and queues it again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import replace

from pipeline import cli, config
from pipeline.steps.train import add_train_args

DESCRIPTION = (
    "Search lr, optimizer, loss and flip (space=wide adds weight decay, batch size, "
    "augmentation and dropout) with Optuna on the validation split; retrain the best "
    "configuration and evaluate it on the test split."
)
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
SPACES = ("base", "wide")
BASELINE = {"lr": 1e-3, "optimizer": "adam", "loss": "ce", "flip": False}  # enqueued first
HEARTBEAT_S = 10  # default seconds between a running trial's heartbeats
GRACE_S = 30  # default seconds of silence after which a worker counts as dead
MAX_RETRY = 2  # a trial whose worker died is queued again at most this often
PARENT_WAIT_S = 30  # how long a joining worker waits for the creator to name the parent run
PARENT_ATTR = "mlflow_parent_run_id"
FINISHED_STATES = ("COMPLETE", "PRUNED")  # what counts towards n_trials


def storage_arg(text: str) -> str:
    value = str(text).strip()
    if value in ("", "default"):
        return "default"
    if "://" in value or value.startswith("journal:") or value.endswith((".log", ".journal")):
        return value
    raise argparse.ArgumentTypeError(
        f"storage {text!r}: use default, a SQLAlchemy URL (sqlite:///..., postgresql://...)"
        " or journal:<file> for an Optuna journal file"
    )


def redact(spec: str) -> str:
    """A storage URL without its password: it goes into tags, logs and messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", spec)


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("tune", DESCRIPTION)
    add_train_args(parser, tune=True)
    describe_shared_args(parser)
    add_search_args(parser)
    add_space_args(parser)
    add_storage_args(parser)
    add_final_args(parser)
    return parser


def describe_shared_args(parser: argparse.ArgumentParser) -> None:
    """Train's arguments mean slightly different things in a study: say so in -h."""
    helps = {
        "--model": f"registry name of a torch model: {', '.join(config.TORCH_MODEL_NAMES)}",
        "--epochs": "maximum epochs per trial (the pruner may stop a trial after any epoch)",
        "--batch_size": "images per optimizer step (space=wide searches 64, 128, 256)",
        "--subset": "training images per trial and for the retrain: 0 = the whole training"
        " split, else a stratified sample of this many",
        "--seed": "seed of model init, batch order and augmentation, and of the sampler"
        " (a worker joining an existing study mixes in its process id)",
    }
    for flag, text in helps.items():
        parser._option_string_actions[flag].help = text


def add_search_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--n_trials",
        "--n-trials",
        default=20,
        type=cli.int_at_least(1, "n_trials"),
        help="cap on the study's finished (complete or pruned) trials over all workers and"
        " re-runs; W parallel workers may overshoot it by W-1",
    )
    add(
        "--timeout",
        default=0,
        type=cli.float_in(0, 1e7, "timeout"),
        help="seconds after which this worker starts no new trial; 0 = no limit",
    )
    add(
        "--pruner",
        default="median",
        type=cli.choice(PRUNERS, "pruner"),
        help="stops weak trials on their per-epoch val_accuracy: median, hyperband or none",
    )
    add(
        "--sampler",
        default="tpe",
        type=cli.choice(SAMPLERS, "sampler"),
        help="tpe (seeded, multivariate) or random",
    )
    add(
        "--prune_all",
        "--prune-all",
        default=False,
        type=cli.boolean("prune_all"),
        help=argparse.SUPPRESS,
    )  # tests: prune every odd-numbered trial at its first epoch, keep the even ones


def add_space_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--space",
        default="base",
        type=cli.choice(SPACES, "space"),
        help="base: lr, optimizer, loss, flip; wide: also weight_decay, batch_size, augment, dropout",
    )
    add(
        "--lr_min",
        "--lr-min",
        default=1e-4,
        type=cli.float_in(0, 10, "lr_min", low_open=True),
        help="lowest learning rate searched (log scale)",
    )
    add(
        "--lr_max",
        "--lr-max",
        default=1e-2,
        type=cli.float_in(0, 10, "lr_max", low_open=True),
        help="highest learning rate searched (log scale)",
    )


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--storage",
        default="default",
        type=storage_arg,
        help="Optuna storage. default = sqlite:///mlruns/optuna.db (one worker at a time);"
        " for parallel workers a SQLAlchemy URL (postgresql+psycopg://user@host/db; put the"
        " password in ~/.pgpass, not here) or journal:<file> (no heartbeats)",
    )
    add(
        "--study_name",
        "--study-name",
        default="auto",
        help="auto = derived from model, space, epochs, subset and data; workers with the"
        " same name and storage share one study",
    )
    add(
        "--heartbeat_s",
        "--heartbeat-s",
        default=HEARTBEAT_S,
        type=cli.int_at_least(1, "heartbeat_s"),
        help="seconds between a running trial's heartbeats (RDB storages only)",
    )
    add(
        "--grace_s",
        "--grace-s",
        default=GRACE_S,
        type=cli.int_at_least(2, "grace_s"),
        help="seconds without heartbeat after which a trial's worker counts as dead: the"
        " next worker fails the trial, closes its run and queues it again",
    )


def add_final_args(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--final",
        default=True,
        type=cli.boolean("final"),
        help="once the study is complete, retrain the best configuration, evaluate it on"
        " the test split and log plots on the parent run (false for extra workers)",
    )
    add(
        "--final_epochs",
        "--final-epochs",
        default=10,
        type=cli.int_at_least(1, "final_epochs"),
        help="maximum epochs of the retrained best configuration (early stopping on val)",
    )
    add(
        "--patience",
        default=5,
        type=cli.int_at_least(1, "patience"),
        help="epochs without val_accuracy gain before the final retrain stops (trials are"
        " stopped by the pruner instead)",
    )


def check(args: argparse.Namespace) -> None:
    if args.lr_min >= args.lr_max:
        cli.fail(f"lr_min ({args.lr_min}) must be below lr_max ({args.lr_max})")
    if args.model in config.SKLEARN_MODEL_NAMES:
        cli.fail(f"tune searches torch training settings; {args.model} is a scikit-learn baseline")
    if args.grace_s <= args.heartbeat_s:
        cli.fail(
            f"grace_s ({args.grace_s}) must exceed heartbeat_s ({args.heartbeat_s}), else live"
            " workers count as dead"
        )


# --- storage, sampler, pruner ----------------------------------------------------------


def storage_spec(spec: str) -> str:
    """The storage the user means; plain postgresql:// gets the driver that is installed."""
    from importlib.util import find_spec

    if spec == "default":
        config.mlruns_dir().mkdir(parents=True, exist_ok=True)
        return config.default_optuna_storage()
    if spec.startswith("postgresql://") and not find_spec("psycopg2") and find_spec("psycopg"):
        return "postgresql+psycopg://" + spec.removeprefix("postgresql://")
    return spec


def is_journal(spec: str) -> bool:
    return spec.startswith("journal:") or spec.endswith((".log", ".journal"))


def open_storage(spec: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S):
    """An Optuna storage; fails in seconds, naming the (redacted) URL, when unusable."""
    from pathlib import Path

    import optuna

    spec = storage_spec(spec)
    try:
        if is_journal(spec):
            from optuna.storages.journal import JournalFileBackend

            path = Path(spec.removeprefix("journal:")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs = {}
        if spec.startswith(("postgresql", "mysql")):
            # connect_timeout: an unreachable server fails now, not after minutes;
            # pre_ping: a connection that idled through a long trial is replaced, not used.
            engine_kwargs = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
        return rdb_storage(
            spec,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=close_and_retry,
        )
    except Exception as exc:
        hint = "a writable file" if is_journal(spec) else "a running server and the URL"
        raise cli.UserError(
            f"cannot open Optuna storage {redact(spec)}: {reason(exc)}; check {hint}"
        ) from None


def rdb_storage(url: str, attempts: int = 5, **kwargs):
    """RDBStorage, retried while another worker creates the schema of a fresh database:
    concurrent CREATE TABLEs collide (PostgreSQL: duplicate key in pg_type; SQLite: table
    already exists). Connection errors are not retried: they fail at once."""
    import random
    import warnings

    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.DatabaseError as exc:
            collision = isinstance(
                exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError
            )
            if attempt == attempts - 1 or not (collision or "already exists" in str(exc)):
                raise
            time.sleep(0.5 + random.random())  # jitter: the workers must not collide again


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0][:300]) if text else type(exc).__name__


def close_and_retry(study, trial) -> None:
    """A trial whose worker stopped sending heartbeats (killed): close its trial run FAILED
    and the dead worker's own run KILLED (nothing else ever would: NOTES.md), then queue the
    same parameters again. Optuna calls this from the next worker's `ask`."""
    import optuna

    from pipeline.steps.train import checkpoint_path

    run_id = trial.user_attrs.get("mlflow_run_id")
    close_run(run_id, "FAILED", dead_worker_tags(trial))
    close_run(trial.user_attrs.get("mlflow_worker_run_id"), "KILLED", {})
    if run_id:
        checkpoint_path(run_id).unlink(missing_ok=True)  # when the dead worker shared mlruns/
    # the retry is a new trial with a run of its own: it must not inherit the dead run's id
    trial.user_attrs = {"retry_of_trial": trial.number}
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def dead_worker_tags(trial) -> dict:
    return {
        "trial.state": "FAIL",
        "error": f"worker sent no heartbeat for the grace period (killed?); trial {trial.number}"
        f" is queued again unless it was retried {MAX_RETRY} times already",
    }


def close_run(run_id: str | None, status: str, tags: dict) -> None:
    """End a run left RUNNING; a tracking error is reported, never fatal to the study."""
    if not run_id:
        return
    import mlflow

    client = mlflow.MlflowClient()
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, status)
    except Exception as exc:
        print(f"warning: could not close MLflow run {run_id}: {reason(exc)}", file=sys.stderr)


def make_sampler(name: str, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def make_pruner(name: str, prune_all: bool):
    import optuna

    if prune_all:
        return odd_trial_pruner()
    return {
        # steps are epochs, counted from 1: warm-up 1 lets a trial be pruned after epoch 1
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }[name]()


def odd_trial_pruner():
    """For tests: prunes every odd-numbered trial at its first report, so a study has both
    pruned and complete trials (a best trial and importances) whatever the accuracies."""
    import optuna

    class OddTrialPruner(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number % 2 == 1

    return OddTrialPruner()


# --- the search space ------------------------------------------------------------------


def suggest(trial, args) -> dict:
    """Optuna parameter names equal the train parameters they set."""
    params = {
        "lr": trial.suggest_float("lr", args.lr_min, args.lr_max, log=True),
        "optimizer": trial.suggest_categorical("optimizer", list(config.OPTIMIZERS)),
        "loss": trial.suggest_categorical("loss", list(config.LOSSES)),
        "flip": trial.suggest_categorical("flip", [False, True]),
    }
    if args.space == "wide":
        params["weight_decay"] = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        params["batch_size"] = trial.suggest_categorical("batch_size", [64, 128, 256])
        params["augment"] = trial.suggest_categorical(
            "augment", ["none", "shift", "rotate,shift,zoom,shear"]
        )
        params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    return params


def search_space(args) -> dict:
    space = {
        "lr": [args.lr_min, args.lr_max, "log"],
        "optimizer": config.OPTIMIZERS,
        "loss": config.LOSSES,
        "flip": [False, True],
    }
    if args.space == "wide":
        space.update(
            weight_decay=[1e-6, 1e-2, "log"],
            batch_size=[64, 128, 256],
            augment=["none", "shift", "rotate,shift,zoom,shear"],
            dropout=[0.0, 0.5],
        )
    return space


def baseline(args) -> dict:
    # an lr outside [lr_min, lr_max] would be used anyway, with a warning: clamp it instead
    return {**BASELINE, "lr": min(max(BASELINE["lr"], args.lr_min), args.lr_max)}


def trial_config(base: config.TrainConfig, params: dict) -> config.TrainConfig:
    settings = dict(params)
    if "augment" in settings:
        settings["augment"] = cli.choices_list(config.AUGMENTATIONS, "augment")(settings["augment"])
    return replace(base, **settings)


def base_config(args, epochs: int) -> config.TrainConfig:
    return config.TrainConfig(
        model=args.model,
        epochs=epochs,
        batch_size=args.batch_size,
        subset=args.subset,
        seed=args.seed,
        device=args.device,
        dataset=args.dataset,
        patience=args.patience,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
    )


# --- the study -------------------------------------------------------------------------


def study_name(args, digest: str) -> str:
    if args.study_name != "auto":
        return args.study_name
    return f"{args.model}-{args.space}-e{args.epochs}-s{args.subset}-{digest[:8]}"


def open_study(name: str, storage, args):
    """(study, created): create it, or join it when another worker (or run) created it.
    Creation is atomic in RDB and journal storages, so exactly one worker is the creator."""
    import optuna

    pruner = make_pruner(args.pruner, args.prune_all)
    try:
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction="maximize",
                sampler=make_sampler(args.sampler, args.seed),
                pruner=pruner,
            )
            return study, True
        except optuna.exceptions.DuplicatedStudyError:
            # same seed in every worker would make them propose the same configurations
            sampler = make_sampler(args.sampler, (args.seed * 1_000_003 + os.getpid()) % 2**31)
            return optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            ), False
    except Exception as exc:
        raise cli.UserError(f"cannot open study {name}: {reason(exc)}") from None


def run_is_active(run_id: str) -> bool:
    import mlflow

    try:
        return mlflow.MlflowClient().get_run(run_id).info.lifecycle_stage == "active"
    except Exception:  # not in this tracking store (it was reset, or another one is used)
        return False


def parent_run(study, own_run_id: str, created: bool) -> str:
    """The study's parent run: the creator's run. A joining worker waits briefly for the
    creator to record it, and takes over when it never comes or is gone from the store."""
    if not created:
        deadline = time.monotonic() + PARENT_WAIT_S
        while True:
            parent = study.user_attrs.get(PARENT_ATTR)
            if parent and run_is_active(parent):
                return parent
            if parent or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    study.set_user_attr(PARENT_ATTR, own_run_id)
    return own_run_id


def finished_count(study) -> int:
    import optuna

    done = tuple(optuna.trial.TrialState[s] for s in FINISHED_STATES)
    return len(study.get_trials(deepcopy=False, states=done))


def child_run(parent: str, name: str, tags: dict) -> str:
    """A run nested under the study's parent, which may belong to another process (so not
    `mlflow.start_run(parent_run_id=...)`, which insists on the active run as parent)."""
    import mlflow

    client = mlflow.MlflowClient()
    run = client.create_run(
        client.get_run(parent).info.experiment_id,
        run_name=name,
        tags={**tags, "mlflow.parentRunId": parent},
    )
    return run.info.run_id


def pruning_hook(trial):
    import optuna

    def report(epoch: int, metrics: dict) -> None:
        trial.report(metrics["val_accuracy"], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    return report


def end_trial_run(run_id: str, state: str) -> None:
    """Tag the Optuna state; a failure before train() opened the run leaves it RUNNING."""
    import mlflow

    from pipeline.steps.train import checkpoint_path

    mlflow.MlflowClient().set_tag(run_id, "trial.state", state)
    if state == "FAIL":
        close_run(run_id, "FAILED", {})
    checkpoint_path(run_id).unlink(missing_ok=True)  # pruned and failed trials leave one


def objective_for(args, base: config.TrainConfig, parent: str, run_tags: dict):
    """`run_tags`: the study's tags for every child run (see `child_tags`)."""
    import optuna

    from pipeline.steps import train as train_step

    def objective(trial) -> float:
        cfg = trial_config(base, suggest(trial, args))
        tags = {"pipeline.step": "trial", "trial.number": str(trial.number), **run_tags}
        run_id = child_run(parent, f"trial-{trial.number}", tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        # closed by the next worker if this one dies (see close_and_retry)
        trial.set_user_attr("mlflow_worker_run_id", run_tags["tune.worker_run_id"])
        state = "FAIL"
        try:
            _, summary = train_step.train(
                cfg,
                run_id=run_id,
                hook=pruning_hook(trial),
                tags=tags,
                finished_on=(optuna.TrialPruned,),
            )
            state = "COMPLETE"
            return summary["best_val_accuracy"]
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            end_trial_run(run_id, state)

    return objective


def search(study, args, parent: str, run_tags: dict) -> None:
    """Run trials until the study holds n_trials finished ones (or timeout)."""
    import optuna

    name = run_tags["optuna.study"]
    remaining = args.n_trials - finished_count(study)
    if remaining <= 0:
        print(f"study {name} already has {args.n_trials} finished trials: nothing to search")
        return
    base = base_config(args, args.epochs)
    base = replace(base, patience=args.epochs)  # trials are stopped by the pruner, not patience
    states = tuple(optuna.trial.TrialState[s] for s in FINISHED_STATES)
    study.optimize(
        objective_for(args, base, parent, run_tags),
        n_trials=remaining,  # this worker's bound; failed trials count here, not in the cap
        timeout=args.timeout or None,
        callbacks=[optuna.study.MaxTrialsCallback(args.n_trials, states=states)],
        catch=(Exception,),  # one failing configuration must not end the search
    )


# --- after the search ------------------------------------------------------------------


def log_study_artifacts(study, run_id: str) -> None:
    import warnings

    import optuna
    import optuna.visualization.matplotlib as vis

    from pipeline import tracking

    plots = {
        "optimization_history.png": vis.plot_optimization_history,
        "param_importances.png": vis.plot_param_importances,
        "parallel_coordinate.png": vis.plot_parallel_coordinate,
        "intermediate_values.png": vis.plot_intermediate_values,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # the matplotlib backend is "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # singular axis limits
                axes = plot(study)
        except Exception as exc:  # e.g. importances need two completed trials
            tracking.log_text(
                f"not drawn: {type(exc).__name__}: {exc}\n", name.replace(".png", ".txt"), run_id
            )
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        tracking.log_figure(figure, name, run_id)
    tracking.log_frame(study.trials_dataframe(), "trials.csv", run_id)
    tracking.log_json(study.best_trial.params, "best_params.json", run_id)


def already_retrained(study) -> str | None:
    """The final run of the current best trial, when one finished and was evaluated."""
    import mlflow

    attrs = study.user_attrs
    run_id = attrs.get("final_run_id")
    if not run_id or attrs.get("final_best_trial") != study.best_trial.number:
        return None
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except Exception:
        return None
    return run_id if run.info.status == "FINISHED" and run.data.tags.get("evaluated") else None


def retrain_best(study, args, parent: str, run_tags: dict) -> tuple[str, dict]:
    """The best trial's settings trained as a normal train run under the parent, evaluated."""
    from pipeline.steps.evaluate import evaluate_run
    from pipeline.steps.train import train

    best = study.best_trial
    cfg = trial_config(base_config(args, args.final_epochs), best.params)
    tags = {**run_tags, "tune.best_trial": str(best.number)}
    run_id = child_run(parent, f"final-{args.model}", {"pipeline.step": "train", **tags})
    try:
        _, summary = train(cfg, run_id=run_id, tags=tags)
    finally:
        close_run(run_id, "FAILED", {})  # only when train() failed before opening the run
    values = evaluate_run(run_id)
    study.set_user_attr("final_run_id", run_id)
    study.set_user_attr("final_best_trial", best.number)
    return run_id, {"final_val_accuracy": summary["best_val_accuracy"], **values}


def finish(study, args, parent: str, run_tags: dict) -> dict:
    """Retrain and evaluate the best configuration (once per best trial); log the outcome
    and the study's plots and tables on the parent run."""
    import mlflow

    best, client = study.best_trial, mlflow.MlflowClient()
    final = {
        "n_trials": len(study.trials),
        "n_pruned": sum(t.state.name == "PRUNED" for t in study.trials),
        "best_trial_val_accuracy": best.value,
    }
    run_id = already_retrained(study)
    if run_id:
        print(f"best trial {best.number} was retrained already: run {run_id}", file=sys.stderr)
    else:
        run_id, values = retrain_best(study, args, parent, run_tags)
        keys = ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro")
        final["final_val_accuracy"] = values["final_val_accuracy"]
        final.update({f"final_{k}": values[k] for k in keys})
        client.set_tag(parent, "tune.final_run_id", run_id)
    for key, value in final.items():
        client.log_metric(parent, key, float(value))
    log_study_artifacts(study, parent)
    return {"final_run_id": run_id, **final, "best_params": best.params}


def conclude(study, args, parent: str, run_tags: dict) -> None:
    """After this worker's search: the final retrain when the study is complete."""
    name = run_tags["optuna.study"]
    states = {t.state.name for t in study.get_trials(deepcopy=False)}
    if "COMPLETE" not in states:
        if states & {"RUNNING", "WAITING"}:  # other workers may still complete one
            print(f"study {name}: no completed trial yet", file=sys.stderr)
            return
        raise cli.UserError(
            f"study {name} has no completed trial (all failed or pruned); see the trial"
            " runs' error tags"
        )
    if not args.final:
        return
    finished = finished_count(study)
    if finished < args.n_trials and not args.timeout:
        print(
            f"study {name}: {finished} of {args.n_trials} trials finished (failures do not"
            " count); run the same command again to continue",
            file=sys.stderr,
        )
        return
    print(json.dumps(finish(study, args, parent, run_tags), default=str))


# --- the step --------------------------------------------------------------------------


def worker_tags(args, name: str, digest: str) -> dict:
    pruner = "odd-trials (test)" if args.prune_all else args.pruner
    return {
        "optuna.study": name,
        "optuna.storage": redact(storage_url(args.storage)),
        "optuna.sampler": args.sampler,
        "optuna.pruner": pruner,
        "dataset.digest": digest,
    }


def child_tags(name: str, digest: str, worker: str) -> dict:
    """Tags every child run carries from its creation: the contract's (INTERFACE.md) even
    when a trial fails before train() tags its run, the study and the worker that ran it."""
    from pipeline import tracking

    return {
        "optuna.study": name,
        "dataset.digest": digest,
        "code.version": tracking.code_version(),  # once per worker: git takes ~0.1 s
        "tune.worker_run_id": worker,
    }


def prepare_study(args):
    """(digest, name, study, created): storage, device and data checked before any run."""
    from pipeline import data, tracking
    from pipeline.steps.train import check_runtime, prepared_cache

    tracking.apply_defaults()
    tracking.check_reachable()  # fails in seconds, naming the URI
    storage = open_storage(args.storage, args.heartbeat_s, args.grace_s)
    base = base_config(args, args.epochs)
    check_runtime(base)  # a bad device fails once here, not once per trial
    digest = data.read_manifest(prepared_cache(base))["digest"]
    name = study_name(args, digest)
    study, created = open_study(name, storage, args)
    if created:
        study.enqueue_trial(baseline(args), skip_if_exists=True)
    return digest, name, study, created


def main(args: argparse.Namespace) -> int:
    check(args)
    import mlflow
    import optuna

    from pipeline import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    digest, name, study, created = prepare_study(args)
    settings = {**vars(args), "storage": redact(args.storage)}
    started = time.time()
    with tracking.step_run(
        "tune", settings, run_name=f"tune-{name}", tags=worker_tags(args, name, digest)
    ) as run:
        own = run.info.run_id
        parent = parent_run(study, own, created)
        role = "parent" if parent == own else "worker"
        mlflow.set_tags({"tune.role": role, "tune.parent_run_id": parent})
        tracking.log_json(search_space(args), "search_space.json")
        run_tags = child_tags(name, digest, own)
        search(study, args, parent, run_tags)
        conclude(study, args, parent, run_tags)
    best = f"{study.best_value:.4f}" if has_complete(study) else "none"
    print(
        f"study {name}: {len(study.trials)} trials, best val_accuracy {best}, "
        f"{time.time() - started:.0f} s; inspect: optuna-dashboard {dashboard_arg(args.storage)}",
        file=sys.stderr,
    )
    return 0


def has_complete(study) -> bool:
    return any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def storage_url(spec: str) -> str:
    return config.default_optuna_storage() if spec == "default" else spec


def dashboard_arg(spec: str) -> str:
    """What optuna-dashboard takes: the URL, or a journal file's path."""
    url = redact(storage_url(spec))
    return url.removeprefix("journal:") if is_journal(url) else url
