"""The training loop in plain torch: fit(), one epoch, predict(), early stopping, checkpoints.

The engine never calls MLflow or Optuna. It reports each finished epoch through a callback
that the step connects to tracking (or to a pruner), and it calls that callback only after
the epoch's checkpoint is on disk, so a resumed run never logs an epoch twice.

Data path (as in airbench): the whole uint8 split is one tensor on the training device,
batches are index slices of a seeded permutation, pixels become float on the fly and are
augmented per batch on the device; no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline import config, files
from pipeline.augment import make_augmenter
from pipeline.data import Split

EVAL_BATCH = config.PREDICT_BATCH  # images per forward pass when no gradients are kept


class NonFiniteLoss(RuntimeError):
    """Training diverged; the run ends FAILED with this message."""


# --- devices ---------------------------------------------------------------------------


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; asking for an absent device is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is visible; use device=auto or cpu")
    if name == "mps" and not has_mps:
        raise ValueError("device=mps but MPS is not available; use device=auto or cpu")
    return torch.device(name)


def batch_starts(n: int, batch_size: int) -> range:
    """Where an epoch's training batches start in its permutation of n images. A last batch
    of one image is left out: BatchNorm cannot normalise a single image in training (cnn2
    with batchnorm crashed on a 129-image subset at batch size 128), and the next epoch's
    permutation leaves out another image."""
    used = n - 1 if n > batch_size and n % batch_size == 1 else n
    return range(0, used, batch_size)


def uses_channels_last(model: nn.Module) -> bool:
    # channels_last speeds convolutions up 1.5-2.7x on this CPU and on CUDA tensor cores
    # (NOTES.md); it does nothing for MLPs and LSTMs.
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def native_bf16(device: torch.device) -> bool:
    """Does the device compute bf16 natively? On a CPU without bf16 units, bf16 autocast is
    3.5-9x slower than fp32 (NOTES.md); where it is native, BF16_SPEEDUP says by how much
    each model gains (or loses)."""
    if device.type == "cuda":
        # torch counts emulated bf16 (pre-Ampere GPUs) as supported by default; it is slow
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False  # MPS: never measured
    # torch's own CPU probes; private, hence the getattr (absent = not known to have it)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


# bf16 training passes over fp32 (device kind -> model name -> the engine's training images
# per second in bf16 / in fp32). precision="auto" trains in fp32 where this is below 1:
# native bf16 is not always faster. Models never measured on a device kind follow the
# device (bf16 where native_bf16).
#
# cpu: the project's 2-core AMD EPYC VM (AVX512-BF16), torch 2.14.1, 2 threads, 2026-12-01,
# `python bench/bench_train.py --models <all eleven> --precision bf16 --images 1280 --repeats
# 3 --mlflow-overhead none` (README, "Performance"): batch 128, SGD, channels_last for the
# conv nets. mlp's step is a few small matmuls, where the casts cost more than bf16 saves
# (0.93x again with --images 5120 --repeats 5).
# cuda: one NVIDIA H200, torch 2.11.0+cu130, 2026-11-30, `python bench/bench_train.py
# --device cuda --compile --mlflow-overhead none --images 12800` (docs/gpu.md): batch 128,
# SGD, median of 5. At these sizes a GPU step is bound by launching kernels, and autocast
# adds cast kernels; the step costs the same at any width, so wider variants are no
# different.
BF16_SPEEDUP: dict[str, dict[str, float]] = {
    "cpu": {
        "mlp": 0.92, "cnn1": 1.11, "lenet5": 1.14, "cnn2": 1.40, "cnn3": 1.60, "cnn4": 1.74,
        "mini_resnet": 2.13, "resnet18": 2.38, "vgg": 2.87, "lstm": 1.76, "fastnet": 1.73,
    },
    "cuda": {"lenet5": 0.81, "cnn2": 0.89, "mini_resnet": 0.82, "fastnet": 0.88},
}  # fmt: skip


def resolve_precision(mode: str, device: torch.device, model_name: str) -> str:
    """The `precision` setting as "bf16" or "fp32": as given, or for "auto" bf16 where the
    device computes it natively, unless BF16_SPEEDUP measured bf16 slower for this model
    on this kind of device."""
    mode = str(mode).strip().lower()
    if mode not in config.PRECISIONS:
        *first, last = config.PRECISIONS
        raise ValueError(f"precision must be {', '.join(first)} or {last}, got {mode!r}")
    if mode != "auto":
        return mode
    device = torch.device(device)
    if not native_bf16(device):
        return "fp32"
    speedup = BF16_SPEEDUP.get(device.type, {}).get(model_name)
    return "fp32" if speedup is not None and speedup < 1 else "bf16"


def autocast(device: torch.device, precision: str):
    """The context of a training forward pass: bf16 autocast or nothing (fp32). The
    optimizer keeps fp32 weights and the loss is taken in fp32 either way."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- optimisation pieces ---------------------------------------------------------------


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    makers = {
        "adam": lambda: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
        # momentum 0.9 with Nesterov: plain SGD (report 004's 88.27%) converges far slower
        "sgd": lambda: torch.optim.SGD(
            params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        ),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay),
    }
    return makers[name]()


def make_loss(
    name: str, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Loss on logits: ce; nll on log-softmax outputs; mse of softmax against one-hot."""

    def ce(logits, target):
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)

    def nll(logits, target):
        return F.nll_loss(F.log_softmax(logits, dim=1), target)

    def mse(logits, target):
        one_hot = F.one_hot(target, config.NUM_CLASSES).to(logits.dtype)
        return F.mse_loss(F.softmax(logits, dim=1), one_hot)

    return {"ce": ce, "nll": nll, "mse": mse}[name]


LINEAR_WARMUP = 0.2  # share of all steps spent ramping the lr up in the linear schedule


def linear_factor(step: int, total_steps: int) -> float:
    """lr multiplier of the `linear` schedule for optimizer step `step` (0-based): a ramp up
    over the first 20% of the steps (1/w, 2/w, ..., 1), then a straight line down that
    reaches 0 after the last step (airbench's triangle)."""
    total = max(2, total_steps)
    warm = min(total - 1, max(1, round(LINEAR_WARMUP * total)))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / (total - warm))


def make_scheduler(name: str, optimizer, lr: float, total_steps: int):
    """Stepped once per batch; None for a constant learning rate."""
    if name == "linear":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_factor(step, total_steps)
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(2, total_steps)
        )
    return None


# --- data on the device ----------------------------------------------------------------


@dataclass
class DeviceSplit:
    images: torch.Tensor  # (N, 1, 28, 28) uint8 on the training device
    labels: torch.Tensor  # (N,) int64 on the training device

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> DeviceSplit:
        return cls(
            # copies: the cached split arrays are read-only and shared between trainings
            torch.tensor(split.images, dtype=torch.uint8, device=device),
            torch.tensor(split.labels, dtype=torch.int64, device=device),
        )

    def __len__(self) -> int:
        return len(self.labels)


def to_input(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = images.float()  # (B, 1, 28, 28) raw pixels 0..255; the model normalises
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, channels_last: bool = False
) -> torch.Tensor:
    """Logits (N, 10) float32 for uint8 images already on the model's device.

    Always fp32, never autocast: the logged model runs in fp32, so validation scores the
    model exactly as `evaluate` and a consumer of the logged model will. Eval mode, so a
    model with test-time augmentation (fastnet's `tta`) applies it here too.
    """
    model.eval()
    outs = [
        model(to_input(images[start : start + EVAL_BATCH], channels_last)).float()
        for start in range(0, len(images), EVAL_BATCH)
    ]
    return torch.cat(outs) if outs else torch.empty(0, config.NUM_CLASSES)


def evaluate_split(model, data: DeviceSplit, loss_fn, channels_last: bool) -> tuple[float, float]:
    """(mean loss, accuracy) of a split."""
    logits = predict_logits(model, data.images, channels_last)
    loss = float(loss_fn(logits, data.labels))
    accuracy = float((logits.argmax(1) == data.labels).float().mean())
    return loss, accuracy


# --- state ------------------------------------------------------------------------------


@dataclass
class FitState:
    """Everything needed to continue training exactly where it stopped."""

    epoch: int = 0  # epochs completed
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement of val_accuracy
    history: dict[str, list[float]] = field(default_factory=dict)
    best_weights: dict | None = None
    train_time_s: float = 0.0


@dataclass
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    stopped_early: bool
    train_time_s: float  # training + validation of every epoch; never compilation
    compile_time_s: float = 0.0  # the torch.compile warm-up; 0.0 when not compiled
    # the whole warm-up: the compile, or a GPU's first passes; 0.0 for an eager CPU run
    warmup_time_s: float = 0.0


@dataclass
class Trainer:
    """One training job: model, data and settings on one device."""

    model: nn.Module
    train: DeviceSplit
    val: DeviceSplit
    cfg: config.TrainSettings  # what to train: optimizer, loss, schedule, augmentation, ...
    device: torch.device
    checkpoint_path: Path | None = None
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    progress: bool = True
    compile: bool = False  # run forward passes through torch.compile (see resolve_compile)

    def __post_init__(self):
        self.channels_last = uses_channels_last(self.model)
        self.precision = resolve_precision(self.cfg.precision, self.device, self.cfg.model)
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=memory)
        # What runs the forward passes. self.model stays the plain module, so checkpoints
        # and state_dicts never carry torch.compile's `_orig_mod.` prefixes.
        self.runner: nn.Module = compiled(self.model) if self.compile else self.model
        self.warmup_time_s = 0.0
        # On a GPU the first pass over each batch shape is slow even without compiling:
        # cuDNN tries its kernels (cudnn.benchmark) and CUDA loads its modules. On the H200
        # that made the first epoch about 3.5 s longer than the others (docs/gpu.md).
        self._warm = not (self.compile or self.device.type == "cuda")
        if getattr(self.model, "tta", False) and not self.cfg.flip:
            # measured: fastnet trained without flips scored 88.8% validation with flip
            # TTA against 94.1% without it (docs/fastnet_search.md, trial D7)
            warnings.warn(
                "the model averages its predictions over mirror images (tta=true) but"
                " flip=false: it will score far worse; set flip=true or tta=false",
                stacklevel=2,
            )
        cfg = self.cfg
        self.loss_fn = make_loss(cfg.loss, cfg.label_smoothing)
        self.optimizer = make_optimizer(
            cfg.optimizer, self.model.parameters(), cfg.lr, cfg.weight_decay
        )
        self.starts = batch_starts(len(self.train), cfg.batch_size)  # the same every epoch
        self.steps_per_epoch = len(self.starts)
        self.scheduler = make_scheduler(
            cfg.schedule, self.optimizer, cfg.lr, cfg.epochs * self.steps_per_epoch
        )
        self.augmenter = make_augmenter(cfg.flip, cfg.augment, cfg.seed + 1, self.device)
        self.order = torch.Generator().manual_seed(cfg.seed)  # batch order, on CPU
        self.state = FitState()

    # -- compilation --
    def warm_up(self) -> float:
        """Compile every graph the run will need (and on a GPU, let cuDNN pick its kernels
        for every batch shape) before any timing starts; returns seconds.

        Forward + backward of a full training batch (and of the last, smaller one), with
        the gradients thrown away and no optimizer step, then eval-mode forwards of the
        validation batch sizes (switching to eval recompiles). The BatchNorm statistics,
        the global RNG and the augmenter's stream are restored afterwards, so the warm-up
        leaves no trace in training.
        """
        if self._warm:
            return 0.0
        started = time.perf_counter()
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        augmenter_state = self.augmenter.state_dict()
        self.runner.train()
        for size in _batch_sizes(len(self.train), self.cfg.batch_size):
            # (size, 1, 28, 28), through the augmenter as in training
            x = self.augmenter(to_input(self.train.images[:size], self.channels_last))
            with autocast(self.device, self.precision):
                logits = self.runner(x)
            self.loss_fn(logits.float(), self.train.labels[:size]).backward()
        self.optimizer.zero_grad(set_to_none=True)
        for size in _batch_sizes(len(self.val), EVAL_BATCH):
            predict_logits(self.runner, self.val.images[:size], self.channels_last)
        self.model.load_state_dict(saved)
        self.augmenter.load_state_dict(augmenter_state)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)
            torch.cuda.synchronize(self.device)
        self._warm = True
        self.warmup_time_s = time.perf_counter() - started
        return self.warmup_time_s

    @property
    def compile_time_s(self) -> float:
        """The warm-up when it compiled (the `compile_time_s` metric); 0.0 in eager mode."""
        return self.warmup_time_s if self.compile else 0.0

    # -- one epoch --
    def train_epoch(self) -> tuple[float, float, float]:
        """(mean training loss, training accuracy, images per second) of one epoch."""
        self.warm_up()  # a no-op after the first call; never inside the timed epoch
        self.runner.train()
        bs = self.cfg.batch_size
        perm = torch.randperm(len(self.train), generator=self.order).to(self.device)
        n = self.starts.stop  # the images this epoch trains on
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        start = time.perf_counter()
        for begin in self._progress(self.starts):
            idx = perm[begin : begin + bs]  # (B,) indices into the device-resident split
            x = self.augmenter(to_input(self.train.images[idx], self.channels_last))
            y = self.train.labels[idx]
            with autocast(self.device, self.precision):
                logits = self.runner(x)
            loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        mean_loss = float(loss_sum) / n  # one host sync per epoch, not per batch
        seconds = time.perf_counter() - start  # after the sync: a GPU's queued steps count
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(
                f"training loss became {mean_loss} in epoch {self.state.epoch + 1}; "
                f"lower lr (now {self.cfg.lr}) or change optimizer/loss"
            )
        return mean_loss, float(correct) / n, n / max(seconds, 1e-9)

    def _progress(self, starts: range):
        if not (self.progress and sys.stderr.isatty()):
            return starts
        from tqdm import tqdm

        return tqdm(
            starts,
            desc=f"epoch {self.state.epoch + 1}/{self.cfg.epochs}",
            leave=False,
            unit="batch",
        )

    # -- the loop --
    def fit(self) -> FitResult:
        cfg, state = self.cfg, self.state
        self.warm_up()  # compile / GPU warm-up first (else a no-op): never on the epoch clock
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            began = time.perf_counter()
            train_loss, train_acc, ips = self.train_epoch()
            val_loss, val_acc = evaluate_split(
                self.runner, self.val, self.loss_fn, self.channels_last
            )
            state.epoch += 1
            metrics = {
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_time_s": time.perf_counter() - began,
                "train_images_per_s": ips,
            }
            state.train_time_s += metrics["epoch_time_s"]
            self._record(metrics)
            self.save_checkpoint()
            if self.on_epoch_end is not None:
                self.on_epoch_end(state.epoch, metrics)
        if cfg.restore_best and state.best_weights is not None:  # the best epoch's weights
            self.model.load_state_dict(state.best_weights)
        return FitResult(
            state.history,
            state.best_epoch,
            state.best_val_accuracy,
            state.epoch,
            state.epoch < cfg.epochs,
            state.train_time_s,
            self.compile_time_s,
            self.warmup_time_s,
        )

    def _record(self, metrics: dict[str, float]) -> None:
        state = self.state
        for key, value in metrics.items():
            state.history.setdefault(key, []).append(float(value))
        if metrics["val_accuracy"] > state.best_val_accuracy:
            state.best_val_accuracy, state.best_epoch, state.bad_epochs = (
                metrics["val_accuracy"],
                state.epoch,
                0,
            )
            state.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            state.bad_epochs += 1

    # -- checkpoints --
    def checkpoint(self) -> dict:
        state = self.state
        rng = {"torch": torch.get_rng_state(), "order": self.order.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "augmenter": self.augmenter.state_dict(),
            "rng": rng,
            "state": {
                "epoch": state.epoch,
                "best_val_accuracy": state.best_val_accuracy,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "history": state.history,
                "train_time_s": state.train_time_s,
            },
            "best_weights": state.best_weights,
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            atomic_torch_save(self.checkpoint(), self.checkpoint_path)

    def load_checkpoint(self, path: Path) -> None:
        ckpt = load_checkpoint_file(path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.augmenter.load_state_dict(ckpt["augmenter"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        self.order.set_state(ckpt["rng"]["order"].cpu())
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
        self.state = FitState(**ckpt["state"], best_weights=ckpt["best_weights"])


def _batch_sizes(n: int, batch: int) -> list[int]:
    """The distinct batch sizes an epoch over n items produces: full and the remainder."""
    return sorted({min(n, batch), n % batch} - {0}, reverse=True)


# --- torch.compile ------------------------------------------------------------------------


def compiled(model: nn.Module) -> nn.Module:
    """torch.compile with static shapes: an epoch has at most two training and two
    validation batch sizes, all compiled by Trainer.warm_up, and a static graph per size
    avoids the slower dynamic-shape graph that a second size would otherwise trigger.

    Drops the graphs compiled for earlier models first. TorchDynamo caches graphs per code
    object, and every `nn.Sequential` shares one forward(): in a process that trains model
    after model (a study, a benchmark) the fourth model would pass the limit of 8 graphs
    per code object, and past it torch runs eager without an error (seen in
    bench/bench_train.py). One compiled Trainer at a time per process, therefore.
    """
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


# Does torch.compile pay for itself? (device kind -> model name -> measurement.) "verdict"
# is what compile="auto" does: "compile" only where the measured steady-state gain wins back
# the compile time within a typical run; "eager" where it does not. Combinations never
# measured (MPS, any model not listed) mean no compile: compile_verdict() reports
# them as "unmeasured".
#
# cpu: measured 2026-11-30 on the project's 2-core AMD EPYC VM (AVX-512), torch 2.14.1,
# 2 threads, with `TORCHINDUCTOR_CACHE_DIR=<empty dir> python bench/bench_train.py
# --compile` (docs/fastnet_search.md, its last section): batch 128, SGD, channels_last on both
# sides, 2,600 real images per timed epoch, median of 5 interleaved timings. compile_s:
# Trainer.warm_up with a cold compile cache, i.e. the 4 graphs of a real run (2 training
# and 2 validation batch sizes). speedup: compiled / eager training images per second.
# Assumed typical run: 10 epochs of 54,000 images; since every model ran SLOWER compiled,
# compiling never pays back here, whatever the run length. cnn2 was measured with
# batchnorm=true. (A second run with a warm cache: compile 1.5-31 s, speed-ups 0.73-0.85.)
# The figures are fp32 training passes. With bf16 (precision=auto on this CPU, measured the
# same way later that day): compiled 0.69-0.87x eager in two runs; verdicts unchanged.
_MEASURED = ("lenet5", "cnn2", "mini_resnet", "fastnet")
COMPILE_TABLE: dict[str, dict[str, dict]] = {
    "cpu": {
        "lenet5": {"compile_s": 35.1, "speedup": 0.64, "verdict": "eager"},
        "cnn2": {"compile_s": 24.9, "speedup": 0.82, "verdict": "eager"},
        "mini_resnet": {"compile_s": 25.9, "speedup": 0.92, "verdict": "eager"},
        "fastnet": {"compile_s": 31.4, "speedup": 0.89, "verdict": "eager"},
    },
    # cuda: measured 2026-11-30 on one NVIDIA H200 (torch 2.11.0+cu130, Python 3.12) with
    # `python bench/bench_train.py --device cuda --compile --mlflow-overhead none --images
    # 12800` (docs/gpu.md): batch 128, SGD, bf16, median of 5. Every model ran SLOWER
    # compiled: at these sizes a step is bound by launching kernels from Python, and the
    # default inductor mode does not remove that cost.
    "cuda": {
        "lenet5": {"compile_s": 16.5, "speedup": 0.95, "verdict": "eager"},
        "cnn2": {"compile_s": 11.5, "speedup": 0.94, "verdict": "eager"},
        "mini_resnet": {"compile_s": 10.5, "speedup": 0.97, "verdict": "eager"},
        "fastnet": {"compile_s": 10.4, "speedup": 0.80, "verdict": "eager"},
    },
    # no Apple machine was available when the table was filled
    "mps": {name: {"verdict": "unmeasured"} for name in _MEASURED},
}


def compile_verdict(device_kind: str, model_name: str) -> str:
    """'compile', 'eager' or 'unmeasured' for a device kind (cpu, cuda, mps) and model."""
    entry = COMPILE_TABLE.get(device_kind, {}).get(model_name)
    return "unmeasured" if entry is None else entry["verdict"]


def resolve_compile(mode: str | bool, device: torch.device, model_name: str) -> bool:
    """The `compile` setting as a bool: "true"/"false" (or a bool) as given; "auto" compiles
    only where COMPILE_TABLE shows a net gain counting compile time."""
    if isinstance(mode, bool):
        return mode
    mode = str(mode).strip().lower()
    if mode in ("true", "false"):
        return mode == "true"
    if mode != "auto":
        raise ValueError(f"compile must be auto, true or false, got {mode!r}")
    return compile_verdict(torch.device(device).type, model_name) == "compile"


def atomic_torch_save(obj, path: Path) -> None:
    files.atomic_write(path, lambda handle: torch.save(obj, handle))


def load_checkpoint_file(path: Path, device: torch.device) -> dict:
    """A checkpoint's tensors and plain values, never code: weights_only=True refuses any
    pickled object (a crafted file cannot run anything when it is loaded)."""
    return torch.load(path, map_location=device, weights_only=True)


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
