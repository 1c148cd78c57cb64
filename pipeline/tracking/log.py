"""What goes into a run: metrics (batched), parameters (once), artifacts (JSON, text,
tables, figures). Every function takes the run id explicitly, so it works for the active
run and for runs of other processes alike.

The time spent in these calls is added up in OVERHEAD: the benchmark reports the tracking
overhead of a real training run as a share of its epoch time from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.tracking.store import client

METRIC_BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # and of parameters
PARAM_LENGTH = 6000  # longest parameter value MLflow stores


@dataclass
class Overhead:
    """Seconds spent inside tracking calls and the number of calls, for this process."""

    seconds: float = 0.0
    calls: int = 0
    depth: int = 0  # timed blocks open now: a block inside another is counted once
    started: float = 0.0  # when the outermost open block began


OVERHEAD = Overhead()


class timed(contextlib.ContextDecorator):
    """Adds the time of its block (or of the function it decorates) to OVERHEAD; a block
    inside another timed block is already counted by it."""

    def __enter__(self):
        if OVERHEAD.depth == 0:
            OVERHEAD.started = time.perf_counter()
        OVERHEAD.depth += 1

    def __exit__(self, *exc):
        OVERHEAD.depth -= 1
        if OVERHEAD.depth == 0:
            OVERHEAD.seconds += time.perf_counter() - OVERHEAD.started
            OVERHEAD.calls += 1


@dataclass(frozen=True)
class DatasetRef:
    """A logged dataset that metrics can be linked to (name and digest, as in the UI)."""

    name: str
    digest: str


def log_metrics(
    run_id: str,
    metrics: dict[str, float],
    step: int = 0,
    model_id: str | None = None,
    dataset: DatasetRef | None = None,
) -> None:
    """One batched call per 1,000 metrics; optionally linked to a logged model and dataset
    (MLflow 3: the Models tab ranks logged models by metrics linked to them)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    link = {"model_id": model_id}
    if dataset is not None:
        link |= {"dataset_name": dataset.name, "dataset_digest": dataset.digest}
    batch = [Metric(k, float(v), now, int(step), **link) for k, v in metrics.items()]
    with timed():
        for start in range(0, len(batch), METRIC_BATCH):
            client().log_batch(run_id, metrics=batch[start : start + METRIC_BATCH])


def changed_metrics(run_id: str, values: dict[str, float]) -> dict[str, float]:
    """Only metrics whose value is new to the run: logging again must not grow a history."""
    current = client().get_run(run_id).data.metrics

    def same(key: str, value: float) -> bool:
        old = current.get(key)
        return old is not None and (old == value or (math.isnan(value) and math.isnan(old)))

    return {k: v for k, v in values.items() if not same(k, v)}


def metric_steps(run_id: str, key: str) -> set[int]:
    """The steps at which the run already has `key` (what a resume must not log again)."""
    return {step for step, _ in metric_points(run_id, key)}


def metric_points(run_id: str, key: str) -> set[tuple[int, float]]:
    """The (step, value) points the run already has for `key`."""
    return {(m.step, m.value) for m in client().get_metric_history(run_id, key)}


def log_params(run_id: str, params: dict[str, str]) -> None:
    """Log the parameters the run does not have yet: `mlflow run` has logged its -P values
    already, and logging one again with another value is an error."""
    from mlflow.entities import Param

    existing = client().get_run(run_id).data.params
    fresh = [Param(k, str(v)[:PARAM_LENGTH]) for k, v in params.items() if k not in existing]
    with timed():
        for start in range(0, len(fresh), PARAM_BATCH):
            client().log_batch(run_id, params=fresh[start : start + PARAM_BATCH])


def _log_file(run_id: str, name: str, write) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write(path)
        with timed():
            client().log_artifact(run_id, str(path))


def log_json(data, name: str, run_id: str) -> None:
    _log_file(run_id, name, lambda p: p.write_text(json.dumps(data, indent=2, default=str)))


def log_text(text: str, name: str, run_id: str) -> None:
    _log_file(run_id, name, lambda p: p.write_text(text))


def log_frame(frame, name: str, run_id: str, index: bool = False) -> None:
    """A pandas DataFrame as CSV (or Markdown / HTML by the name's suffix)."""

    def write(path: Path) -> None:
        if name.endswith(".md"):
            path.write_text(frame.to_markdown(index=index))
        elif name.endswith(".html"):
            path.write_text(frame.to_html(index=index))
        else:
            frame.to_csv(path, index=index)

    _log_file(run_id, name, write)


def log_figure(figure, name: str, run_id: str) -> None:
    """A matplotlib figure as PNG (figures from pipeline.plots are not kept by pyplot)."""
    with timed():
        client().log_figure(run_id, figure, name)


def log_table(frame, name: str, run_id: str) -> None:
    """A table the MLflow UI shows in the run's artifacts view (and merges across runs)."""
    import mlflow

    with timed():
        mlflow.log_table(frame, name, run_id=run_id)


@contextlib.contextmanager
def artifact(run_id: str, path: str) -> Iterator[Path]:
    """A local copy of one artifact, removed after the block."""
    with tempfile.TemporaryDirectory(prefix="fmb-") as tmp:
        with timed():
            local = client().download_artifacts(run_id, path, tmp)
        yield Path(local)


def artifact_names(run_id: str) -> set[str]:
    return {a.path for a in client().list_artifacts(run_id)}
