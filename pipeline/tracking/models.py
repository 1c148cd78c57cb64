"""Logged models and datasets, as MLflow 3 intends them.

A model is logged so that `mlflow.pyfunc.load_model(uri).predict(x)` maps float32 raw pixels
(N, 1, 28, 28) to (N, 10) probabilities, for torch and scikit-learn alike (INTERFACE.md; N = 0
for torch models only: every scikit-learn estimator refuses an empty batch, and a wrapper of
ours would have to be pickled, which skops exists to avoid);
it carries its training parameters and model type, and evaluation metrics are linked to it
and to the dataset they were computed on, so the Models tab and
`mlflow.search_logged_models(order_by=...)` rank models. Splits are logged as run inputs
under digest names, so the UI's Dataset column says which data a run saw.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from importlib.metadata import version

import numpy as np

from pipeline import config
from pipeline.errors import UserError
from pipeline.tracking.log import DatasetRef, timed

MODEL_NAME = "model"  # the logged model's name inside its run
# The only types beyond skops' own defaults that a logged scikit-learn baseline may contain
# (skops refuses any other when loading): numpy's reshape in the flatten step of every
# baseline (pipeline/models/baselines.py), a random forest's trees, sk_mlp's Adam state and
# svc's sigmoid calibration. tests/test_reliability.py checks each baseline needs no more.
SKOPS_TRUSTED_TYPES = [
    "numpy.reshape",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *config.IMAGE_SHAPE))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, config.NUM_CLASSES))]),
    )


def input_example(images: np.ndarray) -> np.ndarray:
    # A batch of 8, not 1: torch.export fixes a size-1 batch dimension (NOTES.md).
    return images[:8].astype(np.float32)


def pinned(*names: str) -> list[str]:
    """Exact requirements of the logged model; inferring them costs ~8 s per run."""
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def log_torch_model(module, example: np.ndarray, params: dict[str, str], model_type: str):
    """Log an eval-mode CPU module (logits -> softmax added here) as pt2, or as pickle with
    our code when torch.export refuses a layer. Returns (model uri, model id)."""
    import mlflow
    import torch

    wrapped = torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()
    common = dict(
        name=MODEL_NAME,
        signature=signature(),
        input_example=input_example(example),
        params=params,
        model_type=model_type,
        pip_requirements=pinned("torch", "mlflow", "numpy"),
    )
    with timed():
        try:
            info = mlflow.pytorch.log_model(wrapped, serialization_format="pt2", **common)
        except Exception as exc:  # torch.export can refuse a layer; pickle always works
            print(f"pt2 export failed ({type(exc).__name__}); logging as pickle", file=sys.stderr)
            info = mlflow.pytorch.log_model(
                wrapped,
                serialization_format="pickle",
                code_paths=[str(config.ROOT / "pipeline")],
                **common,
            )
    return info.model_uri, info.model_id


def log_sklearn_model(estimator, example: np.ndarray, params: dict[str, str], model_type: str):
    """Log a fitted baseline in skops, MLflow's safe format for scikit-learn; `predict`
    returns probabilities. Returns (model uri, model id).

    The logged model is created first with exactly `params`: `log_model` would add every
    parameter of the run, and `mlflow run` has logged the torch-only defaults (epochs=10,
    optimizer=adam, ...) on a baseline's run, which the Models tab would show as its own."""
    import mlflow

    with timed():
        model = mlflow.initialize_logged_model(
            name=MODEL_NAME,
            source_run_id=mlflow.active_run().info.run_id,
            params=params,
            model_type=model_type,
        )
        info = mlflow.sklearn.log_model(
            estimator,
            name=MODEL_NAME,
            model_id=model.model_id,
            serialization_format="skops",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pyfunc_predict_fn="predict_proba",
            signature=signature(),
            input_example=input_example(example),
            pip_requirements=pinned("scikit-learn", "mlflow", "numpy", "skops"),
        )
    return info.model_uri, info.model_id


def check_safe(flavors: dict, uri: str) -> None:
    """A scikit-learn model loads only from skops with our trusted types: a pickled one
    (which runs any code it carries when loaded) or one that trusts more is refused."""
    sk = flavors.get("sklearn")
    if sk is None:
        return
    if sk.get("serialization_format") != "skops":
        raise UserError(
            f"model {uri}: a scikit-learn model saved as {sk.get('serialization_format')};"
            " only skops models are loaded (pickle runs code when loaded)"
        )
    extra = sorted(set(sk.get("skops_trusted_types") or []) - set(SKOPS_TRUSTED_TYPES))
    if extra:
        raise UserError(f"model {uri}: trusts types this project does not: {', '.join(extra)}")


def load_model(uri: str):
    """The logged model as a consumer loads it (`mlflow.pyfunc`), after check_safe."""
    import mlflow

    with timed():
        check_safe(mlflow.models.get_model_info(uri).flavors, uri)
        return mlflow.pyfunc.load_model(uri)


CONTEXTS = {"train": "training", "val": "validation", "test": "test"}  # MLflow's words


def dataset_ref(part: str, digest: str, sample=None, seed: int | None = None) -> DatasetRef:
    """The name and digest under which a split of the prepared data `digest` is logged.

    A `sample` of the split (a training subset, drawn with `seed`) is a dataset of its own:
    MLflow keys a dataset by name and digest and keeps the first profile logged under them,
    so under the whole split's name a 300-image subset would show as the 54,000 images."""
    if sample is None:
        return DatasetRef(f"fashion-mnist-{part}-{digest[:12]}", digest[:16])
    content = hashlib.sha256(np.ascontiguousarray(sample.images).tobytes())
    content.update(np.ascontiguousarray(sample.labels).tobytes())
    name = f"fashion-mnist-{part}-{digest[:12]}-subset{len(sample.labels)}-seed{seed}"
    return DatasetRef(name, content.hexdigest()[:16])


def log_datasets(
    run_id: str, splits: dict, digest: str, source: str, sampled: dict[str, int] | None = None
) -> dict[str, DatasetRef]:
    """Log splits (part -> object with .images and .labels; parts train, val, test) as the
    run's inputs, named after the prepared data's digest; a part in `sampled` (part -> seed)
    is a subset of its split, logged as its own dataset. Returns part -> DatasetRef."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag

    refs, inputs = {}, []
    for part, split in splits.items():
        if part in (sampled or {}):
            ref = dataset_ref(part, digest, split, sampled[part])
        else:
            ref = dataset_ref(part, digest)
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(
                split.images, targets=split.labels, source=source, name=ref.name, digest=ref.digest
            )
        context = InputTag("mlflow.data.context", CONTEXTS[part])
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [context]))
        refs[part] = ref
    with timed():
        mlflow.MlflowClient().log_inputs(run_id, datasets=inputs)
    return refs


def ranked_models(experiment_id: str, metric: str = "test_accuracy") -> list:
    """The experiment's logged models, best `metric` first (what the Models tab shows)."""
    import mlflow

    return mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        order_by=[{"field_name": f"metrics.{metric}", "ascending": False}],
        output_format="list",
    )
