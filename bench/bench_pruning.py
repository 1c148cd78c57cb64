"""Pruning efficiency: one fixed study run with each pruner over several sampler seeds.

    python bench/bench_pruning.py                       # the fixed study below, 3 seeds
    python bench/bench_pruning.py --trials 3 --epochs 2 --subset 300 --seeds 1 --allow-unofficial

For each pruner (hyperband, median, none) and each seed: the study's best validation
accuracy and the epochs it trained in all (a pruned trial stops early, so it costs fewer);
then mean and sample std per pruner, and hyperband's best and epochs against no pruning.
The study is the project's own: its search space (pipeline/study/space.py, space `base`),
its pruners and samplers (pipeline/study/search.py) and the engine's Trainer, reporting
validation accuracy after every epoch, on the CPU (the figures compare pruners, not
devices) in the training settings' default precision (bf16 where the CPU computes it).
MLflow is not involved (only the search is timed); the test split is never opened. Writes
JSON (`--json`): the settings, every study, the summary and hyperband against none.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from pipeline import cli, config, data, engine, files, models  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.study import search, space  # noqa: E402

PRUNERS = ("hyperband", "median", "none")


def objective(settings: config.TuneSettings, splits, counter: dict):
    train, val = splits

    def run(trial) -> float:
        trial_settings = space.trial_settings(settings.base, space.suggest(trial, settings))
        engine.seed_everything(trial_settings.seed, False)
        model = models.build_model(trial_settings.model, **trial_settings.options)
        device = torch.device("cpu")

        def report(epoch: int, metrics: dict) -> None:
            counter["epochs"] += 1
            trial.report(metrics["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        trainer = engine.Trainer(
            model,
            engine.DeviceSplit.from_split(train, device),
            engine.DeviceSplit.from_split(val, device),
            trial_settings,
            device,
            on_epoch_end=report,
            progress=False,
        )
        return trainer.fit().best_val_accuracy

    return run


def one_study(settings: config.TuneSettings, pruner: str, seed: int, splits) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counter = {"epochs": 0}
    study = optuna.create_study(
        # Hyperband picks a trial's bracket from a hash of the study name and trial number,
        # so a fixed name makes a run repeatable (a random one moved the figures run to run)
        study_name=f"bench_pruning-{pruner}-seed{seed}",
        direction="maximize",
        sampler=search.SAMPLERS[settings.sampler](seed),
        pruner=search.PRUNERS[pruner](settings.base.epochs),
    )
    study.enqueue_trial(space.defaults(settings))
    started = time.perf_counter()
    study.optimize(objective(settings, splits, counter), n_trials=settings.n_trials)
    return {
        "pruner": pruner,
        "seed": seed,
        "best_val_accuracy": study.best_value,
        "epochs_trained": counter["epochs"],
        "pruned_trials": sum(t.state.name == "PRUNED" for t in study.trials),
        "seconds": time.perf_counter() - started,
    }


def summary(rows: list[dict]) -> dict:
    """Mean and sample std per pruner; the std is None (JSON null, never a NaN literal) for
    a single seed, where no spread is defined."""
    out = {}
    for pruner in PRUNERS:
        mine = [r for r in rows if r["pruner"] == pruner]
        if not mine:
            continue
        accs, epochs = [r["best_val_accuracy"] for r in mine], [r["epochs_trained"] for r in mine]
        out[pruner] = {
            "seeds": len(mine),
            "best_val_accuracy_mean": statistics.mean(accs),
            "best_val_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "epochs_mean": statistics.mean(epochs),
            "epochs_std": statistics.stdev(epochs) if len(epochs) > 1 else None,
        }
    return out


def spread(std: float | None, digits: int) -> str:
    """`+-<std>`, or nothing for a single seed (the line's seeds=1 says why)."""
    return "" if std is None else f"+-{std:.{digits}f}"


def seed_list(text: str) -> list[int]:
    """An argparse type: comma-separated sampler seeds, non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers such as 1,2,3, got {text!r}"
        ) from None
    if any(s < 0 for s in seeds):  # numpy, under the samplers, refuses negative seeds
        raise argparse.ArgumentTypeError(f"seeds must be 0 or more, got {text!r}")
    if len(set(seeds)) < len(seeds):  # the same study twice: a spread of zero that means nothing
        raise argparse.ArgumentTypeError(f"seeds must differ, got {text!r}")
    return seeds


def main() -> int:
    parser = cli.StepParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=config.TORCH_MODEL_NAMES)
    # the default study: long enough for rungs at 1, 3 and 9 epochs in Hyperband's brackets
    parser.add_argument("--trials", type=int, default=30, help="trials per study (30)")
    parser.add_argument(
        "--epochs", type=int, default=12, help="per trial, the pruners' resource (12)"
    )
    parser.add_argument(
        "--subset", type=int, default=5_000, help="training images per trial (5000; 0 = all)"
    )
    parser.add_argument(
        "--seeds", type=seed_list, default="1,2,3", help="sampler seeds, comma-separated"
    )
    parser.add_argument(
        "--threads", type=cli.at_least(0), default=0, help="torch threads; 0 = torch's default"
    )
    parser.add_argument("--allow-unofficial", action="store_true", help="for tests: any IDX data")
    parser.add_argument(
        "--json",
        type=cli.output_file,
        default=str(ROOT / "bench" / "results" / "bench_pruning.json"),
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = {
        "model": args.model,
        "epochs": args.epochs,
        "subset": args.subset,
        "patience": args.epochs,
    }
    try:
        # checks --epochs, --subset and --trials before any data is loaded
        settings = config.TuneSettings.from_params({**base, "n_trials": args.trials})
        directory = data.ensure_prepared(allow_unofficial=args.allow_unofficial)
        # strict, as tune: a subset as large as the split is refused, not silently ignored
        splits = data.train_and_val(directory, args.subset, settings.base.seed, strict=True)
    except (data.DataError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    study = {  # what the header says, and the JSON with it
        "space": settings.space,
        "sampler": settings.sampler,
        "device": "cpu",
        "precision": engine.resolve_precision(
            settings.base.precision, torch.device("cpu"), settings.base.model
        ),
        "threads": torch.get_num_threads(),
    }
    print(
        f"bench_pruning study: model={args.model} space={settings.space} trials={args.trials}"
        f" epochs_per_trial={args.epochs} subset={args.subset} sampler={settings.sampler}"
        f" seeds={','.join(map(str, args.seeds))} device=cpu precision={study['precision']}"
        f" threads={study['threads']}",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        for pruner in PRUNERS:
            row = one_study(settings, pruner, seed, splits)
            rows.append(row)
            print(
                f"pruner={pruner} seed={seed} best_val_accuracy={row['best_val_accuracy']:.4f}"
                f" epochs_trained={row['epochs_trained']} pruned={row['pruned_trials']}"
                f" seconds={row['seconds']:.1f}",
                flush=True,
            )
    result = summary(rows)
    for pruner, s in result.items():
        print(
            f"summary pruner={pruner} best_val_accuracy={s['best_val_accuracy_mean']:.4f}"
            f"{spread(s['best_val_accuracy_std'], 4)}"
            f" epochs={s['epochs_mean']:.1f}{spread(s['epochs_std'], 1)} seeds={s['seeds']}"
        )
    versus = None
    if "hyperband" in result and "none" in result:
        gap = 100 * (
            result["none"]["best_val_accuracy_mean"] - result["hyperband"]["best_val_accuracy_mean"]
        )
        share = result["hyperband"]["epochs_mean"] / result["none"]["epochs_mean"]
        versus = {"points_below": gap, "epochs_share": share}
        print(f"hyperband_vs_none points_below={gap:.2f} epochs_share={share:.2f}")
    report = {"settings": {**vars(args), **study}, "runs": rows, "summary": result}
    text = json.dumps({**report, "hyperband_vs_none": versus}, indent=2)
    files.atomic_write_text(Path(args.json), text)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
