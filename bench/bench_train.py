"""Training throughput of every registered torch model on this machine: prints a table.

    python bench/bench_train.py [--models lenet5,cnn2] [--batches 20] [--batch-size 128]

For each model: parameters, training images per second through the engine's own epoch
(device-resident uint8 data, on-the-fly normalisation, channels_last where it has convs),
and the seconds one epoch over the 54,000-image training split would take at that rate.
Uses the real prepared data when present, else random pixels (same shapes, same cost).
Figures, not a test: a loaded machine gives lower numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline import config, data, engine, models

TRAIN_SIZE = 54_000  # images per epoch with the default split


def images(n: int) -> data.Split:
    found = data.find_cache()
    if found is not None:
        split = data.load_split(found, "train")
        return data.Split(split.images[:n], split.labels[:n])
    rng = np.random.default_rng(0)
    return data.Split(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))


def measure(name: str, split: data.Split, batch_size: int, device: torch.device) -> dict:
    cfg = config.TrainConfig(model=name, batch_size=batch_size, epochs=1)
    model = models.build_model(name)
    small = engine.DeviceSplit.from_split(
        data.Split(split.images[:256], split.labels[:256]), device
    )
    trainer = engine.Trainer(
        model, engine.DeviceSplit.from_split(split, device), small, cfg, device, progress=False
    )
    warm = engine.Trainer(model, small, small, cfg, device, progress=False)
    warm.train_epoch()  # first batches pay for allocation and kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train_epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = len(split.labels) / (time.perf_counter() - started)
    return {
        "model": name,
        "n_params": models.count_parameters(model),
        "images_per_s": rate,
        "epoch_s": TRAIN_SIZE / rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(config.TORCH_MODEL_NAMES))
    parser.add_argument("--batches", type=int, default=20, help="timed batches per model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = engine.select_device(args.device)
    split = images(args.batches * args.batch_size)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {len(split.labels)} timed images per model"
    )
    print(f"{'model':<12} {'params':>11} {'images/s':>10} {'s/epoch (54k)':>14}")
    for name in args.models.split(","):
        row = measure(name, split, args.batch_size, device)
        print(
            f"{row['model']:<12} {row['n_params']:>11,} {row['images_per_s']:>10,.0f} "
            f"{row['epoch_s']:>14,.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
