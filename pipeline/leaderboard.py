"""Run records -> ranked leaderboard tables: one row per configuration, aggregated over seeds.

Pure pandas / numpy, no MLflow and no I/O: the compare job (pipeline/comparison.py) searches
the store, reads each best run's predictions.csv, hands both in, and pipeline/report.py
renders what comes back. So every rule below is tested on fabricated records.

Rules that keep the table honest:
- only train runs count (Optuna trials and the other steps' runs never do), and only
  FINISHED runs evaluated on the test set are ranked; every other train run is listed by
  `unranked` with its reason, never dropped silently;
- runs are ranked only against runs on the same data: the main section holds the official
  data with the full training split, scored on the official test set; every other
  (data digest, official, training subset) group is a section of its own with its own ranks
  (a `Section`, a typed value: nothing matches on its printed name);
- a configuration is the `config.key` tag (runs that differ only in seed, see
  pipeline/identity.py); a run without one is a configuration of its own; its figures are
  mean and sample std (ddof=1) over seeds. The std of a single seed is NaN, not 0: one seed
  says nothing about the spread, and the reports render it as '–';
- the best run of a configuration and the champion are chosen on the validation split,
  never on the test split (choosing on the test set would make its score optimistic): the
  champion by validation accuracy, ties broken by validation log loss, then fewer
  parameters, then the configuration key;
- published numbers (references.csv) are kept apart and flagged where known to be wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import UserError
from pipeline.metrics import holm, mcnemar, pareto_front, welch

MAIN_SECTION = "official, full training data"
RANKED_STATUS = "FINISHED"
ALPHA = 0.05  # significance level of the McNemar notes
# Figures aggregated (mean and std over seeds) for every configuration.
SUMMARY_METRICS = ("test_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro")
# Sort metrics where smaller is better (a loss, a calibration error, a cost).
LOWER_IS_BETTER_SUFFIXES = ("_loss", "_ece", "_time_s")
LOWER_IS_BETTER = ("n_params",)

# Record column -> (run tag, parameter to fall back on when the tag is missing).
TEXT_COLUMNS = {
    "model": ("model", "model"),
    "config_key": ("config.key", None),
    "config_label": ("config.label", None),
    "dataset_digest": ("dataset.digest", None),
    "command": ("command", None),
    "code_version": ("code.version", None),
    "device": ("device", "device"),
    "test_official": ("test.official", None),  # 'true', 'false', or '' (not evaluated)
    "error": ("error", None),
    "tuned": ("tune.tuned", None),  # 'true' for the retrains of a study's best configuration
    "tune_trials": ("tune.n_trials", None),  # the trials behind a tuned configuration
    "model_uri": ("model.uri", None),  # the logged model: what a champion registers
}
RECORD_COLUMNS = (
    "run_id",
    "status",
    "start_time",
    "end_time",
    "model",
    "config_key",
    "config_label",
    "seed",
    "dataset_digest",
    "official",
    "test_official",
    "subset",
    "evaluated",
    "command",
    "code_version",
    "device",
    "error",
    "tuned",
    "tune_trials",
    "model_uri",
)
# Runs of one configuration on one data group, trained by one code version (seeds of two
# code versions are never averaged: each version is a row of its own); a second run of the
# same seed supersedes the first.
GROUP_KEYS = ["config_key", "dataset_digest", "official", "subset", "test_official", "code_version"]
TABLE_COLUMNS = (
    "rank",
    "model",
    "config_label",
    "n_seeds",
    *(f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")),
    "val_accuracy_mean",
    "val_accuracy_std",
    "val_log_loss_mean",
    "n_params",
    "train_time_s_mean",
    "train_images_per_s_mean",
    "pareto_size",
    "pareto_time",
    "device",
    "tuned",
    "seeds",
    "test_accuracies",
    "run_ids",
    "best_run_id",
    "code_version",
    "command",
    "config_key",
    "dataset_digest",
    "official",
    "subset",
    "test_official",
)
UNRANKED_COLUMNS = ("run_id", "status", "model", "config_label", "seed", "start_time", "reason")


# --- records ------------------------------------------------------------------------------


def _text(runs: pd.DataFrame, column: str) -> pd.Series:
    """A column as strings, '' where missing (absent column, None or NaN)."""
    if column not in runs:
        return pd.Series("", index=runs.index, dtype=str)
    values = runs[column]
    return values.where(values.notna(), "").astype(str)


def _tag(runs: pd.DataFrame, tag: str, param: str | None = None) -> pd.Series:
    values = _text(runs, f"tags.{tag}")
    if param is not None:
        values = values.where(values != "", _text(runs, f"params.{param}"))
    return values


def _integers(values: pd.Series) -> pd.Series:
    """Strings -> nullable Int64 (NA where empty or not an integer)."""
    numbers = pd.to_numeric(values.where(values != "", None), errors="coerce")
    return numbers.where(numbers == numbers.round()).astype("Int64")


def _empty_records() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in RECORD_COLUMNS})


def records(runs: pd.DataFrame) -> pd.DataFrame:
    """Train runs of a `mlflow.search_runs` frame, one row per run, plain column names.

    Columns: RECORD_COLUMNS (seed nullable Int64, subset int, official / evaluated bool,
    test_official the raw tag) followed by every metric without its `metrics.` prefix.
    Missing columns are tolerated: a missing tag reads as '', a missing metric is absent.
    """
    if runs is None or "tags.pipeline.step" not in runs:
        return _empty_records()
    runs = runs[_text(runs, "tags.pipeline.step") == "train"]
    out = {"run_id": _text(runs, "run_id"), "status": _text(runs, "status").str.upper()}
    for column in ("start_time", "end_time"):
        out[column] = runs[column] if column in runs else pd.Series(pd.NaT, index=runs.index)
    for column, (tag, param) in TEXT_COLUMNS.items():
        out[column] = _tag(runs, tag, param)
    # a run without the tag (it failed before tagging) is a configuration of its own
    out["config_key"] = out["config_key"].where(out["config_key"] != "", "run:" + out["run_id"])
    label = _tag(runs, "mlflow.note.content")  # older train runs describe themselves here
    label = label.where(label != "", out["model"])
    out["config_label"] = out["config_label"].where(out["config_label"] != "", label)
    out["seed"] = _integers(_text(runs, "params.seed"))
    out["official"] = _tag(runs, "dataset.official").str.lower() == "true"
    out["subset"] = _integers(_tag(runs, "train.subset", "subset")).fillna(0).astype(int)
    out["evaluated"] = _tag(runs, "evaluated").str.lower() == "true"
    out["test_official"] = out["test_official"].str.lower()
    for column in runs:  # metrics never overwrite a record column of the same name
        if column.startswith("metrics.") and column[8:] not in out:
            out[column[8:]] = pd.to_numeric(runs[column], errors="coerce")
    frame = pd.DataFrame(out, index=runs.index)
    return frame[[*RECORD_COLUMNS, *(c for c in frame if c not in RECORD_COLUMNS)]].reset_index(
        drop=True
    )


# --- aggregation --------------------------------------------------------------------------


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def _rankable(recs: pd.DataFrame) -> pd.Series:
    """FINISHED, evaluated, with a test accuracy and a logged model (what the champion
    alias would point at): the runs a leaderboard may rank."""
    if recs.empty:
        return pd.Series(False, index=recs.index, dtype=bool)
    scored = recs["evaluated"] & _num(recs, "test_accuracy").notna()
    return (recs["status"] == RANKED_STATUS) & scored & (recs["model_uri"] != "")


def _split_duplicates(recs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, superseded) rankable runs: the newest run per configuration, data and seed.

    Running the same seed twice is not a second sample of the seed distribution, so only
    the newest counts; the older ones come back with `superseded_by` for `unranked`.
    """
    ranked = recs[_rankable(recs)]
    ranked = ranked.sort_values(
        ["start_time", "run_id"], ascending=[False, True], na_position="last", kind="stable"
    )
    keys = [*GROUP_KEYS, "seed"]
    duplicate = ranked.duplicated(keys, keep="first") & ranked["seed"].notna()
    kept, superseded = ranked[~duplicate], ranked[duplicate]
    newest = kept[kept["seed"].notna()][[*keys, "run_id"]].rename(
        columns={"run_id": "superseded_by"}
    )
    superseded = superseded.merge(newest, on=keys, how="left")
    return kept, superseded


def _metric_column(metric: str) -> tuple[str, str | None, bool]:
    """(table column to sort by, extra record metric to aggregate or None, ascending)."""
    ascending = metric in LOWER_IS_BETTER or metric.endswith(LOWER_IS_BETTER_SUFFIXES)
    if metric in ("val_accuracy", "best_val_accuracy"):
        return "val_accuracy_mean", None, False
    if metric == "n_params":
        return "n_params", None, True
    if metric in (*SUMMARY_METRICS, "train_time_s", "train_images_per_s"):
        return f"{metric}_mean", None, ascending
    return f"{metric}_mean", metric, ascending


def val_accuracy(group: pd.DataFrame) -> pd.Series:
    """Each run's validation accuracy of the model it logged: `logged_val_accuracy`, which
    differs from the best epoch's `best_val_accuracy` under restore_best=false (the last
    epoch's weights are logged); runs from before that key existed fall back on it."""
    best = _num(group, "best_val_accuracy")
    return (
        _num(group, "logged_val_accuracy").fillna(best) if "logged_val_accuracy" in group else best
    )


def _best_run(group: pd.DataFrame) -> pd.Series:
    """The run whose logged model has the highest validation accuracy (ties: lower seed,
    then run id).

    Never the highest test accuracy: the test set is for reporting, not for choosing.
    """
    order = group.assign(_val=val_accuracy(group)).sort_values(
        ["_val", "seed", "run_id"], ascending=[False, True, True], na_position="last"
    )
    return order.iloc[0]


def _joined(values: pd.Series) -> str:
    return ",".join(sorted({str(v) for v in values if str(v)}))


def _summarise(group: pd.DataFrame, extra: str | None) -> dict:
    """One configuration's row: means and sample stds over its seeds, and its best run."""
    group = group.sort_values(["seed", "run_id"], na_position="last")
    best = _best_run(group)
    label = best["config_label"]
    # retrains of a study's best configuration (fresh seeds: their validation accuracy is
    # free of the selection) share its key with plain runs of it: tuned if any run is, and
    # how many of its seeds are when not all
    tuned = group[group["tuned"] == "true"]
    if not tuned.empty:
        share = "" if len(tuned) == len(group) else f"{len(tuned)} of {len(group)} seeds "
        label += f" ({share}tuned, {tuned['tune_trials'].iloc[0] or '?'} trials)"
    row = {"model": best["model"], "config_label": label, "n_seeds": len(group)}
    for name in (*SUMMARY_METRICS, *((extra,) if extra else ())):
        row[f"{name}_mean"] = _num(group, name).mean()
        row[f"{name}_std"] = _num(group, name).std(ddof=1)  # NaN for one seed
    row["val_accuracy_mean"] = val_accuracy(group).mean()
    row["val_accuracy_std"] = val_accuracy(group).std(ddof=1)
    row["val_log_loss_mean"] = _num(group, "val_log_loss").mean()
    row["n_params"] = _num(group, "n_params").median()
    row["train_time_s_mean"] = _num(group, "train_time_s").mean()
    row["train_images_per_s_mean"] = _num(group, "train_images_per_s").mean()
    row["device"] = _joined(group["device"])
    row["seeds"] = ",".join(str(s) for s in group["seed"] if pd.notna(s))
    row["test_accuracies"] = ",".join(repr(float(v)) for v in _num(group, "test_accuracy"))
    row["run_ids"] = ",".join(group["run_id"])
    row["best_run_id"] = best["run_id"]
    row["tuned"] = not tuned.empty
    row["command"] = best["command"]
    row |= {key: best[key] for key in GROUP_KEYS}
    return row


def _mark_pareto(table: pd.DataFrame) -> pd.DataFrame:
    """Flag configurations no other beats on (size or training time, test accuracy)."""
    for flag, cost in (("pareto_size", "n_params"), ("pareto_time", "train_time_s_mean")):
        front = pareto_front(
            table[cost].to_numpy(float), table["test_accuracy_mean"].to_numpy(float)
        )
        table[flag] = np.isin(np.arange(len(table)), front)
    return table


def check_metric(recs: pd.DataFrame, metric: str) -> None:
    """A metric of the contract that no record has (0.1 logged no test_log_loss) is one
    line, before anything is ranked."""
    extra = _metric_column(metric)[1]
    if extra and not recs.empty and extra not in recs:
        raise UserError(
            f"no evaluated train run has the metric {metric}: evaluate them again"
            " (runs evaluated by an older version lack it), or choose another --metric"
        )


def aggregate(recs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """One row per configuration (config_key + dataset_digest) over evaluated FINISHED runs.

    Mean and sample std (ddof=1; NaN for one seed) of the test accuracy and macro P/R/F1,
    mean validation accuracy of the logged models (`val_accuracy_mean`), size, training
    time and speed, the run ids, the best run by validation accuracy and its command.
    Sorted by `<metric>_mean` (descending; ascending for losses, times and sizes), ties
    broken by val_accuracy_mean, then config_label, then config_key; `rank` is 1-based.
    Call it on one section's records (`sections` does): it does not separate data groups.
    """
    sort_column, extra, ascending = _metric_column(metric)
    kept, _ = _split_duplicates(recs)
    check_metric(kept, metric)
    rows = [_summarise(g, extra) for _, g in kept.groupby(GROUP_KEYS, dropna=False)]
    columns = [c for c in TABLE_COLUMNS if c != "rank"]
    if extra:
        columns[2:2] = [f"{extra}_mean", f"{extra}_std"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(
        [sort_column, "val_accuracy_mean", "config_label", "config_key"],
        ascending=[ascending, False, True, True],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table = _mark_pareto(table)
    table.attrs |= {"metric": metric, "sort_column": sort_column}
    return table


# --- sections, unranked runs, champion ----------------------------------------------------


def _main_digest(runs: pd.DataFrame) -> str | None:
    """The official data digest with the most full-training runs (ties: smallest digest).

    Without any full-training run (only subsets, as in the tiny profile), the official digest
    with the most runs of any size: its subsets are the usual split, not "other split" ones.
    """
    official = runs[runs["official"] & (runs["test_official"] != "false")]
    main = official[official["subset"] == 0]
    if main.empty:
        main = official
    if main.empty:
        return None
    counts = main["dataset_digest"].value_counts().sort_index()
    return str(counts.idxmax())


@dataclass(frozen=True)
class Section:
    """A group of runs that are ranked against each other: the same data, training subset
    and test set. `main` marks the official data's full training split (the contract's
    leaderboard); every other section is kept apart, with ranks of its own."""

    digest: str
    official: bool
    subset: int
    test_official: bool
    main_digest: bool  # the digest is the main section's (an official split, not another one)

    @property
    def main(self) -> bool:
        return self.official and self.main_digest and not self.subset and self.test_official

    @property
    def name(self) -> str:
        if self.main:
            return MAIN_SECTION
        if self.official and self.main_digest:
            parts = ["official data"]
        elif self.official:
            parts = [f"official data, other split {self.digest[:12]}"]
        else:
            parts = [f"unofficial data {self.digest[:12] or '(no digest)'}"]
        if self.subset:
            parts.append(f"training subset {self.subset}")
        if not self.test_official:
            parts.append("unofficial test set")
        return ", ".join(parts)

    @property
    def champion_order(self) -> tuple | None:
        """Where the champion may come from: the main split (the whole training split and
        its subsets, compared on validation by pick_champion), then other official splits
        in this order; None for unofficial data or an unofficial test set, which never
        give the champion."""
        if not self.official or not self.test_official:
            return None
        return (not self.main, not self.main_digest, -self.subset, self.digest)


def _section_of(r, main_digest: str | None) -> Section:
    return Section(
        r.dataset_digest, bool(r.official), int(r.subset), r.test_official != "false",
        r.dataset_digest == main_digest,
    )  # fmt: skip


def main_section(main_digest: str | None = None) -> Section:
    """The (possibly empty) main section."""
    return Section(main_digest or "", True, 0, True, True)


def sections(recs: pd.DataFrame, metric: str = "test_accuracy") -> dict[Section, pd.DataFrame]:
    """Ranked tables by data group: the main section first (always present, maybe empty),
    then every other group, each ranked on its own, sorted by name."""
    runs = recs[_rankable(recs)]
    digest = _main_digest(runs)
    keys = pd.Series([_section_of(r, digest) for r in runs.itertuples()], index=runs.index)
    main = next((k for k in keys if k.main), main_section(digest))
    out = {main: aggregate(runs[keys == main], metric)}
    for key in sorted(set(keys) - {main}, key=lambda k: k.name):
        out[key] = aggregate(runs[keys == key], metric)
    return out


_STATUS_REASONS = {
    "FAILED": "failed",
    "KILLED": "killed before it finished",
    "RUNNING": "still running, or its process died without ending the run",
    "SCHEDULED": "scheduled, never started",
}


def _reason(r) -> str:
    """Why the record `r` (an itertuples row) is on no leaderboard."""
    status, error = r.status, r.error
    if status == RANKED_STATUS:
        if not r.evaluated:
            return "finished but not evaluated on the test set (run the evaluate step)"
        if r.model_uri == "":  # tagged by hand: evaluate refuses a run without a model
            return "marked evaluated but has no logged model (no model.uri tag)"
        return "marked evaluated but no test_accuracy was logged"
    reason = _STATUS_REASONS.get(status, f"status {status or 'unknown'}")
    return f"{reason}: {error}" if error else reason


def unranked(recs: pd.DataFrame) -> pd.DataFrame:
    """Train runs that are on no leaderboard, with status and reason.

    Failed, killed, running and unevaluated runs, and evaluated runs superseded by a newer
    run of the same configuration, data and seed. Sorted by status, then newest first.
    """
    rest = recs[~_rankable(recs)]
    rest = rest.assign(reason=[_reason(r) for r in rest.itertuples()])
    _, superseded = _split_duplicates(recs)
    superseded = superseded.assign(
        reason=[
            f"superseded by the newer run {newer} of the same configuration, data and seed"
            for newer in superseded["superseded_by"]
        ]
    )
    out = pd.concat(
        [f[list(UNRANKED_COLUMNS)] for f in (rest, superseded) if not f.empty]
        or [pd.DataFrame(columns=list(UNRANKED_COLUMNS))],
        ignore_index=True,
    )
    out = out.sort_values(
        ["status", "start_time", "run_id"], ascending=[True, False, True], na_position="last"
    )
    return out.reset_index(drop=True)


# The champion's order: validation accuracy, then validation log loss, then fewer
# parameters, then the configuration key. Never the test split, whatever the display order.
CHAMPION_ORDER = (("val_accuracy_mean", False), ("val_log_loss_mean", True), ("n_params", True),
                  ("config_key", True))  # fmt: skip


def champion(table: pd.DataFrame) -> pd.Series | None:
    """The section's best configuration on the validation split (CHAMPION_ORDER), with
    best_run_id (the run to register); None when no row has a validation accuracy."""
    if table is None or table.empty:
        return None
    candidates = table[table["val_accuracy_mean"].notna()]
    if candidates.empty:
        return None
    columns, ascending = zip(*CHAMPION_ORDER, strict=True)
    order = candidates.sort_values(list(columns), ascending=list(ascending), na_position="last")
    return order.iloc[0]


def pick_champion(tables: dict[Section, pd.DataFrame]) -> tuple[Section | None, pd.Series | None]:
    """(section, champion row): the best on validation (CHAMPION_ORDER) among the sections
    of the main split, the whole training split and its subsets alike (one validation split
    scores them all, so the best there is the best model, whatever it trained on); else
    from the first other official split, in Section.champion_order, that has one; (None,
    None) when none has."""
    eligible = [s for s in tables if s.champion_order is not None]
    found = [(s, champion(tables[s])) for s in sorted(eligible, key=lambda s: s.champion_order)]
    found = [(s, best) for s, best in found if best is not None]
    if not found:
        return None, None
    pool = [(s, best) for s, best in found if s.main_digest] or found[:1]
    winner = champion(pd.DataFrame([best for _, best in pool]).reset_index(drop=True))
    return pool[winner.name]  # its index: the position in the pool


# --- significance -------------------------------------------------------------------------


def _format_p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def _load(load_correct: Callable[[str], np.ndarray], run_id) -> np.ndarray | str:
    """The run's per-image correctness, or a short reason why it is unavailable."""
    if not isinstance(run_id, str) or not run_id:
        return "no best run"
    try:
        # Any failure of the caller's reader (missing artifact, bad CSV, store error) only
        # costs this row its test, never the whole leaderboard.
        correct = load_correct(run_id)
    except Exception as exc:
        return f"predictions of run {run_id} unavailable ({type(exc).__name__})"
    if correct is None:
        return f"predictions of run {run_id} unavailable"
    return np.asarray(correct, dtype=bool)


def _seeds(row: pd.Series) -> list[float]:
    text = row.get("test_accuracies", "")
    return [float(x) for x in str(text).split(",") if x] if isinstance(text, str) else []


def _test(row: pd.Series, nxt: pd.Series, loaded: Callable) -> tuple[float, str, int]:
    """(p value, method, direction) of one row against the next: Welch's t on the per-seed
    test accuracies when both have 2+ seeds (what the rows rank by), else McNemar's test of
    the two best runs on the same images (run against run). direction: +1 better, -1 worse.

    Seeds that all gave the same accuracy on both sides (a deterministic model such as
    logreg's lbfgs, which ignores its seed) leave Welch no variance to work with: its t is
    NaN for equal means and a meaningless ~1e-29 p value for unequal ones. Those rows are
    single runs in effect, so McNemar compares them."""
    a, b = _seeds(row), _seeds(nxt)
    if len(a) >= 2 and len(b) >= 2 and (np.ptp(a) > 0 or np.ptp(b) > 0):
        result = welch(a, b)
        return (
            result["p_value"],
            f"Welch t, {len(a)} vs {len(b)} seeds",
            int(np.sign(result["statistic"])),
        )
    first, second = loaded(row["best_run_id"]), loaded(nxt["best_run_id"])
    for side in (first, second):
        if isinstance(side, str):
            return np.nan, f"no test: {side}", 0
    if first.shape != second.shape:
        return np.nan, "no test: the two runs were scored on different test sets", 0
    result = mcnemar(first, second)
    return (
        result["p_value"],
        "McNemar, best run vs best run",
        int(np.sign(result["b"] - result["c"])),
    )


def _note(p: float, method: str, direction: int) -> str:
    if np.isnan(p):
        return method
    if p >= ALPHA:
        return f"not significantly different from the next row ({method}; Holm {_format_p(p)})"
    word = "better" if direction > 0 else "worse"
    return f"significantly {word} than the next row ({method}; Holm {_format_p(p)})"


def add_significance(
    table: pd.DataFrame, load_correct: Callable[[str], np.ndarray]
) -> pd.DataFrame:
    """Add `p_vs_next` (raw), `p_vs_next_holm`, `test_vs_next` and `note_vs_next`: each row
    against the next one, Holm-corrected over the section's adjacent tests (SIGNIFICANCE).

    `load_correct(run_id)` returns a bool array (per test image: prediction right), used by
    McNemar's test when a row has a single seed. The last row gets NaN and no note.
    """
    out = table.copy()
    rows = [r for _, r in out.iterrows()]
    cache: dict = {}

    def loaded(run_id):  # predictions are read only for McNemar, once per run
        if run_id not in cache:
            cache[run_id] = _load(load_correct, run_id)
        return cache[run_id]

    tests = [_test(r, rows[i + 1], loaded) for i, r in enumerate(rows[:-1])]
    raw = np.array([p for p, _, _ in tests] + [np.nan] * bool(rows), dtype=float)
    adjusted = holm(raw) if len(raw) else raw
    methods = [m for _, m, _ in tests] + [""] * bool(rows)
    notes = [_note(adjusted[i], m, d) for i, (_, m, d) in enumerate(tests)] + [""] * bool(rows)
    out["p_vs_next"] = pd.Series(raw, index=out.index, dtype=float)
    out["p_vs_next_holm"] = pd.Series(adjusted, index=out.index, dtype=float)
    out["test_vs_next"] = pd.Series(methods, index=out.index, dtype=object)
    out["note_vs_next"] = pd.Series(notes, index=out.index, dtype=object)
    return out


SIGNIFICANCE = (
    "note_vs_next compares each row with the next one: Welch's t-test on the per-seed test"
    " accuracies when both rows have two or more seeds, else McNemar's test of their best runs"
    " on the same 10,000 images (run against run, not configuration against configuration);"
    f" the p values of a section's adjacent tests are Holm-corrected, alpha {ALPHA}."
)


# --- published reference numbers ----------------------------------------------------------


REFERENCES_FILE = Path(__file__).with_name("references.csv")


def load_references(path: Path = REFERENCES_FILE) -> pd.DataFrame:
    """Published numbers (percent) from the reference reports and papers, with
    what is known to be wrong with each (`validity`) and the registry model they concern."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).assign(
        value=lambda f: f["value"].astype(float)
    )


REFERENCES = load_references()


def _versus(row: pd.Series, refs: list[dict]) -> dict[str, str]:
    seeds = _seeds(row)
    low, high = (100 * min(seeds), 100 * max(seeds)) if seeds else (np.nan, np.nan)
    published, versus, within = [], [], []
    for ref in refs:
        value = float(ref["value"])
        published.append(
            f"{value:g} ({ref['source']}, {ref['metric']}{', ' + ref['setting'] if ref['setting'] else ''})"
        )
        versus.append(f"{100 * row['test_accuracy_mean'] - value:+.2f}")
        within.append("one seed" if len(seeds) < 2 else ("yes" if low <= value <= high else "no"))
    return {
        "published": "; ".join(published),
        "ours_minus_published": "; ".join(versus),
        "published_within_seeds": "; ".join(within),
    }


def attach_references(table: pd.DataFrame, by_key: dict[str, list[dict]]) -> pd.DataFrame:
    """Each row that reproduces a published configuration (by config key) gets the published
    number(s), ours (mean test accuracy, points) minus it, and whether it lies within our
    seeds' range (min..max of the per-seed test accuracies)."""
    out = table.copy()
    columns = ("published", "ours_minus_published", "published_within_seeds")
    found = [
        _versus(r, by_key[r["config_key"]]) if r["config_key"] in by_key else {}
        for _, r in out.iterrows()
    ]
    for column in columns:
        out[column] = pd.Series([f.get(column, "") for f in found], index=out.index, dtype=object)
    return out
