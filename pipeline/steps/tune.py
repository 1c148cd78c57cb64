"""`tune`: an Optuna study over the training settings, one nested MLflow run per trial.

The only module that imports optuna. Trials are chosen on the validation split; the test
split is opened once, by evaluation of the retrained best configuration at the end.

Runs: the study's parent run is the run of the first worker that ever worked on it (its id
is a study user attribute); every trial is a child run of it, whichever worker ran it, and
each side names the other (trial user attribute `mlflow_run_id`, run tag `trial.number`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from pipeline import cli, config
from pipeline.steps.train import add_train_args

DESCRIPTION = (
    "Search lr, optimizer, loss and flip (space=wide adds weight decay, batch size, "
    "augmentation and dropout) with Optuna; retrain and evaluate the best."
)
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
SPACES = ("base", "wide")
BASELINE = {"lr": 1e-3, "optimizer": "adam", "loss": "ce", "flip": False}  # enqueued first
HEARTBEAT_S = 10  # a running trial's heartbeat; a worker silent for GRACE_S is dead
GRACE_S = 30


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


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("tune", DESCRIPTION)
    add_train_args(parser, tune=True)
    add = parser.add_argument
    add(
        "--n_trials",
        "--n-trials",
        default=20,
        type=cli.int_at_least(1, "n_trials"),
        help="cap on the study's total trials (all workers, all re-runs)",
    )
    add(
        "--timeout",
        default=0,
        type=cli.float_in(0, 1e7, "timeout"),
        help="seconds this worker searches at most; 0 = no limit",
    )
    add(
        "--final_epochs",
        "--final-epochs",
        default=10,
        type=cli.int_at_least(1, "final_epochs"),
        help="epochs of the retrained best configuration (early stopping on val)",
    )
    add(
        "--patience",
        default=5,
        type=cli.int_at_least(1, "patience"),
        help="early-stopping patience of the final retrain",
    )
    add(
        "--pruner",
        default="median",
        type=cli.choice(PRUNERS, "pruner"),
        help="prune on per-epoch val_accuracy: median, hyperband or none",
    )
    add(
        "--sampler",
        default="tpe",
        type=cli.choice(SAMPLERS, "sampler"),
        help="tpe (seeded, multivariate) or random",
    )
    add(
        "--storage",
        default="default",
        type=storage_arg,
        help="default = sqlite:///mlruns/optuna.db (one worker); postgresql://... or "
        "journal:<file> for parallel workers",
    )
    add(
        "--study_name",
        "--study-name",
        default="auto",
        help="auto = derived from model, space, epochs, subset and data",
    )
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
    add(
        "--final",
        default=True,
        type=cli.boolean("final"),
        help="retrain, evaluate and plot once the study is complete (false for extra workers)",
    )
    add(
        "--prune_all",
        "--prune-all",
        default=False,
        type=cli.boolean("prune_all"),
        help=argparse.SUPPRESS,
    )  # tests: a pruner that prunes every trial after epoch 1
    return parser


def check(args: argparse.Namespace) -> None:
    if args.lr_min >= args.lr_max:
        cli.fail(f"lr_min ({args.lr_min}) must be below lr_max ({args.lr_max})")
    if args.model in config.SKLEARN_MODEL_NAMES:
        cli.fail(f"tune searches torch training settings; {args.model} is a scikit-learn baseline")


# --- storage, sampler, pruner ----------------------------------------------------------


def open_storage(spec: str):
    """An Optuna storage; fails in seconds, with the URL named, when it is unreachable."""
    import optuna

    if spec == "default":
        spec = config.default_optuna_storage()
        config.mlruns_dir().mkdir(parents=True, exist_ok=True)
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        path = spec.removeprefix("journal:")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    engine_kwargs = {}
    if spec.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 5}}
    try:
        return optuna.storages.RDBStorage(
            spec,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            failed_trial_callback=close_and_retry,
        )
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise cli.UserError(f"cannot open Optuna storage {spec}: {reason}") from None


def close_and_retry(study, trial) -> None:
    """A trial whose worker died: close its MLflow run FAILED, then queue it again."""
    import mlflow
    import optuna

    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = mlflow.MlflowClient()
        client.set_tag(run_id, "trial.state", "FAIL")
        client.set_tag(run_id, "error", "worker stopped sending heartbeats (killed?)")
        client.set_terminated(run_id, "FAILED")
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, trial)


def make_sampler(name: str, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def make_pruner(name: str, prune_all: bool):
    import optuna

    if prune_all:  # prunes any trial whose value is below 2 (accuracies always are)
        return optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=0)
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }[name]()


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


# --- the study ---------------------------------------------------------------------------


def study_name(args, digest: str) -> str:
    if args.study_name != "auto":
        return args.study_name
    return f"{args.model}-{args.space}-e{args.epochs}-s{args.subset}-{digest[:8]}"


def parent_run(study, own_run_id: str) -> str:
    """The study's first worker run; set here when this worker is the first."""
    import mlflow

    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent:
        try:
            mlflow.MlflowClient().get_run(parent)
            return parent
        except Exception:  # the tracking store was reset: this worker becomes the parent
            pass
    study.set_user_attr("mlflow_parent_run_id", own_run_id)
    return own_run_id


def finished_count(study) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


def objective_for(args, base: config.TrainConfig, parent: str, name: str):
    import mlflow
    import optuna

    from pipeline.steps.train import train

    def objective(trial) -> float:
        cfg = trial_config(base, suggest(trial, args))
        tags = {
            "pipeline.step": "trial",
            "trial.number": str(trial.number),
            "optuna.study": name,
            "mlflow.parentRunId": parent,
        }
        run = mlflow.MlflowClient().create_run(
            mlflow.get_experiment_by_name(mlflow_experiment()).experiment_id,
            run_name=f"trial-{trial.number}",
            tags=tags,
        )
        trial.set_user_attr("mlflow_run_id", run.info.run_id)

        def report(epoch: int, metrics: dict) -> None:
            trial.report(metrics["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        state = "FAIL"
        try:
            _, summary = train(
                cfg,
                run_id=run.info.run_id,
                hook=report,
                tags=tags,
                finished_on=(optuna.TrialPruned,),
            )
            state = "COMPLETE"
            return summary["best_val_accuracy"]
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            mlflow.MlflowClient().set_tag(run.info.run_id, "trial.state", state)

    return objective


def mlflow_experiment() -> str:
    import mlflow

    from pipeline import tracking

    return mlflow.get_experiment(tracking.ensure_experiment()).name


def search(study, args, parent: str, name: str) -> None:
    """Run trials until the study holds n_trials finished ones (or timeout)."""
    import optuna

    remaining = args.n_trials - finished_count(study)
    if remaining <= 0:
        print(f"study {name} already has {args.n_trials} finished trials: nothing to search")
        return
    base = base_config(args, args.epochs)
    base = replace(base, patience=args.epochs)  # trials are stopped by the pruner, not patience
    cap = optuna.study.MaxTrialsCallback(
        args.n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    study.optimize(
        objective_for(args, base, parent, name),
        n_trials=remaining,
        timeout=args.timeout or None,
        callbacks=[cap],
        catch=(Exception,),
        gc_after_trial=True,
    )


# --- after the search --------------------------------------------------------------------


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
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for name, plot in plots.items():
        try:
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


def finish(study, args, parent: str) -> dict:
    """Retrain the best trial's settings as a train run under the parent and evaluate it."""
    import mlflow

    from pipeline.steps.evaluate import evaluate_run
    from pipeline.steps.train import train

    best = study.best_trial
    cfg = trial_config(base_config(args, args.final_epochs), best.params)
    run_id, summary = train(
        cfg,
        parent_run_id=parent,
        tags={"optuna.study": study.study_name, "tune.best_trial": str(best.number)},
    )
    values = evaluate_run(run_id)
    client = mlflow.MlflowClient()
    pruned = sum(t.state.name == "PRUNED" for t in study.trials)
    final = {
        "best_trial_val_accuracy": best.value,
        "final_val_accuracy": summary["best_val_accuracy"],
        "n_trials": len(study.trials),
        "n_pruned": pruned,
        **{
            f"final_{k}": values[k]
            for k in ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro")
        },
    }
    for key, value in final.items():
        client.log_metric(parent, key, float(value))
    client.set_tag(parent, "tune.final_run_id", run_id)
    study.set_user_attr("final_run_id", run_id)
    log_study_artifacts(study, parent)
    return {"final_run_id": run_id, **final, "best_params": best.params}


def main(args: argparse.Namespace) -> int:
    check(args)
    import optuna

    from pipeline import data, tracking
    from pipeline.steps.train import prepared_cache

    tracking.apply_defaults()
    tracking.check_reachable()
    storage = open_storage(args.storage)
    digest = data.read_manifest(prepared_cache(base_config(args, args.epochs)))["digest"]
    name = study_name(args, digest)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
        sampler=make_sampler(args.sampler, args.seed),
        pruner=make_pruner(args.pruner, args.prune_all),
    )
    study.enqueue_trial(BASELINE, skip_if_exists=True)
    tags = {"optuna.study": name, "optuna.storage": str(args.storage), "dataset.digest": digest}
    started = time.time()
    with tracking.step_run("tune", vars(args), run_name=f"tune-{name}", tags=tags) as run:
        parent = parent_run(study, run.info.run_id)
        tracking.log_json(
            {
                "space": args.space,
                "lr": [args.lr_min, args.lr_max],
                "optimizer": config.OPTIMIZERS,
                "loss": config.LOSSES,
                "flip": [False, True],
            },
            "search_space.json",
        )
        search(study, args, parent, name)
        done = finished_count(study) >= args.n_trials or args.timeout
        if args.final and done and any(t.state.name == "COMPLETE" for t in study.trials):
            result = finish(study, args, parent)
            print(json.dumps(result, default=str))
        elif not any(t.state.name == "COMPLETE" for t in study.trials):
            raise cli.UserError(f"study {name} has no completed trial (all failed or pruned)")
    print(
        f"study {name}: {len(study.trials)} trials, best val_accuracy {study.best_value:.4f}, "
        f"{time.time() - started:.0f} s; inspect: optuna-dashboard {storage_url(args.storage)}",
        file=sys.stderr,
    )
    return 0


def storage_url(spec: str) -> str:
    return config.default_optuna_storage() if spec == "default" else spec
