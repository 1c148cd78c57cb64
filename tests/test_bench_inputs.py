"""The benchmark scripts refuse bad input the project's way: one `error:` line on stderr,
exit 2, no traceback, and before any work (nothing on stdout: every script prints its
header only once its data is loaded or its first run starts). A few seconds each."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_script

# Per script, arguments that bound the work it would do if it let a bad input through
# (then the test fails on its output, not on a timeout); the bad input comes after them.
TINY = {
    "bench_train.py": "--models mlp --images 64 --repeats 1 --mlflow-overhead none",
    "time_to_accuracy.py": "--epochs 1 --subset 100 --allow-unofficial --compile false",
    "bench_augment.py": "--iters 1 --warmup 0 --repeats 1",
    "bench_pruning.py": "--trials 2 --epochs 1 --subset 100 --allow-unofficial",
    "bench_scale.py": "",
}
# (script, the bad input, a fragment the one error line must hold: mostly the option's name)
BAD_INPUTS = [
    ("bench_train.py", ["--models", "foo"], "--models"),
    ("bench_train.py", ["--models", "mlp,logreg"], "--models"),  # scikit-learn: not the engine's
    ("bench_train.py", ["--optimizer", "foo"], "--optimizer"),
    ("bench_train.py", ["--device", "foo"], "--device"),
    ("bench_train.py", ["--device", "cuda"], "no CUDA GPU"),
    ("bench_train.py", ["--threads", "-3"], "--threads"),
    ("bench_train.py", ["--repeats", "0"], "--repeats"),
    ("bench_train.py", ["--mlflow-overhead", "foo"], "--mlflow-overhead"),
    ("time_to_accuracy.py", ["--device", "foo"], "--device"),
    ("time_to_accuracy.py", ["--threads", "-3"], "--threads"),
    ("time_to_accuracy.py", ["--targets", "abc"], "argument --targets:"),
    ("time_to_accuracy.py", ["--targets", "0.9,93"], "argument --targets:"),
    ("time_to_accuracy.py", ["--model", "logreg"], "not a torch model"),
    ("time_to_accuracy.py", ["--options", "foo=1"], "unknown option 'foo'"),
    ("time_to_accuracy.py", ["--subset", "999999"], "subset 999,999 is not below"),  # ignored
    ("time_to_accuracy.py", ["--json", "/proc/no/such/out.json"], "--json: cannot create"),
    ("bench_train.py", ["--json", "/proc/no/such/out.json"], "--json: cannot create"),
    ("bench_pruning.py", ["--json", "/proc/no/such/out.json"], "--json: cannot create"),
    ("bench_scale.py", ["--json", "/proc/no/such/out.json"], "--json: cannot create"),
    # passed the check above, then lost the finished benchmark in a traceback
    ("time_to_accuracy.py", ["--json", "/proc/1/out.json"], "--json: cannot write into"),
    ("bench_pruning.py", ["--json", "/proc/1/out.json"], "--json: cannot write into"),
    ("bench_train.py", ["--json", "/tmp"], "--json: /tmp is a folder"),
    ("bench_train.py", ["--overhead-epochs", "1"], "--overhead-epochs"),
    # refused once the timings were done, and the JSON with them lost
    ("bench_train.py", ["--mlflow-overhead", "mlp", "--overhead-subset", "5"], "at least 10"),
    ("bench_augment.py", ["--device", "foo"], "--device"),
    ("bench_augment.py", ["--device", "cuda"], "no CUDA GPU"),
    ("bench_augment.py", ["--iters", "0"], "--iters"),
    ("bench_augment.py", ["--repeats", "0"], "--repeats"),
    ("bench_pruning.py", ["--model", "foo"], "--model"),
    ("bench_pruning.py", ["--seeds", "a,b"], "--seeds"),
    ("bench_pruning.py", ["--seeds", "1,1"], "seeds must differ"),  # a spread of zero
    ("bench_pruning.py", ["--threads", "-3"], "--threads"),
    ("bench_pruning.py", ["--epochs", "0"], "epochs"),
    ("bench_pruning.py", ["--subset", "999999"], "subset 999,999 is not below"),  # as tune
    ("bench_scale.py", ["--profile", "nope"], "--profile"),
    ("bench_scale.py", ["--configs", "ray:x"], "--configs"),
    ("bench_scale.py", ["--configs", "local:2"], "--configs"),  # workers are ray's only
]


@pytest.mark.parametrize(
    ("script", "args", "fragment"),
    BAD_INPUTS,
    # never "bench_scale" in a test's name: conftest sends those to the pipelines' worker
    ids=[f"{s.removeprefix('bench_').removesuffix('.py')}:{' '.join(a)}" for s, a, _ in BAD_INPUTS],
)
def test_bad_input_is_one_error_line_before_any_work(bench_env, tmp_path, script, args, fragment):
    # --json into tmp_path: a script that went on despite the bad input never writes into
    # the checkout's bench/results/
    mute = script == "bench_augment.py" or "--json" in args
    json_args = [] if mute else ["--json", str(tmp_path / "out.json")]
    result = run_script(script, [*TINY[script].split(), *args, *json_args], bench_env, timeout=90)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert result.stdout == "", result.stdout  # no header: refused before any work


@pytest.mark.parametrize(
    "script",
    [
        "bench_train.py",
        "time_to_accuracy.py",
        "bench_augment.py",
        "bench_pruning.py",
        "bench_scale.py",
    ],
    ids=["train", "time_to_accuracy", "augment", "pruning", "scale"],
)
def test_help_describes_the_script_in_whole_sentences(bench_env, script):
    result = run_script(script, ["--help"], bench_env, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    # the description: the paragraph between the usage block and the options
    description = result.stdout.split("\n\n")[1]
    assert " ".join(description.split()).endswith("."), description


def test_time_to_accuracy_header_shows_the_subset_it_trains_on(bench_env):
    args = ["--subset", "200", "--epochs", "1", "--allow-unofficial", "--compile", "false"]
    result = run_script("time_to_accuracy.py", [*args, "--threads", "1"], bench_env, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    header = result.stdout.splitlines()[0]
    settings = json.loads(header[header.index("{") :])
    assert settings["subset"] == "200" and settings["compile"] == "false", header
    assert re.search(r"^# train 200 images", result.stdout, re.M), result.stdout


def test_bench_pruning_with_one_seed_prints_no_nan_spread(bench_env, tmp_path):
    out = tmp_path / "pruning.json"
    args = ["--model", "mlp", "--trials", "3", "--epochs", "2", "--subset", "200", "--seeds", "1"]
    result = run_script(
        "bench_pruning.py",
        [*args, "--allow-unofficial", "--threads", "1", "--json", str(out)],
        bench_env,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("summary ")]
    assert len(summaries) == 3, result.stdout
    assert not any("nan" in line or "+-" in line for line in summaries), summaries

    def no_constants(name: str):  # json.loads takes NaN and Infinity unless told not to
        raise AssertionError(f"{name} in the JSON: not valid JSON")

    report = json.loads(out.read_text(), parse_constant=no_constants)
    assert report["summary"]["none"]["best_val_accuracy_std"] is None
