"""Run records -> leaderboard tables: one row per configuration, aggregated over seeds.

Pure pandas / numpy, no MLflow and no I/O: the compare step searches the store
(`mlflow.search_runs`, pandas output), reads each best run's predictions.csv, hands both in,
and writes what comes back (leaderboard.csv / .md / .html). So every rule below is tested on
fabricated records.

Rules that keep the table honest:
- only train runs count (Optuna trials and the other steps' runs never do), and only
  FINISHED runs evaluated on the test set are ranked; every other train run is listed by
  `unranked` with its reason, never dropped silently;
- runs are ranked only against runs on the same data: the main section holds the official
  data with the full training split, scored on the official test set; every other
  (data digest, official, training subset) group is a section of its own with its own ranks;
- a configuration is the `config.key` tag (runs that differ only in seed); its figures are
  mean and sample std (ddof=1) over seeds. The std of a single seed is NaN, not 0: one seed
  says nothing about the spread, and the reports render it as '–';
- the best run of a configuration and the champion are chosen by validation accuracy,
  never by test accuracy (choosing on the test set would make its score optimistic);
- published numbers (REFERENCES) are kept apart and flagged where known to be wrong.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.metrics import mcnemar, pareto_front

MAIN_SECTION = "official, full training data"
RANKED_STATUS = "FINISHED"
ALPHA = 0.05  # significance level of the McNemar notes
# Figures aggregated (mean and std over seeds) for every configuration.
SUMMARY_METRICS = ("test_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro")
# Sort metrics where smaller is better (a loss, a calibration error, a cost).
LOWER_IS_BETTER_SUFFIXES = ("_loss", "_ece", "_time_s")
LOWER_IS_BETTER = ("n_params",)
# Parameters that do not make another configuration: the seed (aggregated over) and where
# or how reproducibly the run was executed. Only used when a run lacks the config.key tag.
NOT_CONFIGURATION = ("seed", "resume", "device", "deterministic")
MISSING = "–"  # how NaN (e.g. the std of one seed) is shown

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
)
# Runs of one configuration on one data group; a second run of the same seed supersedes.
GROUP_KEYS = ["config_key", "dataset_digest", "official", "subset", "test_official"]
TABLE_COLUMNS = (
    "rank",
    "model",
    "config_label",
    "n_seeds",
    *(f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")),
    "val_accuracy_mean",
    "val_accuracy_std",
    "n_params",
    "train_time_s_mean",
    "train_images_per_s_mean",
    "pareto_size",
    "pareto_time",
    "device",
    "seeds",
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


def _param_keys(runs: pd.DataFrame) -> pd.Series:
    """A configuration key from the parameters (all but the seed and execution settings).

    Only for runs without the `config.key` tag; prefixed 'params:' so it never collides.
    """
    columns = sorted(c for c in runs if c.startswith("params.") and c[7:] not in NOT_CONFIGURATION)
    if not columns:  # nothing to group by: each run is its own configuration
        return "run:" + _text(runs, "run_id")
    joined = pd.Series("", index=runs.index, dtype=str)
    for column in columns:
        joined = joined + column + "=" + _text(runs, column) + "\x1f"
    return joined.map(lambda s: "params:" + hashlib.sha256(s.encode()).hexdigest()[:16])


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
    fallback_key = _param_keys(runs)
    out["config_key"] = out["config_key"].where(out["config_key"] != "", fallback_key)
    label = _tag(runs, "mlflow.note.content")  # older train runs describe themselves here
    label = label.where(label != "", out["model"])
    out["config_label"] = out["config_label"].where(out["config_label"] != "", label)
    out["seed"] = _integers(_text(runs, "params.seed"))
    out["official"] = _tag(runs, "dataset.official").str.lower() == "true"
    out["subset"] = _integers(_tag(runs, "train.subset", "subset")).fillna(0).astype(int)
    out["evaluated"] = _tag(runs, "evaluated").str.lower() == "true"
    out["test_official"] = out["test_official"].str.lower()
    for column in runs:
        if column.startswith("metrics."):
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
    """FINISHED, evaluated and with a test accuracy: the runs a leaderboard may rank."""
    if recs.empty:
        return pd.Series(False, index=recs.index, dtype=bool)
    return (
        (recs["status"] == RANKED_STATUS) & recs["evaluated"] & _num(recs, "test_accuracy").notna()
    )


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


def _best_run(group: pd.DataFrame) -> pd.Series:
    """The run with the highest best_val_accuracy (ties: lower seed, then run id).

    Never the highest test accuracy: the test set is for reporting, not for choosing.
    """
    order = group.assign(_val=_num(group, "best_val_accuracy")).sort_values(
        ["_val", "seed", "run_id"], ascending=[False, True, True], na_position="last"
    )
    return order.iloc[0]


def _joined(values: pd.Series) -> str:
    return ",".join(sorted({str(v) for v in values if str(v)}))


def _summarise(group: pd.DataFrame, extra: str | None) -> dict:
    """One configuration's row: means and sample stds over its seeds, and its best run."""
    group = group.sort_values(["seed", "run_id"], na_position="last")
    best = _best_run(group)
    row = {"model": best["model"], "config_label": best["config_label"], "n_seeds": len(group)}
    for name in (*SUMMARY_METRICS, *((extra,) if extra else ())):
        row[f"{name}_mean"] = _num(group, name).mean()
        row[f"{name}_std"] = _num(group, name).std(ddof=1)  # NaN for one seed
    row["val_accuracy_mean"] = _num(group, "best_val_accuracy").mean()
    row["val_accuracy_std"] = _num(group, "best_val_accuracy").std(ddof=1)
    row["n_params"] = _num(group, "n_params").median()
    row["train_time_s_mean"] = _num(group, "train_time_s").mean()
    row["train_images_per_s_mean"] = _num(group, "train_images_per_s").mean()
    row["device"] = _joined(group["device"])
    row["seeds"] = ",".join(str(s) for s in group["seed"] if pd.notna(s))
    row["run_ids"] = ",".join(group["run_id"])
    row["best_run_id"] = best["run_id"]
    row["code_version"] = _joined(group["code_version"])
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


def aggregate(recs: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """One row per configuration (config_key + dataset_digest) over evaluated FINISHED runs.

    Mean and sample std (ddof=1; NaN for one seed) of the test accuracy and macro P/R/F1,
    mean validation accuracy (`val_accuracy_mean`, from best_val_accuracy), size, training
    time and speed, the run ids, the best run by validation accuracy and its command.
    Sorted by `<metric>_mean` (descending; ascending for losses, times and sizes), ties
    broken by val_accuracy_mean, then config_label, then config_key; `rank` is 1-based.
    Call it on one section's records (`sections` does): it does not separate data groups.
    """
    sort_column, extra, ascending = _metric_column(metric)
    kept, _ = _split_duplicates(recs)
    if extra and not kept.empty and extra not in kept:
        known = sorted(c for c in kept if c not in RECORD_COLUMNS)
        raise ValueError(f"unknown metric {metric!r}; the runs have: {', '.join(known)}")
    rows = [_summarise(g, extra) for _, g in kept.groupby(["config_key", "dataset_digest"])]
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


def _section_name(
    digest: str, official: bool, subset: int, test_official: str, main: str | None
) -> str:
    if official and digest == main:
        parts = ["official data"]
    elif official:
        parts = [f"official data, other split {digest[:12]}"]
    else:
        parts = [f"unofficial data {digest[:12] or '(no digest)'}"]
    if subset:
        parts.append(f"training subset {subset}")
    if test_official == "false":
        parts.append("unofficial test set")
    return MAIN_SECTION if parts == ["official data"] else ", ".join(parts)


def sections(recs: pd.DataFrame, metric: str = "test_accuracy") -> dict[str, pd.DataFrame]:
    """Ranked tables by data group: MAIN_SECTION first (always present, maybe empty).

    The main section holds runs on the official data (the most common official digest),
    full training split, not scored on an unofficial test set. Every other (digest,
    official, subset, test set) group gets its own section, ranked on its own, sorted by name.
    """
    runs = recs[_rankable(recs)]
    main = _main_digest(runs)
    names = pd.Series(
        [
            _section_name(r.dataset_digest, r.official, r.subset, r.test_official, main)
            for r in runs.itertuples()
        ],
        index=runs.index,
        dtype=str,
    )
    out = {MAIN_SECTION: aggregate(runs[names == MAIN_SECTION], metric)}
    for name in sorted(set(names) - {MAIN_SECTION}):
        out[name] = aggregate(runs[names == name], metric)
    return out


_STATUS_REASONS = {
    "FAILED": "failed",
    "KILLED": "killed before it finished",
    "RUNNING": "still running, or its process died without ending the run",
    "SCHEDULED": "scheduled, never started",
}


def _reason(status: str, evaluated: bool, error: str) -> str:
    if status == RANKED_STATUS:
        if evaluated:
            return "marked evaluated but no test_accuracy was logged"
        return "finished but not evaluated on the test set (run the evaluate step)"
    reason = _STATUS_REASONS.get(status, f"status {status or 'unknown'}")
    return f"{reason}: {error}" if error else reason


def unranked(recs: pd.DataFrame) -> pd.DataFrame:
    """Train runs that are on no leaderboard, with status and reason.

    Failed, killed, running and unevaluated runs, and evaluated runs superseded by a newer
    run of the same configuration, data and seed. Sorted by status, then newest first.
    """
    rest = recs[~_rankable(recs)]
    rest = rest.assign(reason=[_reason(r.status, r.evaluated, r.error) for r in rest.itertuples()])
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


def champion(main_section: pd.DataFrame) -> pd.Series | None:
    """The configuration with the best val_accuracy_mean (ties: more seeds, then lower rank).

    Its row, with best_run_id (the run to register). None when no row has a validation
    accuracy. Never chosen by test accuracy, whatever the display order is.
    """
    if main_section is None or main_section.empty:
        return None
    candidates = main_section[main_section["val_accuracy_mean"].notna()]
    if candidates.empty:
        return None
    order = candidates.sort_values(
        ["val_accuracy_mean", "n_seeds", "rank"], ascending=[False, False, True], kind="stable"
    )
    return order.iloc[0]


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


def _compare(a: np.ndarray | str, b: np.ndarray | str) -> tuple[float, str]:
    """(p value, note) of McNemar's test of this row's best run against the next row's."""
    for side in (a, b):
        if isinstance(side, str):
            return np.nan, f"no test: {side}"
    if a.shape != b.shape:
        return np.nan, "no test: the two runs were scored on different test sets"
    result = mcnemar(a, b)
    p = result["p_value"]
    if p >= ALPHA:
        return p, f"not significantly different from the next row ({_format_p(p)})"
    direction = "better" if result["b"] > result["c"] else "worse"
    return p, f"significantly {direction} than the next row ({_format_p(p)})"


def add_significance(
    table: pd.DataFrame, load_correct: Callable[[str], np.ndarray]
) -> pd.DataFrame:
    """Add `mcnemar_p_vs_next` and `note_vs_next`: each row's best run against the next row's.

    `load_correct(run_id)` returns a bool array (per test image: prediction right). McNemar's
    test (metrics.mcnemar) pairs the two runs image by image; 'worse' can appear because best
    runs are picked by validation accuracy while rows are ordered by mean test accuracy.
    The last row and rows whose predictions cannot be loaded get NaN and a note.
    """
    out = table.copy()
    ids = list(out["best_run_id"]) if "best_run_id" in out else []
    loaded = {run_id: _load(load_correct, run_id) for run_id in dict.fromkeys(ids)}
    p_values, notes = [], []
    for i, run_id in enumerate(ids):
        if i + 1 == len(ids):
            p, note = np.nan, ""
        else:
            p, note = _compare(loaded[run_id], loaded[ids[i + 1]])
        p_values.append(p)
        notes.append(note)
    out["mcnemar_p_vs_next"] = pd.Series(p_values, index=out.index, dtype=float)
    out["note_vs_next"] = pd.Series(notes, index=out.index, dtype=object)
    return out


# --- published reference numbers ----------------------------------------------------------

_AS_REPORTED = "no problem known; as reported, not reproduced here"
_000 = "figures of a cited article the report says it reproduced; its own runs give only losses"
_001_INVALID = (
    "invalid: its per-class supports (980, 1135, 1032, ...) are MNIST-digit test counts;"
    " Fashion-MNIST has 1,000 per class"
)
_002 = (
    "its validation set is 10,000 images (apparently the test images), normalised and"
    " augmented like training"
)
_003 = "text and printed output disagree (0.9183 printed for both); unreliable"
_PAPER = "Fashion-MNIST paper table 3"
_ZALANDO = "zalando README benchmark list"
# (source, model, setting, metric, value %, validity, registry_model); ../shared/NOTES.md.
_REFERENCE_ROWS = [
    ("000 (PyTorch)", "Mini ResNet", "", "test accuracy", 92.95, _000, "mini_resnet"),
    ("000 (PyTorch)", "Mini ResNet", "", "validation accuracy", 92.28, _000, "mini_resnet"),
    ("000 (PyTorch)", "Mini ResNet", "", "train accuracy", 94.40, _000, "mini_resnet"),
    ("000 (PyTorch)", "Mini ResNet", "", "test precision", 93.08, _000, "mini_resnet"),
    ("000 (PyTorch)", "Mini ResNet", "", "test recall", 92.95, _000, "mini_resnet"),
    ("000 (PyTorch)", "Mini ResNet", "", "test F1", 92.98, _000, "mini_resnet"),
    ("000 (PyTorch), cited table", "CNNs", "lowest of the cited range (Bhatnagar et al. 2017,"
     " Manessi & Rozza 2018)", "test accuracy", 90.51, "cited, not run by the report", ""),
    ("000 (PyTorch), cited table", "CNNs", "highest of the cited range (Bhatnagar et al. 2017,"
     " Manessi & Rozza 2018)", "test accuracy", 94.41, "cited, not run by the report", ""),
    ("001 (TensorFlow)", "3-conv BatchNorm CNN", "", "test accuracy", 99.43, _001_INVALID, "cnn3"),
    ("001 (TensorFlow), cited", "MLP", "Xiao et al. 2017", "test accuracy", 87.1,
     "cited from the Fashion-MNIST paper, not run by the report", "sk_mlp"),
    ("001 (TensorFlow), cited", "RandomForest", "Xiao et al. 2017", "test accuracy", 87.3,
     "cited from the Fashion-MNIST paper, not run by the report", "random_forest"),
    ("002 (Keras)", "1-layer CNN", "10k-image training subset", "validation accuracy", 91.97,
     _002, "cnn1"),
    ("002 (Keras)", "1-layer CNN", "full training data", "validation accuracy", 90.29, _002,
     "cnn1"),
    ("002 (Keras)", "4-layer CNN", "10k-image training subset", "validation accuracy", 89.92,
     _002, "cnn4"),
    ("002 (Keras)", "4-layer CNN", "full training data", "validation accuracy", 92.51, _002,
     "cnn4"),
    ("002 (Keras)", "LeNet-5", "full training data; 136,586 parameters", "validation accuracy",
     92.11, _002, "lenet5"),
    ("003 (R/Keras)", "CNN", "printed output", "test accuracy", 92.51,
     "the text says 92.35%; report unreliable", ""),
    ("003 (R/Keras)", "CNN", "claimed in the text", "test accuracy", 92.35,
     "the printed output says 92.51%; report unreliable", ""),
    ("003 (R/Keras)", "improved CNN", "claimed in the text", "test accuracy", 94.37, _003, ""),
    ("003 (R/Keras)", "improved CNN", "printed output", "test accuracy", 91.83, _003, ""),
    ("003 (R/Keras)", "LSTM", "claimed in the text", "test accuracy", 92.21, _003, "lstm"),
    ("003 (R/Keras)", "LSTM", "printed output", "test accuracy", 91.83, _003, "lstm"),
    *(
        ("004 (PyTorch)", "ResNet-18", setting, "test accuracy", value, _AS_REPORTED, "resnet18")
        for setting, value in (
            ("baseline: Adam lr=3e-4, 5 epochs", 92.28),
            ("10 epochs", 92.69),
            ("20 epochs", 92.34),
            ("SGD", 88.27),
            ("AdamW", 92.48),
            ("NLL loss", 92.25),
            ("MSE loss", 92.5),
            ("flip + AdamW + MSE", 92.86),
        )
    ),
    *(
        (_PAPER, model, setting, "test accuracy", value,
         "published (arXiv 1708.07747); best setting of each classifier", registry)
        for model, setting, value, registry in (
            ("SVC", "C=10, rbf", 89.7, "svc"),
            ("GradientBoosting", "best setting", 88.0, ""),
            ("RandomForest", "100 trees, entropy, depth 100", 87.3, "random_forest"),
            ("MLPClassifier", "relu, 100", 87.1, "sk_mlp"),
            ("KNN", "k=5, distance, p=1", 85.4, ""),
            ("LogisticRegression", "C=1, l1", 84.2, "logreg"),
            ("LinearSVC", "best setting", 83.6, ""),
        )
    ),
    (_ZALANDO, "ResNet18", "flips, translation, rotation", "test accuracy", 94.9,
     "unverified by its maintainers", "resnet18"),
    (_ZALANDO, "WRN-28-10", "random erasing", "test accuracy", 96.3,
     "unverified by its maintainers", ""),
    ("arXiv 2006.09042", "fine-tuned DARTS", "best published", "test accuracy", 96.91,
     "published; not reproduced here", ""),
]  # fmt: skip
REFERENCES = pd.DataFrame(
    _REFERENCE_ROWS,
    columns=["source", "model", "setting", "metric", "value", "validity", "registry_model"],
)


# --- rendering ----------------------------------------------------------------------------


def _pct(value, digits: int = 2) -> str:
    return MISSING if pd.isna(value) else f"{100 * value:.{digits}f}"


def _strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text, '' for missing (nullable integer columns refuse fillna(''))."""
    frame = frame.astype(object)
    return frame.where(frame.notna(), "").astype(str)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """The compact, formatted columns of a section table (all strings)."""
    sort_column = table.attrs.get("sort_column", "test_accuracy_mean")
    out = pd.DataFrame(
        {
            "rank": table["rank"].astype(str),
            "model": table["model"],
            "config_label": table["config_label"],
            "n_seeds": table["n_seeds"].astype(str),
            "test_accuracy % (mean ± std)": [
                f"{_pct(m)} ± {_pct(s)}"
                for m, s in zip(
                    table["test_accuracy_mean"], table["test_accuracy_std"], strict=True
                )
            ],
            "test_f1_macro %": table["test_f1_macro_mean"].map(_pct),
            "val_accuracy_mean %": table["val_accuracy_mean"].map(_pct),
            "n_params": table["n_params"].map(lambda v: MISSING if pd.isna(v) else f"{v:,.0f}"),
            "train_time_s_mean": table["train_time_s_mean"].map(
                lambda v: MISSING if pd.isna(v) else f"{v:.1f}"
            ),
        }
    )
    if sort_column not in (
        "test_accuracy_mean",
        "val_accuracy_mean",
        "n_params",
        "train_time_s_mean",
    ):
        out.insert(
            4, sort_column, table[sort_column].map(lambda v: MISSING if pd.isna(v) else f"{v:.4g}")
        )
    out["pareto"] = [
        ", ".join(n for n, f in (("size", s), ("time", t)) if f)
        for s, t in zip(table["pareto_size"], table["pareto_time"], strict=True)
    ]
    if "note_vs_next" in table:
        out["note_vs_next"] = table["note_vs_next"].fillna("")
    return out


def _champion_text(best: pd.Series | None) -> str:
    if best is None:
        return (
            "none (no evaluated run with a validation accuracy on the official data with the"
            " full training split)"
        )
    return (
        f"{best['model']} ({best['config_label']}), chosen by validation accuracy, never by"
        f" test accuracy: val {_pct(best['val_accuracy_mean'])}%, test"
        f" {_pct(best['test_accuracy_mean'])} ± {_pct(best['test_accuracy_std'])}% over"
        f" {best['n_seeds']} seed(s); best run {best['best_run_id']}"
    )


def _section_intro(name: str, table: pd.DataFrame) -> str:
    metric = table.attrs.get("metric", "test_accuracy")
    text = (
        f"Ranked by the mean {metric} over seeds (mean ± sample std, ddof=1; {MISSING} for one"
        " seed). Each configuration's best run is chosen by validation accuracy; note_vs_next"
        " is McNemar's test of that run against the next row's best run on the same images."
    )
    if name != MAIN_SECTION:
        text = (
            "Kept apart from the main section (other data, training subset or test set): its"
            " ranks are not comparable with the main section's. " + text
        )
    return text


def _commands(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(rank, command, detail) per row: how to reproduce the row's best run."""
    return [
        (
            str(r["rank"]),
            r["command"] or "(command not recorded)",
            f"best run {r['best_run_id']}, code {r['code_version'] or 'unknown'}",
        )
        for _, r in table.iterrows()
    ]


def _blocks(sections, unranked_runs, references, best) -> list[tuple]:
    """The report as a list of blocks, rendered by to_markdown and to_html alike."""
    blocks = [("h1", "Fashion-MNIST leaderboard"), ("p", "Champion", _champion_text(best))]
    for name, table in sections.items():
        blocks += [("h2", name), ("p", "", _section_intro(name, table))]
        if table.empty:
            blocks.append(("p", "", "No evaluated runs."))
            continue
        blocks += [("table", _display(table)), ("commands", _commands(table))]
    blocks.append(("h2", "Not ranked: failed, killed, running, unevaluated or superseded runs"))
    if unranked_runs is None or unranked_runs.empty:
        blocks.append(("p", "", "None."))
    else:
        shown = unranked_runs.drop(columns=["start_time"], errors="ignore")
        blocks.append(("table", _strings(shown)))
    blocks += [
        ("h2", "Published reference numbers (not produced by this pipeline)"),
        ("p", "", "Figures copied from the reports and papers in NOTES.md (percent). None was"
         " produced by this pipeline, settings differ, and several are known to be wrong:"
         " read the validity column before comparing."),
        ("table", references.assign(value=references["value"].map("{:g}".format)).astype(str)),
    ]  # fmt: skip
    return blocks


def _md_cell(text: str) -> str:
    # A bare '|' (config labels contain one) would split a Markdown table cell.
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(
    sections: dict[str, pd.DataFrame],
    unranked: pd.DataFrame,
    references: pd.DataFrame,
    champion: pd.Series | None,
) -> str:
    """The leaderboard as Markdown (leaderboard.md)."""
    lines = []
    for block in _blocks(sections, unranked, references, champion):
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lead = f"**{block[1]}:** " if block[1] else ""
            lines += [lead + block[2], ""]
        elif kind == "table":
            cells = block[1].map(_md_cell).rename(columns=_md_cell)
            lines += [cells.to_markdown(index=False, disable_numparse=True), ""]
        else:
            lines += [f"{rank}. `{cmd}`: {detail}" for rank, cmd, detail in block[1]] + [""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 110rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
code { font-size: 0.8rem; background: #f4f4f4; padding: 0 0.2rem; }
"""


def to_html(
    sections: dict[str, pd.DataFrame],
    unranked: pd.DataFrame,
    references: pd.DataFrame,
    champion: pd.Series | None,
) -> str:
    """The leaderboard as a standalone HTML page (leaderboard.html): inline CSS, no links."""
    body = []
    for block in _blocks(sections, unranked, references, champion):
        kind, esc = block[0], html.escape
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            lead = f"<strong>{esc(block[1])}:</strong> " if block[1] else ""
            body.append(f"<p>{lead}{esc(block[2])}</p>")
        elif kind == "table":
            body.append(block[1].to_html(index=False, escape=True, border=0))
        else:
            items = "".join(
                f'<li value="{esc(rank)}"><code>{esc(cmd)}</code>: {esc(detail)}</li>'
                for rank, cmd, detail in block[1]
            )
            body.append(f"<ol>{items}</ol>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Fashion-MNIST leaderboard</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def to_csv_frame(sections: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All sections stacked (leaderboard.csv), the section name in the first column."""
    frames = [table.assign(section=name) for name, table in sections.items() if not table.empty]
    if not frames:
        return pd.DataFrame(columns=["section", *TABLE_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    return out[["section", *(c for c in out if c != "section")]]
