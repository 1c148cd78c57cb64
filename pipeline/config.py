"""Names, paths and the settings of every step, each declared once; standard library only.

Each step's settings are one frozen dataclass. Every field carries its type, default, unit,
help and validator (a kind from `pipeline.values`), so the command-line parser (`cli`), the
MLproject file (`mlproject`), `config.json` (`asdict`) and the logged parameters (`params`)
are all derived from here. Values are checked when a settings object is built, from the
command line, a profile or an Optuna trial alike, before torch, MLflow or Optuna is imported.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from pipeline import values as v
from pipeline.errors import UserError

# The repo root: MLproject, mlruns/ and data/ live here. Overridable so tests never write
# into the checkout's own stores.
ROOT = Path(__file__).resolve().parent.parent

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Metric-key spelling of each class (`test_f1_<key>`), same order as CLASS_NAMES.
CLASS_KEYS = (
    "t_shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)  # (C, H, W) of one image

# Mean and standard deviation of the official training images on the raw 0..255 scale;
# models normalise inside forward() so a consumer feeds raw pixels (INTERFACE.md).
PIXEL_MEAN = 72.940
PIXEL_STD = 90.021

# The four official files, their decoded SHA-256 and decoded sizes (../shared/NOTES.md).
OFFICIAL_FILES = {
    "train_images": (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47_040_016,
    ),
    "train_labels": (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60_008,
    ),
    "test_images": (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7_840_016,
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10_008,
    ),
}
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

# Images per forward pass when no gradients are kept (validation, evaluate, benchmarks):
# bounds the activation memory of the largest models.
PREDICT_BATCH = 1024

EXPERIMENT_NAME = "fashion-mnist"
REGISTERED_MODEL = "fashion-mnist-classifier"
CHAMPION_ALIAS = "champion"


def data_dir() -> Path:
    """Where prepared caches and downloads go (`FMB_DATA_DIR` lets tests use a temp dir)."""
    return Path(os.environ.get("FMB_DATA_DIR", ROOT / "data"))


def mlruns_dir() -> Path:
    """The embedded store's folder: SQLite DB, artifacts, Optuna DB."""
    return Path(os.environ.get("FMB_MLRUNS_DIR", ROOT / "mlruns"))


def checkpoint_path(run_id: str) -> Path:
    """Where an unfinished training run keeps its last complete epoch (removed at the end)."""
    return mlruns_dir() / "checkpoints" / f"{run_id}.pt"


def default_tracking_uri() -> str:
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def default_optuna_storage() -> str:
    return f"sqlite:///{mlruns_dir() / 'optuna.db'}"


# Optuna storage URLs of a database server: parallel workers may share one, and one that
# does not answer may on a retry
SERVER_STORAGES = ("postgresql", "mysql")


# --- names a setting may take (stdlib lists; tests check them against the registries) -----

TORCH_MODEL_NAMES = (
    "mlp",
    "cnn1",
    "lenet5",
    "cnn2",
    "cnn3",
    "cnn4",
    "mini_resnet",
    "resnet18",
    "vgg",
    "lstm",
    "fastnet",
)
SKLEARN_MODEL_NAMES = ("logreg", "random_forest", "sk_mlp", "svc")
MODEL_NAMES = TORCH_MODEL_NAMES + SKLEARN_MODEL_NAMES
# Training settings a scikit-learn baseline has no use for: it is fitted once, with its own
# solver. Giving one is an error (TrainSettings.check_baseline); the key leaves them out.
TORCH_ONLY = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "loss",
    "flip",
    "augment",
    "schedule",
    "label_smoothing",
    "dropout",
    "patience",
    "restore_best",
    # how a torch model runs: a baseline always fits on the CPU, in float64 or float32
    "device",
    "compile",
    "precision",
    "deterministic",
)
# the largest seed numpy's legacy RandomState and scikit-learn accept (torch takes more)
SEED_MAX = 2**32 - 1
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("ce", "nll", "mse")
AUGMENTATIONS = ("rotate", "shift", "zoom", "shear", "erase")
SCHEDULES = ("none", "cosine", "onecycle", "linear")
DEVICES = ("auto", "cpu", "cuda", "mps")
COMPILE_MODES = ("auto", "true", "false")
PRECISIONS = ("auto", "bf16", "fp32")
PRUNERS = ("median", "hyperband", "none", "odd_trials")  # odd_trials: for tests, see study
SAMPLERS = ("tpe", "random")
SPACES = ("base", "wide")  # declared in pipeline/study/space.py
TTA_MODES = ("none", "flip")
ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


def env_manager_tool(name: str) -> str | None:
    """The program MLflow runs to build an env_manager's environment (virtualenv: pyenv
    installs the Python; conda: MLFLOW_CONDA_HOME's, else the one on PATH); None for local."""
    conda_home = os.environ.get("MLFLOW_CONDA_HOME")
    conda = os.path.join(conda_home, "bin", "conda") if conda_home else "conda"
    return {"virtualenv": "pyenv", "uv": "uv", "conda": conda}.get(name)


EXECUTORS = ("local", "ray")  # declared in pipeline/executors.py
SORTABLE_METRICS = (
    "test_accuracy",
    "test_f1_macro",
    "test_precision_macro",
    "test_recall_macro",
    "test_log_loss",
    "val_accuracy",
    "n_params",
    "train_time_s",
)
PROFILES_DIR = ROOT / "profiles"


# --- how a setting is declared ------------------------------------------------------------


def setting(default: Any, kind: v.Kind, help: str, unit: str = "", identity: bool = True):
    """A dataclass field that is one setting: its default, kind (type and validator), help
    and unit. `identity=False` marks settings that change how or where a run executes, or
    which seed it draws, but not which configuration it is (see pipeline/identity.py)."""
    meta = {"kind": kind, "help": help, "unit": unit, "identity": identity}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def part(default: Settings, hidden: tuple[str, ...] = (), notes: dict[str, str] | None = None):
    """A group of settings nested in another; its fields appear flat on the command line
    and in MLproject, except the `hidden` ones (left at their defaults). `notes`: what a
    field means here beyond its own help (added to it)."""
    metadata = {"part": True, "hidden": hidden, "notes": notes or {}}
    return field(default_factory=lambda: default, metadata=metadata)


@dataclass(frozen=True)
class Leaf:
    """One flat setting of a settings class: its name and where it sits in the nesting."""

    name: str
    path: tuple[str, ...]
    kind: v.Kind
    help: str
    unit: str
    identity: bool


class Settings:
    """What every settings class does: check and normalise its values when built, spell them
    in one canonical way, and build itself from flat name -> value mappings."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            if "kind" in f.metadata:
                try:
                    value = f.metadata["kind"].parse(getattr(self, f.name), f.name)
                except ValueError as exc:
                    raise UserError(str(exc)) from None
                object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields; raise UserError naming the fix."""

    @classmethod
    def leaves(cls) -> list[Leaf]:
        """The flat settings, in declaration order (the command line's and MLproject's)."""
        out = []
        for f in fields(cls):  # type: ignore[arg-type]
            if "part" in f.metadata:
                default = f.default_factory()  # type: ignore[misc]
                notes = f.metadata["notes"]
                out += [
                    replace(
                        leaf,
                        path=(f.name, *leaf.path),
                        help="; ".join(
                            [leaf.help, *([notes[leaf.name]] if leaf.name in notes else [])]
                        ),
                    )
                    for leaf in type(default).leaves()
                    if leaf.name not in f.metadata["hidden"]
                ]
            else:
                meta = f.metadata
                out.append(
                    Leaf(
                        f.name,
                        (f.name,),
                        meta["kind"],
                        meta["help"],
                        meta["unit"],
                        meta["identity"],
                    )
                )
        return out

    def value(self, leaf: Leaf) -> Any:
        node: Any = self
        for name in leaf.path:
            node = getattr(node, name)
        return node

    def params(self) -> dict[str, str]:
        """Every flat setting spelled canonically: what is logged and passed to child runs."""
        return {leaf.name: leaf.kind.spell(self.value(leaf)) for leaf in self.leaves()}

    def non_defaults(self) -> dict[str, str]:
        """The flat settings not at the class's defaults, spelled as params() spells them
        (`mlflow run` passes every setting: one at its default was not asked for)."""
        defaults = type(self)().params()
        return {k: x for k, x in self.params().items() if x != defaults[k]}

    @classmethod
    def from_params(cls, params: dict[str, Any], base: Settings | None = None):
        """Settings from flat name -> value (text or typed), the rest from `base` (defaults).
        An unknown name is a UserError."""
        names = {leaf.name for leaf in cls.leaves()}
        unknown = sorted(set(params) - names)
        if unknown:
            step = next((k for k, c in STEP_SETTINGS.items() if c is cls), cls.__name__)
            raise UserError(
                f"unknown setting {unknown[0]!r} for {step}; see `python -m pipeline {step} -h`"
            )
        base = cls() if base is None else base
        kwargs = {}
        for f in fields(cls):  # type: ignore[arg-type]
            current = getattr(base, f.name)
            if "part" in f.metadata:
                own = {leaf.name for leaf in type(current).leaves()} - set(f.metadata["hidden"])
                sub = {k: x for k, x in params.items() if k in own}
                kwargs[f.name] = type(current).from_params(sub, base=current)
            else:
                kwargs[f.name] = params.get(f.name, current)
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, nested: dict):
        """Settings from `to_dict()`'s nested form (a run's config.json)."""
        flat = {}
        for leaf in cls.leaves():
            node: Any = nested
            for name in leaf.path:
                node = node.get(name, {}) if isinstance(node, dict) else {}
            if not isinstance(node, dict) or leaf.name == "options":
                flat[leaf.name] = node
        return cls.from_params(flat)

    def replace(self, **params: Any):
        """A copy with some flat settings changed (checked like any other)."""
        return type(self).from_params(params, base=self)

    def to_dict(self) -> dict:
        """The effective settings, nested as declared: what `config.json` holds."""
        return asdict(self)  # type: ignore[call-overload]


def is_settings(obj: Any) -> bool:
    return is_dataclass(obj) and isinstance(obj, Settings)


# --- the steps' settings ------------------------------------------------------------------


@dataclass(frozen=True)
class SplitSettings(Settings):
    """The seeded train/validation split of the 60,000 official training images."""

    val_fraction: float = setting(
        0.1,
        v.Float(0, 1, low_open=True, high_open=True),
        "share of the 60,000 training images held out for validation",
        "fraction",
        identity=False,  # part of the data: the dataset digest covers it
    )
    split_seed: int = setting(
        42, v.Int(0, SEED_MAX), "seed of the stratified train/val split", identity=False
    )


@dataclass(frozen=True)
class PrepareSettings(Settings):
    source: str = setting(
        "auto",
        v.Source(),
        f"a directory with the IDX files; auto: FASHION_MNIST_DIR, else {DEBIAN_DATA_DIR},"
        " else download; download: torchvision into data/",
    )
    split: SplitSettings = part(SplitSettings())
    allow_unofficial: bool = setting(
        False, v.Bool(), "accept files whose decoded SHA-256 differs from the official dataset"
    )


@dataclass(frozen=True)
class TrainSettings(Settings):
    model: str = setting("cnn2", v.Choice(MODEL_NAMES), "registry name of the model")
    options: dict = setting(
        {}, v.Options(), "model variant, e.g. blocks=4 for mini_resnet; none = the defaults"
    )
    epochs: int = setting(10, v.Int(1), "maximum passes over the training split", "epochs")
    batch_size: int = setting(128, v.Int(1), "images per optimizer step", "images")
    optimizer: str = setting(
        "adam", v.Choice(OPTIMIZERS), "adam, adamw, sgd (Nesterov momentum 0.9) or rmsprop"
    )
    lr: float = setting(0.001, v.Float(0, 10, low_open=True), "(peak) learning rate")
    weight_decay: float = setting(
        0.0, v.Float(0, 1), "L2 penalty (adam, sgd, rmsprop) or decoupled decay (adamw)"
    )
    loss: str = setting(
        "ce", v.Choice(LOSSES), "ce (cross-entropy), nll (on log-softmax), mse (softmax vs one-hot)"
    )
    flip: bool = setting(False, v.Bool(), "random horizontal flips, p=0.5")
    augment: tuple = setting(
        (),
        v.Subset(AUGMENTATIONS),
        "batched random augmentation on the device: affine transforms, erasing",
    )
    schedule: str = setting(
        "none",
        v.Choice(SCHEDULES),
        "learning-rate schedule, stepped per batch (linear: 20% warm-up, then decay to 0)",
    )
    label_smoothing: float = setting(
        0.0, v.Float(0, 1, high_open=True), "ce only; 0 = hard targets"
    )
    dropout: float | None = setting(
        None,
        v.OrNone(v.Float(0, 1, high_open=True), "default"),
        "dropout rate; default = the model's own",
    )
    patience: int = setting(
        5, v.Int(1), "epochs without a val_accuracy gain before early stopping", "epochs"
    )
    restore_best: bool = setting(
        True,
        v.Bool(),
        "end with the weights of the best validation epoch; false keeps the last epoch's"
        " (end-of-training accuracy, as some reports measured it)",
    )
    subset: int = setting(
        0,
        v.Int(0),
        "0 = the whole training split (scikit-learn svc: its documented default subset),"
        f" else a stratified sample of this many images (at least {NUM_CLASSES}, one per"
        " class, and fewer than the split holds)",
        "images",
    )
    seed: int = setting(
        42, v.Int(0, SEED_MAX), "seed of model init, batch order and augmentation", identity=False
    )
    deterministic: bool = setting(
        False,
        v.Bool(),
        "deterministic algorithms (slower; exact resume and repeat)",
        identity=False,
    )
    device: str = setting(
        "auto", v.Choice(DEVICES), "auto = cuda, else mps, else cpu", identity=False
    )
    compile: str = setting(
        "auto",
        v.Choice(COMPILE_MODES),
        "torch.compile the model; auto = only where the measured table in pipeline/engine"
        " shows a net gain on this device",
        identity=False,
    )
    precision: str = setting(
        "auto",
        v.Choice(PRECISIONS),
        "bf16 autocast for the training passes (weights, loss and every evaluation stay"
        " fp32); auto = bf16 where the device computes it natively (a CUDA GPU with bf16,"
        " a CPU with AVX512-BF16 or AMX) unless the measured table in pipeline/engine shows"
        " it slower for the model there, else fp32",
        identity=False,
    )
    resume: str | None = setting(
        None,
        v.Resume(),
        "continue an interrupted run: its run id, or true inside `mlflow run --run-id ID`",
        identity=False,
    )
    dataset: str = setting(
        "auto",
        v.Text(r"auto|[0-9a-f]{8,64}", "auto or a dataset.digest (8 to 64 hex digits)"),
        "dataset.digest (or prefix) of a prepared cache; auto = the official data with the"
        " split below, prepared first when missing",
        identity=False,
    )
    split: SplitSettings = part(SplitSettings())

    def check(self) -> None:
        if self.label_smoothing and self.loss != "ce":
            raise UserError(
                "label_smoothing applies to loss=ce only; set label_smoothing=0 or loss=ce"
            )
        if 0 < self.subset < NUM_CLASSES:  # scikit-learn's stratified sample needs one per class
            raise UserError(f"subset must be 0 or at least {NUM_CLASSES}, got {self.subset}")

    def check_baseline(self) -> None:
        """A scikit-learn baseline given a torch training setting: a UserError, not a setting
        logged and silently ignored. Checked by `fit.prepare`, not `check`: tune refuses
        baselines outright, with defaults of its own (epochs=5)."""
        if not self.is_sklearn:
            return
        given = [n for n in TORCH_ONLY if n in self.non_defaults()]
        if given:
            raise UserError(
                f"{self.model} is a scikit-learn baseline, fitted by its own solver; it takes"
                f" no {', '.join(given)} (leave them at their defaults)"
            )

    @property
    def is_sklearn(self) -> bool:
        return self.model in SKLEARN_MODEL_NAMES


@dataclass(frozen=True)
class TuneSettings(Settings):
    # every trial starts from these training settings; the search space overrides some
    base: TrainSettings = part(
        TrainSettings(epochs=5),
        hidden=("resume",),
        notes={"patience": "here the final retrains' only: trials are stopped by the pruner"},
    )
    n_trials: int = setting(
        20, v.Int(1), "finished (complete or pruned) trials the study holds at the end", "trials"
    )
    timeout: float = setting(
        0.0,
        v.Float(0, 1e7),
        "seconds after which this worker starts no new trial; the study then counts as"
        " complete (its best trial so far is retrained; main reuses the run); 0 = none",
        "seconds",
    )
    pruner: str = setting(
        "median",
        v.Choice(PRUNERS),
        "stops weak trials on their per-epoch val_accuracy: median (after 2 trials) or"
        " hyperband (rungs at 1, 3, 9 epochs, brackets first pruning by half the epochs, a lone"
        " trial at a rung pruned, the default trial never); odd_trials (for tests) prunes every"
        " odd-numbered trial at epoch 1",
    )
    sampler: str = setting("tpe", v.Choice(SAMPLERS), "tpe (multivariate) or random")
    sampler_seed: int = setting(42, v.Int(0, SEED_MAX), "seed of the sampler", identity=False)
    space: str = setting(
        "base",
        v.Choice(SPACES),
        "base: lr, optimizer, loss, flip; wide: also weight_decay, batch_size, augment, dropout",
    )
    lr_min: float = setting(1e-4, v.Float(0, 10, low_open=True), "lowest lr searched (log scale)")
    lr_max: float = setting(1e-2, v.Float(0, 10, low_open=True), "highest lr searched (log scale)")
    storage: str = setting(
        "default",
        v.Storage(),
        "Optuna storage; default = sqlite:///mlruns/optuna.db (one worker at a time); for"
        " parallel workers postgresql+psycopg://user@host/db (password in ~/.pgpass) or"
        " journal:<file>",
        identity=False,
    )
    study_name: str = setting(
        "auto",
        v.Text(r"[\w.\-]+", "letters, digits, '.', '-' or '_'"),
        "auto = model-space-e<epochs>-s<subset>-<data>-<hash of the other training settings,"
        " lr range, pruner and sampler>; workers with the same name and storage share one"
        " study",
        identity=False,
    )
    heartbeat_s: int = setting(
        10,
        v.Int(1),
        "seconds between a running trial's heartbeats (RDB storages)",
        "seconds",
        identity=False,
    )
    grace_s: int = setting(
        30,
        v.Int(2),
        "seconds without heartbeat after which a trial's worker counts as dead: the next"
        " worker fails the trial, closes its run and queues it again",
        "seconds",
        identity=False,
    )
    final: bool = setting(
        True,
        v.Bool(),
        "once the study is complete, retrain the best configuration on fresh seeds and"
        " evaluate it (false for extra workers)",
        identity=False,
    )
    final_epochs: int = setting(
        10, v.Int(1), "maximum epochs of each retrain of the best configuration", "epochs"
    )
    final_seeds: int = setting(
        3,
        v.Int(1),
        "retrains of the best configuration, on fresh seeds (not the trials' seed), so its"
        " validation accuracy is free of the selection among trials",
        "runs",
    )

    def check(self) -> None:
        if self.lr_min >= self.lr_max:
            raise UserError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        if self.base.is_sklearn:
            raise UserError(
                f"tune searches torch training settings; {self.base.model} is a scikit-learn"
                " baseline"
            )
        if self.grace_s <= self.heartbeat_s:
            raise UserError(
                f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s}), else"
                " live workers count as dead"
            )


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    run_id: str = setting(
        "latest",
        v.RunIds(),
        "the train run(s) to evaluate: an id, ids separated by commas, or latest (the newest"
        " finished train run)",
    )
    tta: str = setting(
        "none",
        v.Choice(TTA_MODES),
        "extra test-time augmentation, logged under test_tta_<name>_ keys (test_accuracy"
        " stays the model's own prediction)",
    )
    allow_unofficial: bool = setting(
        False, v.Bool(), "evaluate on a test set that is not the official one"
    )


@dataclass(frozen=True)
class CompareSettings(Settings):
    metric: str = setting(
        "test_accuracy",
        v.Choice(SORTABLE_METRICS),
        "display order; the champion is always chosen on the validation split",
    )


@dataclass(frozen=True)
class ProfileKind(v.Kind):
    """A profile name from profiles/ or a path to a TOML file of the same shape."""

    def read(self, text: str, name: str) -> str:
        if not profile_path(text).is_file():
            names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.toml")))
            raise ValueError(f"{name} {text!r} not found; choose {names} or a .toml path")
        return text

    def describe(self) -> str:
        return "a name in profiles/ or a .toml path"


def profile_path(name: str) -> Path:
    return Path(name) if name.endswith(".toml") else PROFILES_DIR / f"{name}.toml"


@dataclass(frozen=True)
class MainSettings(Settings):
    profile: str = setting(
        "quick",
        ProfileKind(),
        "quick (default, <15 min on 2 CPU cores), gpu, full, reports, reports-cpu, tiny (tests)",
    )
    env_manager: str = setting(
        "local",
        v.Choice(ENV_MANAGERS),
        "env manager of every child `mlflow run` with executor=local (MLflow does not forward"
        " it); Ray tasks run in the Python of their Ray worker",
        identity=False,
    )
    executor: str = setting(
        "local",
        v.Choice(EXECUTORS),
        "local: one job at a time; ray: independent jobs side by side on the Ray cluster at"
        " RAY_ADDRESS, or on a local Ray instance when it is unset",
        identity=False,
    )
    workers: int = setting(
        0,
        v.Int(0),
        "jobs at once with executor=ray; 0 = what the cluster offers (its CPUs, or its GPUs"
        " divided by gpus_per_job)",
        "jobs",
        identity=False,
    )
    gpus_per_job: float = setting(
        1.0,
        v.Float(0, 1, low_open=True),
        "GPU share of a torch job on Ray (0.5 or 0.25 lets small models share one GPU)",
        "GPUs",
        identity=False,
    )

    def check(self) -> None:
        if self.workers and self.executor == "local":
            raise UserError(
                "workers applies to executor=ray; executor=local runs one job at a time"
            )
        if self.gpus_per_job != 1.0 and self.executor == "local":  # 1.0: the default
            raise UserError(
                "gpus_per_job applies to executor=ray; executor=local runs one job at a time"
                " on the whole device"
            )
        tool = env_manager_tool(self.env_manager)
        if self.executor == "local" and tool and shutil.which(tool) is None:
            # else every step failed only once main had started, saying just "failed"
            raise UserError(
                f"env_manager={self.env_manager} needs {tool}, which is not installed here;"
                " install it or use env_manager=local"
            )


# The steps, in pipeline order: `python -m pipeline <step>` and the MLproject entry points.
STEP_SETTINGS: dict[str, type[Settings]] = {
    "prepare": PrepareSettings,
    "train": TrainSettings,
    "tune": TuneSettings,
    "evaluate": EvaluateSettings,
    "compare": CompareSettings,
    "main": MainSettings,
}
STEPS = tuple(STEP_SETTINGS)
