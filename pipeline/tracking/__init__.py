"""The one door to MLflow: the only package that imports mlflow (tests/test_rules.py).

Everything else calls these functions: the store and its experiment (`store`), runs of steps
and their children (`runs`), metrics, parameters and artifacts (`log`), logged models and
datasets (`models`), the registry (`registry`), run searches (`search`) and child entry
points (`projects`). It depends on `pipeline.config` and `pipeline.errors` only.
"""

from pipeline.tracking.log import (
    OVERHEAD,
    DatasetRef,
    artifact,
    artifact_names,
    changed_metrics,
    log_figure,
    log_frame,
    log_json,
    log_metrics,
    log_params,
    log_table,
    log_text,
    metric_points,
    metric_steps,
)
from pipeline.tracking.models import (
    dataset_ref,
    load_model,
    log_datasets,
    log_sklearn_model,
    log_torch_model,
    ranked_models,
)
from pipeline.tracking.projects import run_entry_point
from pipeline.tracking.registry import (
    champion_run_id,
    drop_deleted_champion,
    model_name,
    register_champion,
)
from pipeline.tracking.runs import (
    QUEUED,
    child_run,
    close_run,
    finish_continued,
    get_live_run,
    get_run,
    is_active,
    live_owner,
    project_child_run,
    run_status,
    run_url,
    set_tags,
    step_run,
)
from pipeline.tracking.search import finished_step_run, latest_train_run, runs, runs_frame
from pipeline.tracking.store import (
    apply_defaults,
    check_reachable,
    code_version,
    ensure_experiment,
    pipeline_lock,
    store_lock,
    tracking_uri,
)

__all__ = [
    "QUEUED",
    "OVERHEAD",
    "DatasetRef",
    "apply_defaults",
    "artifact",
    "artifact_names",
    "champion_run_id",
    "drop_deleted_champion",
    "model_name",
    "changed_metrics",
    "check_reachable",
    "child_run",
    "close_run",
    "code_version",
    "dataset_ref",
    "ensure_experiment",
    "finish_continued",
    "finished_step_run",
    "get_live_run",
    "get_run",
    "is_active",
    "live_owner",
    "latest_train_run",
    "load_model",
    "log_datasets",
    "log_figure",
    "log_frame",
    "log_json",
    "log_metrics",
    "log_params",
    "log_sklearn_model",
    "log_table",
    "log_text",
    "log_torch_model",
    "metric_points",
    "metric_steps",
    "pipeline_lock",
    "project_child_run",
    "ranked_models",
    "register_champion",
    "run_entry_point",
    "run_status",
    "run_url",
    "runs",
    "runs_frame",
    "set_tags",
    "step_run",
    "store_lock",
    "tracking_uri",
]
