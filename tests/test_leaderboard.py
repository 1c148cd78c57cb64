"""pipeline.leaderboard on fabricated `mlflow.search_runs`-shaped frames (no store, no I/O)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline import leaderboard as lb
from pipeline import report
from pipeline.config import MODEL_NAMES
from pipeline.errors import UserError

OFFICIAL = "a" * 64
OTHER_SPLIT = "b" * 64
UNOFFICIAL = "c" * 64
T0 = pd.Timestamp("2026-11-01", tz="UTC")


def run(
    run_id: str,
    *,
    key: str = "k1",
    seed: int = 1,
    step: str = "train",
    status: str = "FINISHED",
    model: str = "cnn2",
    label: str | None = None,
    digest: str = OFFICIAL,
    official: str = "true",
    subset: str = "0",
    evaluated: bool = True,
    test_official: str | None = None,
    minute: int = 0,
    **metrics: float,
) -> dict:
    """One row as `mlflow.search_runs(output_format='pandas')` returns it."""
    row = {
        "run_id": run_id,
        "status": status,
        "start_time": T0 + pd.Timedelta(minutes=minute),
        "end_time": T0 + pd.Timedelta(minutes=minute + 1),
        "params.seed": str(seed),
        "params.model": model,
        "tags.pipeline.step": step,
        "tags.model": model,
        "tags.dataset.digest": digest,
        "tags.dataset.official": official,
        "tags.train.subset": subset,
        "tags.config.key": key,
        "tags.config.label": label or f"{model} | adam lr=0.001 ({key})",
        "tags.command": f"python -m pipeline train --model {model} --seed {seed}",
        "tags.code.version": "abc123",
        "tags.device": "cpu",
    }
    if evaluated:
        row["tags.evaluated"] = "true"
        row["tags.test.official"] = test_official or "true"
        row["tags.model.uri"] = f"models:/m-{run_id}"
    row |= {f"metrics.{name}": value for name, value in metrics.items()}
    return row


def scored(run_id: str, test: float, val: float, **kwargs) -> dict:
    """An evaluated run with every metric the leaderboard aggregates."""
    metrics = {
        "test_accuracy": test,
        "test_precision_macro": test + 0.001,
        "test_recall_macro": test,
        "test_f1_macro": test - 0.001,
        "best_val_accuracy": val,
        "n_params": 1000.0,
        "train_time_s": 10.0,
        "train_images_per_s": 5000.0,
    }
    return run(run_id, **(metrics | kwargs))


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# --- records ------------------------------------------------------------------------------


def test_records_keep_train_runs_with_plain_names():
    runs = frame(
        scored("r1", 0.9, 0.91, seed=7),
        scored("t1", 0.99, 0.99, step="trial"),
        run("e1", step="evaluate"),
        run("c1", step="compare", evaluated=False),
    )
    recs = lb.records(runs)
    assert recs["run_id"].tolist() == ["r1"]
    row = recs.iloc[0]
    assert row["seed"] == 7 and row["subset"] == 0
    assert bool(row["official"]) is True and bool(row["evaluated"]) is True
    assert row["config_key"] == "k1" and row["dataset_digest"] == OFFICIAL
    assert row["test_accuracy"] == 0.9 and "metrics.test_accuracy" not in recs
    assert set(lb.RECORD_COLUMNS) <= set(recs.columns)


@pytest.mark.parametrize(
    "runs",
    [
        pd.DataFrame(),  # search_runs on an empty experiment
        frame({"run_id": "x", "status": "RUNNING", "tags.pipeline.step": "train"}),
        frame(run("u1", evaluated=False)),  # no metric column at all
    ],
    ids=["empty", "bare", "unevaluated"],
)
def test_missing_columns_are_tolerated(runs):
    recs = lb.records(runs)
    secs = lb.sections(recs)
    (main,) = secs
    assert main.main and main.name == lb.MAIN_SECTION and secs[main].empty
    assert lb.champion(secs[main]) is None
    assert len(lb.unranked(recs)) == len(recs)
    text = report.to_markdown(secs, lb.unranked(recs), lb.REFERENCES, None)
    assert "No evaluated runs." in text
    assert report.to_csv_frame(secs).empty


def named(secs: dict) -> dict:
    """Sections by their printed names (for assertions only: code matches typed fields)."""
    return {section.name: table for section, table in secs.items()}


def test_a_run_without_config_key_is_a_configuration_of_its_own():
    rows = [scored(f"r{s}", 0.9, 0.9, seed=s) for s in (1, 2)]
    runs = frame(*rows).drop(columns=["tags.config.key"])
    recs = lb.records(runs)
    assert recs["config_key"].tolist() == ["run:r1", "run:r2"]
    assert lb.aggregate(recs)["n_seeds"].tolist() == [1, 1]


# --- aggregation --------------------------------------------------------------------------


def test_mean_std_and_count_over_seeds():
    tests, vals = [0.90, 0.92, 0.95], [0.91, 0.93, 0.92]
    rows = [scored(f"a{i}", t, v, seed=i) for i, (t, v) in enumerate(zip(tests, vals, strict=True))]
    rows.append(scored("b0", 0.80, 0.81, key="k2", seed=0))
    table = lb.aggregate(lb.records(frame(*rows)))
    first, single = table.iloc[0], table.iloc[1]
    assert first["n_seeds"] == 3 and first["rank"] == 1
    assert first["test_accuracy_mean"] == pytest.approx(np.mean(tests))
    assert first["test_accuracy_std"] == pytest.approx(np.std(tests, ddof=1))
    assert first["val_accuracy_mean"] == pytest.approx(np.mean(vals))
    assert first["test_f1_macro_mean"] == pytest.approx(np.mean(tests) - 0.001)
    assert first["run_ids"] == "a0,a1,a2" and first["seeds"] == "0,1,2"
    assert first["best_run_id"] == "a1"  # best validation (0.93), not best test (a2, 0.95)
    assert first["command"].endswith("--seed 1")
    assert single["n_seeds"] == 1 and math.isnan(single["test_accuracy_std"])
    assert "80.00 ± –" in report.to_markdown({lb.main_section(): table}, None, lb.REFERENCES, None)
    names = [c for c in table if c.endswith(("_mean", "_std"))]
    assert all(c.startswith(("test_", "val_", "train_")) for c in names)


def test_order_by_metric_with_deterministic_tie_break():
    rows = [
        scored("low", 0.85, 0.99, key="k-low", label="z low"),
        scored("tie-val-lo", 0.90, 0.90, key="k-a", label="a"),
        scored("tie-val-hi", 0.90, 0.95, key="k-b", label="b"),
        scored("tie-label-b", 0.90, 0.90, key="k-c", label="c"),
        scored("top", 0.95, 0.80, key="k-top", label="top"),
    ]
    expected = ["top", "tie-val-hi", "tie-val-lo", "tie-label-b", "low"]
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        table = lb.aggregate(lb.records(frame(*[rows[i] for i in order])))
        assert table["best_run_id"].tolist() == expected
        assert table["rank"].tolist() == [1, 2, 3, 4, 5]
    by_val = lb.aggregate(lb.records(frame(*rows)), metric="val_accuracy")
    assert by_val["best_run_id"].iloc[0] == "low"


def test_the_sort_metric_is_shown_once():
    """--metric test_f1_macro showed F1 twice (its own column and the sort column)."""
    rows = [scored("a", 0.9, 0.9, key="ka", test_loss=0.5), scored("b", 0.8, 0.8, key="kb")]
    recs = lb.records(frame(*rows))
    for metric, column in (("test_f1_macro", "test_f1_macro %"), ("test_loss", "test_loss_mean")):
        table = lb.aggregate(recs, metric=metric)
        table.attrs["sort_column"] = f"{metric}_mean"
        text = report.to_markdown({lb.main_section(): table}, None, lb.REFERENCES, None)
        header = next(line for line in text.splitlines() if line.startswith("| rank"))
        assert header.count(metric) == 1 and column in header, header


def test_lower_is_better_metric_and_unknown_metric():
    rows = [
        scored("a", 0.9, 0.9, key="ka", test_loss=0.5),
        scored("b", 0.8, 0.8, key="kb", test_loss=0.2),
    ]
    recs = lb.records(frame(*rows))
    table = lb.aggregate(recs, metric="test_loss")
    assert table["best_run_id"].tolist() == ["b", "a"] and "test_loss_mean" in table
    with pytest.raises(UserError, match="no evaluated train run has the metric test_nonsense"):
        lb.aggregate(recs, metric="test_nonsense")


def test_a_rerun_of_the_same_seed_supersedes_the_older_run():
    rows = [
        scored("old", 0.70, 0.70, seed=1, minute=0),
        scored("new", 0.90, 0.90, seed=1, minute=5),
    ]
    recs = lb.records(frame(*rows))
    table = lb.aggregate(recs)
    assert table["n_seeds"].tolist() == [1] and table["run_ids"].tolist() == ["new"]
    out = lb.unranked(recs)
    assert out["run_id"].tolist() == ["old"] and "new" in out["reason"][0]


# --- sections and unranked runs ------------------------------------------------------------


def test_other_data_subsets_and_test_sets_get_their_own_sections():
    rows = [
        scored("m1", 0.90, 0.90, seed=1),
        scored("m2", 0.91, 0.90, seed=2),
        scored("m3", 0.89, 0.88, key="k2"),
        scored("sub", 0.99, 0.99, key="k-sub", subset="5000"),
        scored("unoff", 0.99, 0.99, key="k-u", digest=UNOFFICIAL, official="false"),
        scored("split", 0.99, 0.99, key="k-s", digest=OTHER_SPLIT),
        scored("tst", 0.99, 0.99, key="k-t", test_official="false"),
    ]
    secs = lb.sections(lb.records(frame(*rows)))
    assert list(secs)[0].main
    secs = named(secs)
    main = secs[lb.MAIN_SECTION]
    assert sorted(main["best_run_id"]) == ["m1", "m3"] and main["n_seeds"].tolist() == [2, 1]
    others = {
        name: t["best_run_id"].tolist() for name, t in secs.items() if name != lb.MAIN_SECTION
    }
    assert others == {
        "official data, training subset 5000": ["sub"],
        f"official data, other split {OTHER_SPLIT[:12]}": ["split"],
        "official data, unofficial test set": ["tst"],
        f"unofficial data {UNOFFICIAL[:12]}": ["unoff"],
    }
    assert all(t["rank"].tolist() == [1] for name, t in secs.items() if name != lb.MAIN_SECTION)
    stacked = report.to_csv_frame(lb.sections(lb.records(frame(*rows))))
    assert stacked.columns[0] == "section" and len(stacked) == 6
    assert set(stacked["section"]) == set(secs)


def test_main_section_uses_the_most_common_official_digest():
    rows = [scored(f"b{i}", 0.9, 0.9, seed=i, digest=OTHER_SPLIT) for i in range(3)]
    rows.append(scored("a", 0.99, 0.99, key="k2"))
    secs = named(lb.sections(lb.records(frame(*rows))))
    assert secs[lb.MAIN_SECTION]["best_run_id"].tolist() == ["b0"]
    assert f"official data, other split {OFFICIAL[:12]}" in secs


def test_failed_killed_running_unevaluated_runs_are_only_in_unranked():
    rows = [
        scored("ok", 0.9, 0.9),
        scored("failed", 0.99, 0.99, key="kf", status="FAILED") | {"tags.error": "ValueError: x"},
        scored("killed", 0.99, 0.99, key="kk", status="KILLED"),
        run("running", key="kr", status="RUNNING", evaluated=False),
        run("unevaluated", key="ku", evaluated=False, best_val_accuracy=0.99),
    ]
    recs = lb.records(frame(*rows))
    ranked = report.to_csv_frame(lb.sections(recs))
    assert ranked["best_run_id"].tolist() == ["ok"]
    out = lb.unranked(recs).set_index("run_id")
    assert sorted(out.index) == ["failed", "killed", "running", "unevaluated"]
    assert (
        out.loc["failed", "status"] == "FAILED" and "ValueError: x" in out.loc["failed", "reason"]
    )
    assert "killed" in out.loc["killed", "reason"]
    assert "running" in out.loc["running", "reason"]
    assert "not evaluated" in out.loc["unevaluated", "reason"]


def test_an_evaluated_run_without_a_logged_model_is_never_ranked_nor_champion():
    """A run tagged `evaluated` by hand, with a test accuracy but no logged model, would
    have become champion with nothing to register (compare crashed on `model.uri`)."""
    hand_made = scored("hand", 0.99, 0.99, key="k-hand")
    del hand_made["tags.model.uri"]
    recs = lb.records(frame(scored("ok", 0.9, 0.9), hand_made))
    tables = lb.sections(recs)
    assert report.to_csv_frame(tables)["best_run_id"].tolist() == ["ok"]
    assert lb.pick_champion(tables)[1]["best_run_id"] == "ok"
    out = lb.unranked(recs).set_index("run_id")
    assert out.index.tolist() == ["hand"]
    assert "no logged model" in out.loc["hand", "reason"]


# --- champion ------------------------------------------------------------------------------


def test_champion_is_chosen_by_validation_not_test():
    rows = [
        scored("test-best", 0.95, 0.90, key="k-test", seed=1),
        scored("test-best2", 0.95, 0.90, key="k-test", seed=2),
        scored("val-best", 0.90, 0.94, key="k-val"),
    ]
    main = named(lb.sections(lb.records(frame(*rows))))[lb.MAIN_SECTION]
    assert main["best_run_id"].iloc[0] == "test-best"  # rank 1 by test accuracy
    best = lb.champion(main)
    assert best["best_run_id"] == "val-best" and best["rank"] == 2


def test_champion_ties_are_broken_on_validation_then_size_then_key():
    """Validation accuracies are multiples of 1/6000: ties happen. They are broken by the
    validation log loss, then fewer parameters, then the key; never by test accuracy."""
    tie = {"val_log_loss": 0.30, "n_params": 1000.0}
    rows = [
        scored("test-best", 0.99, 0.92, key="k1", **tie),
        scored("lower-loss", 0.80, 0.92, key="k2", **(tie | {"val_log_loss": 0.29})),
        scored("smaller", 0.81, 0.92, key="k3", **(tie | {"n_params": 10.0})),
        scored("key-a", 0.70, 0.92, key="k0", **tie),
    ]
    main = named(lb.sections(lb.records(frame(*rows))))[lb.MAIN_SECTION]
    assert main["best_run_id"].iloc[0] == "test-best"
    assert lb.champion(main)["best_run_id"] == "lower-loss"
    main = main[main["best_run_id"] != "lower-loss"]
    assert lb.champion(main)["best_run_id"] == "smaller"
    main = main[main["best_run_id"] != "smaller"]
    assert lb.champion(main)["best_run_id"] == "key-a"  # k0 < k1: the test-best run loses


# --- significance --------------------------------------------------------------------------


def worse_copy(a: np.ndarray, only_a: int, only_other: int) -> np.ndarray:
    """A correctness vector that disagrees with `a` on exactly only_a + only_other images."""
    other = a.copy()
    other[np.flatnonzero(a)[:only_a]] = False  # images only `a` gets right
    other[np.flatnonzero(~a)[:only_other]] = True  # images only `other` gets right
    return other


def test_single_seed_rows_use_mcnemar_holm_corrected():
    first = np.random.default_rng(0).random(10_000) < 0.9  # (10000,) bool
    second = worse_copy(first, 15, 3)  # b=15, c=3: significant
    third = worse_copy(second, 5, 4)  # b=5, c=4: not significant
    arrays = {"r1": first, "r2": second, "r3": third, "r4": None}
    rows = [
        scored("r1", 0.95, 0.95, key="k1"),
        scored("r2", 0.94, 0.94, key="k2"),
        scored("r3", 0.93, 0.93, key="k3"),
        scored("r4", 0.92, 0.92, key="k4"),
    ]

    def load(run_id: str) -> np.ndarray:
        if arrays[run_id] is None:
            raise FileNotFoundError("predictions.csv")
        return arrays[run_id]

    table = lb.aggregate(lb.records(frame(*rows)))
    out = lb.add_significance(table, load)
    raw = []
    for i, (a, b) in enumerate([(first, second), (second, third)]):
        only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert only_a + only_b < 25  # the exact test's regime
        raw.append(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
        assert out["p_vs_next"][i] == pytest.approx(raw[i])
        assert out["test_vs_next"][i] == "McNemar, best run vs best run"
    # Holm over the two available tests: the smaller p doubled, the larger kept (monotone)
    holm = [min(1, 2 * min(raw)), max(2 * min(raw), max(raw))]
    assert out["p_vs_next_holm"][:2].tolist() == pytest.approx(holm)
    assert out["note_vs_next"][0].startswith("significantly better than the next row (McNemar")
    assert out["note_vs_next"][1].startswith("not significantly different from the next row")
    assert math.isnan(out["p_vs_next"][2]) and "unavailable" in out["note_vs_next"][2]
    assert math.isnan(out["p_vs_next"][3]) and out["note_vs_next"][3] == ""
    assert "p_vs_next" not in table  # the input is not modified


def test_rows_with_several_seeds_use_welch_on_per_seed_accuracies():
    a, b, c = [0.930, 0.932, 0.931], [0.900, 0.902, 0.899], [0.898, 0.903, 0.897]
    rows = [scored(f"a{i}", t, 0.9, key="ka", seed=i) for i, t in enumerate(a)]
    rows += [scored(f"b{i}", t, 0.9, key="kb", seed=i) for i, t in enumerate(b)]
    rows += [scored(f"c{i}", t, 0.9, key="kc", seed=i) for i, t in enumerate(c)]
    table = lb.aggregate(lb.records(frame(*rows)))
    out = lb.add_significance(table, lambda _: pytest.fail("McNemar used for multi-seed rows"))
    for i, (x, y) in enumerate([(a, b), (b, c)]):
        reference = stats.ttest_ind(x, y, equal_var=False).pvalue
        assert out["p_vs_next"][i] == pytest.approx(reference)
        assert out["test_vs_next"][i] == "Welch t, 3 vs 3 seeds"
    assert out["note_vs_next"][0].startswith("significantly better")


def test_rows_whose_seeds_all_agree_use_mcnemar_instead_of_a_varianceless_welch():
    # logreg's lbfgs ignores its seed: every seed gives one accuracy, so Welch has no variance
    # (NaN t for equal means, a spurious p~1e-29 for unequal ones)
    first = np.random.default_rng(1).random(10_000) < 0.8
    same, worse = first.copy(), worse_copy(first, 15, 3)  # the exact test's regime
    arrays = {"a0": first, "b0": same, "c0": worse}
    rows = [scored(f"a{i}", 0.8, 0.81, key="ka", seed=i) for i in range(2)]
    rows += [scored(f"b{i}", 0.8, 0.80, key="kb", seed=i) for i in range(2)]
    rows += [scored(f"c{i}", 0.797, 0.79, key="kc", seed=i) for i in range(3)]
    table = lb.aggregate(lb.records(frame(*rows)))
    out = lb.add_significance(table, lambda run_id: arrays[run_id])
    assert out["test_vs_next"].tolist()[:2] == ["McNemar, best run vs best run"] * 2
    assert out["note_vs_next"][0].startswith("not significantly different")  # identical runs
    b, c = int(np.sum(same & ~worse)), int(np.sum(~same & worse))
    assert out["p_vs_next"][1] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


# --- rendering and references --------------------------------------------------------------


def test_markdown_and_html_hold_sections_champion_and_references():
    rows = [
        scored("m1", 0.9123, 0.93, key="k1", label="lenet5 | adam lr=0.001"),
        scored("m2", 0.9000, 0.92, key="k2", label="cnn2 | sgd <fast>"),
        scored("sub", 0.99, 0.99, key="k-sub", subset="5000"),
        run("dead", key="kd", status="FAILED", evaluated=False),
    ]
    recs = lb.records(frame(*rows))
    secs = lb.sections(recs)
    secs = {key: lb.add_significance(t, lambda _: np.ones(10_000, bool)) for key, t in secs.items()}
    best = lb.champion(next(t for key, t in secs.items() if key.main))
    md = report.to_markdown(secs, lb.unranked(recs), lb.REFERENCES, best)
    page = report.to_html(secs, lb.unranked(recs), lb.REFERENCES, best)
    for text in (md, page):
        assert "Fashion-MNIST leaderboard" in text
        assert lb.MAIN_SECTION in text and "official data, training subset 5000" in text
        assert "Champion" in text and "best run m1" in text
        assert "Published reference numbers (not produced by this pipeline)" in text
        assert "91.23 ± –" in text and "dead" in text and "99.43" in text
        assert "92.00" in text  # formatted strings are kept, not re-parsed as numbers
        assert "not significantly different from the next row (McNemar" in text
        assert "Holm" in text and "Welch" in text  # the method, written under each table
    assert "lenet5 \\| adam" in md  # a bare '|' would split the table cell
    assert md.index(lb.MAIN_SECTION) < md.index("training subset 5000") < md.index("Published")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "&lt;fast&gt;" in page and "<fast>" not in page
    assert "http" not in page and "<script" not in page and "<link" not in page


def test_references_flag_invalid_numbers_and_hold_the_paper_baselines():
    refs = lb.REFERENCES
    invalid = refs[refs["value"] == 99.43]
    assert len(invalid) == 1 and invalid["validity"].iloc[0].startswith("invalid")
    assert "980, 1135, 1032" in invalid["validity"].iloc[0]
    svc = refs[(refs["source"] == "Fashion-MNIST paper table 3") & (refs["model"] == "SVC")]
    assert svc["value"].tolist() == [89.7] and svc["registry_model"].tolist() == ["svc"]
    assert len(refs[refs["source"] == "Fashion-MNIST paper table 3"]) == 7
    assert len(refs[refs["model"] == "ResNet-18"]) == 8
    assert set(refs["registry_model"]) - {""} <= set(MODEL_NAMES)
    assert refs["value"].between(80, 100).all()
    assert refs["metric"].isin(
        ["test accuracy", "validation accuracy", "train accuracy", "test precision",
         "test recall", "test F1"]
    ).all()  # fmt: skip
    unverified = refs[refs["source"] == "zalando README benchmark list"]
    assert (unverified["validity"] == "unverified by its maintainers").all()


def test_reproductions_show_the_published_number_beside_ours():
    rows = [scored(f"r{i}", t, 0.9, key="k-repro", seed=i) for i, t in enumerate([0.921, 0.925])]
    rows += [scored("single", 0.95, 0.9, key="k-one"), scored("other", 0.80, 0.8, key="k-none")]
    table = lb.aggregate(lb.records(frame(*rows)))
    refs = {
        "k-repro": [
            {
                "source": "004 (PyTorch)",
                "metric": "test accuracy",
                "setting": "baseline",
                "value": 92.28,
            },
            {"source": "004 (PyTorch)", "metric": "test accuracy", "setting": "", "value": 93.0},
        ],
        "k-one": [{"source": "003", "metric": "test accuracy", "setting": "", "value": 94.0}],
    }
    out = lb.attach_references(table, refs).set_index("best_run_id")
    assert out.loc["r0", "published"].startswith("92.28 (004 (PyTorch), test accuracy, baseline)")
    assert out.loc["r0", "ours_minus_published"] == "+0.02; -0.70"  # mean 92.30
    assert out.loc["r0", "published_within_seeds"] == "yes; no"  # our seeds: 92.1..92.5
    assert out.loc["single", "published_within_seeds"] == "one seed"
    assert out.loc["other", "published"] == ""
    shown = report.to_markdown({lb.main_section(): out.reset_index()}, None, lb.REFERENCES, None)
    assert "published within our seeds' range" in shown and "+0.02; -0.70" in shown


def test_tuned_rows_say_so_with_their_trials_and_metrics_never_overwrite_records():
    tuned = scored("t1", 0.9, 0.9, key="k-t") | {
        "tags.tune.tuned": "true",
        "tags.tune.n_trials": "12",
    }
    tune_parent = run("p", step="tune", evaluated=False) | {
        "metrics.n_trials": 12.0,
        "metrics.model": 1.0,
    }
    table = lb.aggregate(lb.records(frame(tuned, scored("u1", 0.8, 0.8, key="k-u"), tune_parent)))
    labels = dict(zip(table["best_run_id"], table["config_label"], strict=True))
    assert labels["t1"].endswith("(tuned, 12 trials)") and "tuned" not in labels["u1"]
    assert table.set_index("best_run_id").loc["t1", "tuned"] and table["model"].tolist() == [
        "cnn2",
        "cnn2",
    ]


def test_a_row_with_a_tuned_retrain_among_its_seeds_says_so_whichever_seed_is_best():
    # the retrain (seed 43) shares its configuration key with plain seeds; seed 1 is best
    plain = [scored(f"s{i}", 0.8, 0.9 - i / 100, key="k", seed=i) for i in (1, 2)]
    retrain = scored("s43", 0.8, 0.85, key="k", seed=43) | {
        "tags.tune.tuned": "true",
        "tags.tune.n_trials": "3",
    }
    row = lb.aggregate(lb.records(frame(*plain, retrain))).iloc[0]
    assert row["best_run_id"] == "s1" and row["tuned"]
    # ... and how many of its seeds are retrains: "tuned" alone said all three were
    assert row["config_label"].endswith("(1 of 3 seeds tuned, 3 trials)")


def test_validation_accuracy_is_the_logged_models_not_the_best_epochs():
    """restore_best=false logs the last epoch's weights: ranking, the best run and the
    champion use their validation accuracy (logged_val_accuracy), not the best epoch's."""
    last_worse = scored("last", 0.80, 0.95, key="k-last", logged_val_accuracy=0.70)
    restored = scored("restored", 0.80, 0.90, key="k-best", logged_val_accuracy=0.90)
    old = scored("old", 0.80, 0.85, key="k-old")  # from before logged_val_accuracy
    main = named(lb.sections(lb.records(frame(last_worse, restored, old))))[lb.MAIN_SECTION]
    val = dict(zip(main["best_run_id"], main["val_accuracy_mean"], strict=True))
    assert val == {"last": 0.70, "restored": 0.90, "old": 0.85}
    assert lb.champion(main)["best_run_id"] == "restored"
    seeds = [scored(f"r{i}", 0.8, 0.95, key="k", seed=i, logged_val_accuracy=v) for i, v in
             ((1, 0.80), (2, 0.90))]  # fmt: skip
    assert lb.aggregate(lb.records(frame(*seeds))).iloc[0]["best_run_id"] == "r2"


def test_seeds_of_different_code_versions_are_never_averaged():
    rows = [scored("a1", 0.90, 0.90, seed=1), scored("a2", 0.92, 0.91, seed=2)]
    rows.append(scored("b1", 0.70, 0.70, seed=3) | {"tags.code.version": "def456"})
    table = lb.aggregate(lb.records(frame(*rows)))
    by_version = dict(zip(table["code_version"], table["n_seeds"], strict=True))
    assert by_version == {"abc123": 2, "def456": 1}
