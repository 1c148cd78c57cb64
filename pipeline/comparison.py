"""The compare job: the leaderboard across the experiment's evaluated train runs, and the
champion registered as `fashion-mnist-classifier@champion` (tracking.model_name).

Reads the runs through tracking (embedded store or a server alike), ranks them with
pipeline.leaderboard, tests neighbouring rows on their paired test predictions, renders the
report with pipeline.report and logs it (CSV, Markdown, HTML, an MLflow table, figures).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pipeline import config, identity, leaderboard, plots, report, tracking
from pipeline.leaderboard import Section


def correct_predictions(run_id: str) -> np.ndarray:
    """(10000,) bool: per test image, whether the run's prediction was right."""
    with tracking.artifact(run_id, "predictions.csv") as path:
        frame = pd.read_csv(path, usecols=["index", "true", "predicted"]).sort_values("index")
    return (frame["true"] == frame["predicted"]).to_numpy()


def champion_metrics(best: pd.Series, recs: pd.DataFrame) -> dict[str, float]:
    """`champion_<metric>`: the registered run's own figures, what `@champion` loads and
    scores; `champion_<metric>_mean`: its configuration's mean over seeds (the leaderboard
    row, by which the champion was chosen)."""
    own = recs[recs["run_id"] == best["best_run_id"]]
    values = {
        f"champion_{k}": float(own[k].iloc[0]) for k in leaderboard.SUMMARY_METRICS if k in own
    }
    values["champion_val_accuracy"] = float(leaderboard.val_accuracy(own).iloc[0])
    means = (*leaderboard.SUMMARY_METRICS, "val_accuracy")
    return values | {f"champion_{k}_mean": float(best[f"{k}_mean"]) for k in means}


def register(best: pd.Series, section: Section) -> str:
    run = tracking.get_run(best["best_run_id"])
    tags = {
        "leaderboard.section": section.name,
        # as the tables show it (a float's repr read 0.7737499999999999)
        "val_accuracy_mean": f"{best['val_accuracy_mean']:.6g}",
    }
    return tracking.register_champion(best["best_run_id"], run.data.tags["model.uri"], tags)


def per_class_f1(recs: pd.DataFrame, table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Rows: the top configurations' best runs; columns: classes (test F1)."""
    keys = [f"test_f1_{k}" for k in config.CLASS_KEYS]
    rows = {}
    for _, row in table.head(top).iterrows():
        rec = recs.loc[recs["run_id"] == row["best_run_id"]]
        if not rec.empty and all(k in rec for k in keys):
            rows[f"{row['rank']}. {row['model']}"] = rec.iloc[0][keys].to_numpy(dtype=float)
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(config.CLASS_NAMES))


def log_figures(run_id: str, recs: pd.DataFrame, main: pd.DataFrame) -> None:
    if main.empty:
        return
    heat = per_class_f1(recs, main)
    if not heat.empty:
        tracking.log_figure(plots.f1_heatmap_figure(heat), "per_class_f1_heatmap.png", run_id)
    frame = main.assign(label=main["model"])
    for x, name in (("n_params", "pareto_params.png"), ("train_time_s_mean", "pareto_time.png")):
        figure = plots.pareto_figure(frame, x, "test_accuracy_mean", "label")
        tracking.log_figure(figure, name, run_id)


def ui_table(csv: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the MLflow UI's table: numbers stay numbers (logged as text, rank
    10 sorted before rank 2), a missing value is null."""
    return csv.astype(object).where(csv.notna(), None)


def log_report(run_id: str, tables: dict, unranked: pd.DataFrame, best, recs) -> None:
    csv = report.to_csv_frame(tables)
    refs = leaderboard.REFERENCES
    tracking.log_frame(csv, "leaderboard.csv", run_id)
    tracking.log_text(report.to_markdown(tables, unranked, refs, best), "leaderboard.md", run_id)
    tracking.log_text(report.to_html(tables, unranked, refs, best), "leaderboard.html", run_id)
    if not csv.empty:  # a table the MLflow UI shows in the run's artifacts view
        tracking.log_table(ui_table(csv), "leaderboard.json", run_id)
    tracking.log_frame(unranked, "unranked_runs.csv", run_id)
    tracking.log_frame(refs, "references.csv", run_id)
    main = next(t for s, t in tables.items() if s.main)
    log_figures(run_id, recs, main)


def summary_lines(tables: dict, best, section: Section | None, unranked: pd.DataFrame) -> list[str]:
    lines = []
    for sec, table in tables.items():
        if table.empty:
            continue
        lines.append(f"== {sec.name} ==")
        for _, row in table.head(10).iterrows():
            std = row["test_accuracy_std"]
            spread = "" if np.isnan(std) else f" ± {100 * std:.2f}"
            lines.append(
                f"{int(row['rank']):>3}. {100 * row['test_accuracy_mean']:6.2f}%{spread}"
                f"  val {100 * row['val_accuracy_mean']:6.2f}%  n={int(row['n_seeds'])}"
                f"  {row['config_label']}"
            )
    if not lines:
        lines.append("no evaluated train runs yet: train and evaluate first")
    if best is not None:
        lines.append(f"champion ({section.name}): {best['config_label']} run {best['best_run_id']}")
    if not unranked.empty:  # failed, killed, unevaluated or superseded: said, never dropped
        counts = unranked["status"].value_counts().sort_index()
        said = ", ".join(f"{n} {status}" for status, n in counts.items())
        lines.append(f"not ranked: {len(unranked)} train run(s) ({said}); see unranked_runs.csv")
    return lines


def reference_keys() -> dict[str, list[dict]]:
    """config key -> the published numbers that configuration reproduces (references.csv)."""
    out: dict[str, list[dict]] = {}
    refs = leaderboard.REFERENCES
    for _, row in refs[refs["reproduced_by"] != ""].iterrows():
        settings = config.TrainSettings.from_params(json.loads(row["reproduced_by"]))
        out.setdefault(identity.config_key(settings), []).append(row.to_dict())
    return out


def ranked(recs: pd.DataFrame, metric: str) -> dict:
    """Section -> table, with significance notes and the published numbers alongside."""
    refs = reference_keys()
    return {
        section: leaderboard.attach_references(
            leaderboard.add_significance(table, correct_predictions), refs
        )
        for section, table in leaderboard.sections(recs, metric).items()
    }


# How often compare ranks again when the store changed under it (see rank_and_register).
CHAMPION_CHECKS = 5


def rank_and_register(recs: pd.DataFrame, metric: str):
    """Rank, register the champion, then look at the store again: another compare that saw
    runs this one had not may have set the alias meanwhile, so while a fresh look gives
    another champion, rank the fresh records and register again. The last compare to set
    the alias has then checked it against a look taken after its own write, and the alias
    never ends on a stale, worse champion (unless the store changed at each of
    CHAMPION_CHECKS looks). Returns (records, tables, section, best, version), the records
    those tables ranked."""
    for check in range(1, CHAMPION_CHECKS + 1):
        tables = ranked(recs, metric)
        section, best = leaderboard.pick_champion(tables)
        if best is None:
            return recs, tables, section, None, None
        version = register(best, section)
        if check == CHAMPION_CHECKS:  # the records stay those the tables ranked
            break
        fresh = leaderboard.records(tracking.runs_frame())
        _, now = leaderboard.pick_champion(leaderboard.sections(fresh, metric))
        if now is None or now["best_run_id"] == best["best_run_id"]:
            break
        recs = fresh
    return recs, tables, section, best, version


def description(result: dict, best: pd.Series, n_runs: int) -> str:
    """The compare run's description in the MLflow UI."""
    return (
        f"Leaderboard of {result['n_ranked']} configuration(s) from {n_runs} train run(s)"
        " (leaderboard.md / .html / .csv). Champion, chosen by validation accuracy:"
        f" {best['config_label']}, run {best['best_run_id']}, registered as"
        f" {result['champion_uri']} (version {result['champion_version']})."
    )


def records(metric: str) -> pd.DataFrame:
    """The store's train runs as leaderboard records, `metric` checked against them: the
    compare step reads them before its run exists, so a metric no run has leaves no run."""
    recs = leaderboard.records(tracking.runs_frame())
    leaderboard.check_metric(recs, metric)
    return recs


def compare(run_id: str, metric: str, recs: pd.DataFrame | None = None) -> dict:
    """Build, log and register inside the compare run `run_id` from `recs` (read now when
    None); returns a summary."""
    recs, tables, section, best, version = rank_and_register(
        records(metric) if recs is None else recs, metric
    )
    unranked = leaderboard.unranked(recs)
    digests = sorted({d for t in tables.values() for d in t["dataset_digest"] if d})
    tracking.set_tags(run_id, {"dataset.digest": ",".join(digests)[:5000] or "none"})
    result = {"n_train_runs": len(recs), "n_ranked": int(sum(len(t) for t in tables.values()))}
    if best is not None:
        result["champion_version"] = version
        result["champion_uri"] = f"models:/{tracking.model_name()}@{config.CHAMPION_ALIAS}"
        result["champion_run_id"] = best["best_run_id"]
        tracking.set_tags(
            run_id,
            {
                "champion.run_id": best["best_run_id"],
                "champion.section": section.name,
                "mlflow.note.content": description(result, best, len(recs)),
            },
        )
        tracking.log_metrics(run_id, champion_metrics(best, recs))
    elif (dropped := tracking.drop_deleted_champion()) is not None:
        result["champion_dropped"] = dropped  # @champion named a deleted run
    tracking.log_metrics(run_id, {k: v for k, v in result.items() if k.startswith("n_")})
    log_report(run_id, tables, unranked, best, recs)
    result["lines"] = summary_lines(tables, best, section, unranked)
    return result
