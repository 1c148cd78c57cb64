"""Names, paths and frozen settings shared by every step; standard library only.

Everything a user can type (step parameters) is parsed into one of the frozen dataclasses
below before torch, MLflow or Optuna is imported, so bad input fails in milliseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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

EXPERIMENT_NAME = "fashion-mnist"
REGISTERED_MODEL = "fashion-mnist-classifier"
CHAMPION_ALIAS = "champion"


def data_dir() -> Path:
    """Where prepared caches and downloads go (`FMB_DATA_DIR` lets tests use a temp dir)."""
    return Path(os.environ.get("FMB_DATA_DIR", ROOT / "data"))


def mlruns_dir() -> Path:
    """The embedded store's folder: SQLite DB, artifacts, Optuna DB."""
    return Path(os.environ.get("FMB_MLRUNS_DIR", ROOT / "mlruns"))


def default_tracking_uri() -> str:
    return f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


def default_optuna_storage() -> str:
    return f"sqlite:///{mlruns_dir() / 'optuna.db'}"


@dataclass(frozen=True)
class PrepareConfig:
    source: str = "auto"  # a directory, "auto" (contract order) or "download"
    val_fraction: float = 0.1  # share of the 60k training images held out for validation
    seed: int = 42  # the split seed: same seed, same split, same cache entry
    allow_unofficial: bool = False  # accept files whose decoded SHA-256 differs


@dataclass(frozen=True)
class TrainConfig:
    model: str = "cnn2"
    epochs: int = 10  # full passes over the training split
    batch_size: int = 128  # images per optimizer step
    optimizer: str = "adam"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # L2 (adam, sgd, rmsprop) or decoupled (adamw)
    loss: str = "ce"
    flip: bool = False  # random horizontal flip, p=0.5
    augment: tuple[str, ...] = ()  # any of rotate, shift, zoom, shear
    schedule: str = "none"
    label_smoothing: float = 0.0  # ce only; 0 = hard targets
    dropout: float | None = None  # None = the model's own default
    patience: int = 5  # epochs without val_accuracy gain before stopping
    subset: int = 0  # 0 = the whole training split, else a stratified sample of this size
    seed: int = 42  # model init, batch order and augmentation
    deterministic: bool = False
    device: str = "auto"
    resume: str | None = None  # run id to continue, or "true" with MLFLOW_RUN_ID
    dataset: str = "auto"  # dataset.digest of the prepared cache; auto = official, split below
    val_fraction: float = 0.1  # which prepared split to train on (see PrepareConfig)
    split_seed: int = 42
    model_options: dict = field(default_factory=dict)  # family variants, e.g. {"blocks": 4}


# Registry names (INTERFACE.md). Listed here, stdlib only, so parameters are validated
# before torch is imported; tests check they equal the registry in pipeline/models.
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
)
SKLEARN_MODEL_NAMES = ("logreg", "random_forest", "sk_mlp", "svc")
MODEL_NAMES = TORCH_MODEL_NAMES + SKLEARN_MODEL_NAMES
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LOSSES = ("ce", "nll", "mse")
AUGMENTATIONS = ("rotate", "shift", "zoom", "shear")
SCHEDULES = ("none", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
