"""Print the throughput (images/s) of the training-batch augmenter.

Usage: `python bench/bench_augment.py [--device cpu] [--batch-size 256] [--iters 200]
[--repeats 5]`.
Three settings: flip only, flip plus the four affine transforms (one grid_sample), and
those plus random erasing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_augment.py` from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline import cli, engine  # noqa: E402
from pipeline.augment import AFFINE, make_augmenter  # noqa: E402
from pipeline.config import AUGMENTATIONS, DEVICES  # noqa: E402

SETTINGS = {
    "flip": (True, ()),
    "flip+rotate+shift+zoom+shear": (True, AFFINE),
    "flip+" + "+".join(AUGMENTATIONS): (True, AUGMENTATIONS),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = cli.StepParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="default: cpu")
    parser.add_argument(
        "--batch-size", type=cli.at_least(1), default=256, help="images per call (256)"
    )
    parser.add_argument(
        "--iters", type=cli.at_least(1), default=200, help="timed calls per setting (200)"
    )
    parser.add_argument(
        "--warmup", type=cli.at_least(0), default=20, help="untimed calls first (20)"
    )
    # Best and median of several timings: a shared machine makes single timings noisy.
    parser.add_argument(
        "--repeats", type=cli.at_least(1), default=5, help="timings per setting (5)"
    )
    return parser


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(augmenter, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Calls per second times batch size, after warm-up, device work included."""
    for _ in range(warmup):
        augmenter(x)
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(iters):
        augmenter(x)
    _sync(x.device)
    return iters * x.shape[0] / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> int:
    try:
        device = engine.select_device(args.device)
    except ValueError as exc:  # cuda or mps asked for where there is none
        print(f"error: {exc}", file=sys.stderr)
        return 2
    x = torch.rand(args.batch_size, 1, 28, 28, device=device) * 255  # (B, 1, 28, 28) float32
    print(f"device={device} batch={args.batch_size} threads={torch.get_num_threads()}")
    for name, (flip, augment) in SETTINGS.items():
        augmenter = make_augmenter(flip, augment, seed=0, device=device)
        rates = sorted(
            images_per_second(augmenter, x, args.iters, args.warmup) for _ in range(args.repeats)
        )
        best, median = rates[-1], statistics.median(rates)  # (an even count's middle pair)
        print(f"{name:36s} best {best:11,.0f}  median {median:11,.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
