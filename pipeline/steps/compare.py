"""`compare`: the leaderboard across the experiment's evaluated train runs, and the champion.

Reads runs through the MLflow client (embedded store or a server alike), builds the tables
with `pipeline.leaderboard`, tests neighbouring rows with McNemar on their paired test
predictions, registers the best-validation model as `fashion-mnist-classifier@champion`,
and logs the leaderboard (CSV, Markdown, HTML, an MLflow table, figures) to its own run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from pipeline import cli, config

DESCRIPTION = "Build the leaderboard of evaluated train runs; register the champion (by val)."
SORTABLE = (
    "test_accuracy",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "val_accuracy",
    "n_params",
    "train_time_s",
)


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser("compare", DESCRIPTION)
    parser.add_argument(
        "--metric",
        default="test_accuracy",
        type=cli.choice(SORTABLE, "metric"),
        help="display order; the champion is always chosen by validation accuracy",
    )
    return parser


def load_correct_for(client):
    """run id -> bool array of correct test predictions, read from its predictions.csv."""
    import pandas as pd

    def load(run_id: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, "predictions.csv", tmp)
            frame = pd.read_csv(path, usecols=["index", "true", "predicted"]).sort_values("index")
        return (frame["true"] == frame["predicted"]).to_numpy()

    return load


def champion_candidates(tables: dict) -> list[str]:
    """Sections the champion may come from, best first: the main section; else, where it is
    empty (tiny or subset runs only), sections of official data scored on the official test
    set, the usual split before other splits, larger training subsets first. A model trained
    or tested on unofficial data is never the champion."""
    from pipeline import leaderboard

    ranked = []
    for name, table in tables.items():
        if table.empty or name == leaderboard.MAIN_SECTION:
            continue
        first = table.iloc[0]
        if not bool(first["official"]) or str(first["test_official"]) == "false":
            continue
        ranked.append(("other split" in name, -int(first["subset"]), name))
    return [leaderboard.MAIN_SECTION, *(name for *_, name in sorted(ranked))]


def pick_champion(tables: dict):
    """(section, champion row) by validation accuracy from the first candidate section that
    has one (see champion_candidates); (None, None) when none has."""
    from pipeline import leaderboard

    for name in champion_candidates(tables):
        best = leaderboard.champion(tables.get(name))
        if best is not None:
            return name, best
    return None, None


def register_champion(client, best, section: str) -> str:
    """Register the champion's model (once per run) and point the alias at it."""
    import mlflow

    run_id = best["best_run_id"]
    uri = client.get_run(run_id).data.tags["model.uri"]
    name = config.REGISTERED_MODEL
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    version = found[0].version if found else mlflow.register_model(uri, name).version
    client.set_registered_model_alias(name, config.CHAMPION_ALIAS, version)
    client.set_model_version_tag(name, version, "leaderboard.section", section)
    client.set_model_version_tag(name, version, "val_accuracy_mean", str(best["val_accuracy_mean"]))
    return str(version)


def per_class_f1(recs, table, top: int = 10):
    """Rows: the top configurations' best runs; columns: classes (test F1)."""
    import pandas as pd

    keys = [f"test_f1_{k}" for k in config.CLASS_KEYS]
    rows = {}
    for _, row in table.head(top).iterrows():
        rec = recs.loc[recs["run_id"] == row["best_run_id"]]
        if not rec.empty and all(k in rec for k in keys):
            rows[f"{row['rank']}. {row['model']}"] = rec.iloc[0][keys].to_numpy(dtype=float)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(config.CLASS_NAMES))


def log_figures(recs, main_table) -> None:
    from pipeline import plots, tracking

    if main_table.empty:
        return
    heat = per_class_f1(recs, main_table)
    if not heat.empty:
        tracking.log_figure(plots.f1_heatmap_figure(heat), "per_class_f1_heatmap.png")
    frame = main_table.assign(label=main_table["model"])
    for x, name in (("n_params", "pareto_params.png"), ("train_time_s_mean", "pareto_time.png")):
        tracking.log_figure(plots.pareto_figure(frame, x, "test_accuracy_mean", "label"), name)


def log_leaderboard(tables, unranked, best, recs) -> None:
    import mlflow

    from pipeline import leaderboard, tracking

    csv = leaderboard.to_csv_frame(tables)
    tracking.log_frame(csv, "leaderboard.csv")
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (
            (
                "leaderboard.md",
                leaderboard.to_markdown(tables, unranked, leaderboard.REFERENCES, best),
            ),
            (
                "leaderboard.html",
                leaderboard.to_html(tables, unranked, leaderboard.REFERENCES, best),
            ),
        ):
            (Path(tmp) / name).write_text(text)
            mlflow.log_artifact(str(Path(tmp) / name))
    if not csv.empty:  # a table the MLflow UI shows in the run's artifacts view
        mlflow.log_table(csv.astype(str), "leaderboard.json")
    tracking.log_frame(unranked, "unranked_runs.csv")
    tracking.log_frame(leaderboard.REFERENCES, "references.csv")
    log_figures(recs, tables[leaderboard.MAIN_SECTION])


def summary_lines(tables, best, section) -> list[str]:
    lines = []
    for name, table in tables.items():
        if table.empty:
            continue
        lines.append(f"== {name} ==")
        for _, row in table.head(10).iterrows():
            std = row["test_accuracy_std"]
            spread = "" if np.isnan(std) else f" ± {100 * std:.2f}"
            lines.append(
                f"{int(row['rank']):>3}. {100 * row['test_accuracy_mean']:6.2f}%{spread}"
                f"  val {100 * row['val_accuracy_mean']:6.2f}%  n={int(row['n_seeds'])}"
                f"  {row['config_label']}"
            )
    if best is not None:
        lines.append(f"champion ({section}): {best['config_label']} run {best['best_run_id']}")
    return lines


def compare(metric: str) -> dict:
    """Build and log the leaderboard inside the active compare run; returns a summary."""
    import mlflow

    from pipeline import leaderboard, tracking

    client = mlflow.MlflowClient()
    experiment_id = tracking.ensure_experiment()
    runs = mlflow.search_runs([experiment_id], output_format="pandas", max_results=50000)
    recs = leaderboard.records(runs)
    load = load_correct_for(client)
    tables = {
        name: leaderboard.add_significance(table, load)
        for name, table in leaderboard.sections(recs, metric).items()
    }
    unranked = leaderboard.unranked(recs)
    # the data behind the ranked rows (several digests when sections differ in data)
    digests = sorted({d for t in tables.values() for d in t["dataset_digest"] if d})
    mlflow.set_tag("dataset.digest", ",".join(digests)[:5000] or "none")
    section, best = pick_champion(tables)
    result = {"n_train_runs": len(recs), "n_ranked": int(sum(len(t) for t in tables.values()))}
    if best is not None:
        result["champion_version"] = register_champion(client, best, section)
        result["champion_run_id"] = best["best_run_id"]
        mlflow.set_tags({"champion.run_id": best["best_run_id"], "champion.section": section})
        mlflow.log_metrics(
            {
                f"champion_{key}": float(best[f"{key}_mean"])
                for key in (
                    "test_accuracy",
                    "test_precision_macro",
                    "test_recall_macro",
                    "test_f1_macro",
                    "val_accuracy",
                )
            }
        )
    mlflow.log_metrics({k: v for k, v in result.items() if k.startswith("n_")})
    log_leaderboard(tables, unranked, best, recs)
    result["lines"] = summary_lines(tables, best, section)
    return result


def main(args: argparse.Namespace) -> int:
    from pipeline import tracking

    tracking.apply_defaults()
    tracking.check_reachable()  # fails in seconds, naming the URI
    with tracking.step_run("compare", vars(args), run_name="compare") as run:
        result = compare(args.metric)
    print("\n".join(result["lines"]) or "no evaluated train runs yet: train and evaluate first")
    print(f"leaderboard: run {run.info.run_id}, artifacts leaderboard.md / leaderboard.html")
    return 0
