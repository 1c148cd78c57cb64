"""Training throughput, side by side in one process: the engine against its limit and a naive
torchvision pipeline, channels_last on/off, bf16 on/off, torch.compile on/off. Prints a
table, writes JSON.

    python bench/bench_train.py [--models lenet5,cnn2,mini_resnet,fastnet] [--images 2600]
                                [--repeats 5] [--batch-size 128] [--precision auto]
                                [--compile] [--json PATH]

Per model (training images per second, median of --repeats timings, variants interleaved
so machine noise hits them alike):
  engine       the engine's own epoch (Trainer.train_epoch): uint8 split in memory, index
               slices of a seeded permutation, float conversion and a random flip per
               batch, channels_last for conv nets, the train step's precision (--precision,
               default auto: per model, as train resolves it, engine.resolve_precision)
  engine_nchw  the same with channels_last switched off
  engine_fp32  the same with precision=fp32 (equal to engine where auto means fp32)
  pure         the limit: the same model and optimizer on the same batches, already float
               tensors in the engine's memory format and precision; only forward, backward,
               step
  naive        torchvision `FashionMNIST` + PIL transforms (RandomHorizontalFlip, ToTensor)
               + `DataLoader(shuffle=True)` (num_workers=0, its default; 2 cores leave no
               room for workers), model in the default memory format, fp32. ToTensor scales to
               0..1; the batch is multiplied by 255 because every model here standardises
               raw pixels itself. The raw folder is written from the same images into a
               temporary `<root>/FashionMNIST/raw/`, so nothing is downloaded.
  compiled     (--compile) torch.compile through the engine (Trainer(compile=True)); the
               warm-up's compile time is reported apart and never enters images/s.
Ratios: engine / pure (1.0 = no overhead left) and engine / naive (the speed-up over the
naive pipeline). cnn2 runs with batchnorm=true (the variant the 0.1 release timed and the
compile table covers). Uses the real prepared data when present, else random pixels
(same shapes, same cost). Figures, not a test: a loaded machine gives lower numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/bench_train.py` from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline import cli, config, data, engine, files, models  # noqa: E402
from pipeline.errors import UserError  # noqa: E402

TRAIN_SIZE = 54_000  # images per epoch with the default split
# The default set and the options each runs with.
MODELS = {"lenet5": {}, "cnn2": {"batchnorm": True}, "mini_resnet": {}, "fastnet": {}}
# A typical run for the "does compiling pay" verdict: the train step's default 10 epochs.
TYPICAL_RUN_IMAGES = 10 * TRAIN_SIZE
VARIANTS = ("engine", "engine_nchw", "engine_fp32", "pure", "naive")


def bench_images(n: int) -> tuple[data.Split, str]:
    """n training images: the real prepared split when there is one, else random pixels."""
    found = data.find_cache()
    if found is not None:
        split = data.load_split(found, "train")
        return data.Split(split.images[:n], split.labels[:n]), "real"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return data.Split(images, rng.integers(0, 10, n).astype(np.int64)), "random"


def train_config(args: argparse.Namespace, name: str, precision: str) -> config.TrainSettings:
    # a constant lr: the figures are speeds, and no schedule should end mid-benchmark
    return config.TrainSettings(
        model=name,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=0.01,
        flip=True,
        precision=precision,
    )


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build_model(name, **MODELS.get(name, {}))


# --- the variants: each returns a callable that times one pass over the images -----------


def validation_part(split: data.Split, device) -> engine.DeviceSplit:
    # 1,100 images = one full eval batch (1,024) and a remainder, like the real 6,000, so
    # the compiled variant compiles as many graphs as a real run: two training batch sizes
    # (with the default 2,600 images: 20 x 128 and 40) and two validation sizes.
    return engine.DeviceSplit.from_split(
        data.Split(split.images[:1100], split.labels[:1100]), device
    )


def engine_variant(
    name: str,
    split: data.Split,
    args,
    device,
    precision: str,
    channels_last: bool = True,
    compile_: bool = False,
):
    """The engine's epoch; returns (time one epoch -> images/s, compile seconds)."""
    small = validation_part(split, device)
    trainer = engine.Trainer(
        build(name),
        engine.DeviceSplit.from_split(split, device),
        small,
        train_config(args, name, precision),
        device,
        progress=False,
        compile=compile_,
    )
    if not channels_last and trainer.channels_last:
        trainer.channels_last = False  # the same Parameters, back in NCHW: the optimizer keeps them
        trainer.model.to(memory_format=torch.contiguous_format)
    compile_s = trainer.warm_up()
    trainer.train_epoch()  # warm: allocation and kernel selection

    def one() -> float:
        _sync(device)
        return trainer.train_epoch()[2]

    return one, compile_s


def pure_variant(name: str, split: data.Split, args, device, precision: str):
    """forward/backward/step only, on batches prepared as float tensors beforehand."""
    model = build(name).to(device)
    channels_last = engine.uses_channels_last(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = engine.make_optimizer(args.optimizer, model.parameters(), 0.01, 0.0)
    loss_fn = engine.make_loss("ce")
    x_all = engine.to_input(torch.tensor(split.images, device=device), channels_last)
    y_all = torch.tensor(split.labels, device=device)
    starts = engine.batch_starts(len(y_all), args.batch_size)  # the engine's batches
    batches = [(x_all[s : s + args.batch_size], y_all[s : s + args.batch_size]) for s in starts]
    return timed_epoch(model, opt, loss_fn, lambda: batches, starts.stop, device, precision)


def timed_epoch(model, opt, loss_fn, batches, n_images: int, device, precision: str):
    """A function that trains one epoch over `batches()` (a fresh iterable of (x, y) each
    call, its data loading inside the clock) and returns images per second; warmed up once."""

    def epoch() -> float:
        _sync(device)
        started = time.perf_counter()
        for x, y in batches():
            with engine.autocast(device, precision):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return n_images / (time.perf_counter() - started)

    epoch()
    return epoch


def write_torchvision_raw(split: data.Split, root: Path) -> Path:
    """`<root>/FashionMNIST/raw/` with decoded IDX files of these images (the test files
    are a stub: torchvision only checks that they exist)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def idx(array: np.ndarray) -> bytes:
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()

    images, labels = split.images[:, 0], split.labels.astype(np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(labels))
    return root


def naive_variant(name: str, root: Path, args, device):
    """What a typical tutorial does: torchvision dataset, PIL transforms, DataLoader."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    dataset = datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    used = engine.batch_starts(len(dataset), args.batch_size).stop
    # as the engine, no last batch of one image (BatchNorm cannot train on it)
    loader = DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=used < len(dataset)
    )
    model = build(name).to(device).train()
    opt = engine.make_optimizer(args.optimizer, model.parameters(), 0.01, 0.0)
    loss_fn = engine.make_loss("ce")

    def batches():  # ToTensor's 0..1 -> the raw 0..255 the models take
        return ((x.to(device) * 255, y.to(device)) for x, y in loader)

    return timed_epoch(model, opt, loss_fn, batches, used, device, "fp32")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the place for the tracking overhead ---------------------------------------------------


def overhead_job(name: str, epochs: int, subset: int):
    """The real training run whose tracking time is measured, prepared now (its data and
    settings checked before any timing: a bad --overhead-subset or absent data failed
    after the whole table). None when MLflow is not installed (a GPU machine with PyTorch
    only): the overhead is then skipped."""
    try:  # pipeline.fit and .tracking import mlflow only when used, so ask for it here
        import mlflow  # noqa: F401
    except ImportError:
        return None
    from pipeline import fit

    settings = config.TrainSettings(model=name, epochs=epochs, patience=epochs, subset=subset)
    return fit.prepare(settings)


def mlflow_overhead(job) -> dict:
    """The time a real training run (fit.run: the train step's own code) spends inside
    tracking calls, from pipeline.tracking's OVERHEAD counter, in a temporary store: per
    epoch (the epoch's metrics) as a share of the epoch time, and once per run (parameters,
    datasets, figures, the logged model)."""
    import os

    from pipeline import fit, tracking

    with tempfile.TemporaryDirectory(prefix="fmb-overhead-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["FMB_MLRUNS_DIR"] = tmp
        tracking.apply_defaults()
        marks: list[float] = []
        start = tracking.OVERHEAD.seconds
        _, summary = fit.run(
            job, hook=lambda epoch, metrics: marks.append(tracking.OVERHEAD.seconds)
        )
        total = tracking.OVERHEAD.seconds - start
    # between two epochs' hooks the run logs only the later epoch's metrics
    per_epoch = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    epoch_s = summary["train_time_s"] / summary["epochs_run"]
    per_epoch_s = statistics.median(per_epoch)  # --overhead-epochs is 2 at least
    return {
        "model": job.settings.model,
        "epochs": job.settings.epochs,
        "subset": job.settings.subset,  # 0 = the whole training split
        "epoch_s": epoch_s,
        "per_epoch_tracking_s": per_epoch_s,
        "per_epoch_share": per_epoch_s / epoch_s,
        "run_tracking_s": total,
        "run_share": total / summary["train_time_s"],
    }


# --- one model -----------------------------------------------------------------------------


def measure(name: str, split: data.Split, root: Path, args, device) -> dict:
    """Every variant of one model, interleaved over --repeats rounds; medians."""
    precision = engine.resolve_precision(args.precision, device, name)  # as train would
    runs: dict[str, Callable[[], float]] = {}
    runs["engine"], _ = engine_variant(name, split, args, device, precision)
    runs["engine_nchw"], _ = engine_variant(
        name, split, args, device, precision, channels_last=False
    )
    runs["engine_fp32"], _ = engine_variant(name, split, args, device, "fp32")
    runs["pure"] = pure_variant(name, split, args, device, precision)
    runs["naive"] = naive_variant(name, root, args, device)
    compile_s = None
    if args.compile:
        runs["compiled"], compile_s = engine_variant(
            name, split, args, device, precision, compile_=True
        )
    timings: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, one in runs.items():
            timings[key].append(one())
    med = {key: statistics.median(values) for key, values in timings.items()}
    row = {
        "model": name,
        "options": MODELS.get(name, {}),
        "n_params": models.count_parameters(build(name)),
        "images_per_s": med,
        "timings": timings,
        "engine_over_pure": med["engine"] / med["pure"],
        "engine_over_naive": med["engine"] / med["naive"],
        "channels_last": engine.uses_channels_last(build(name)),
        "channels_last_speedup": med["engine"] / med["engine_nchw"],
        "precision": precision,
        "precision_speedup": med["engine"] / med["engine_fp32"],
        "epoch_s": TRAIN_SIZE / med["engine"],
    }
    if compile_s is not None:
        row.update(compile_summary(med["engine"], med["compiled"], compile_s))
    return row


def compile_summary(eager_ips: float, compiled_ips: float, compile_s: float) -> dict:
    """Steady-state speed-up and after how many training images compiling has paid off."""
    saved_per_image = 1 / eager_ips - 1 / compiled_ips  # seconds
    # None where compiling never pays (slower steps): JSON has no infinity
    breakeven = compile_s / saved_per_image if saved_per_image > 0 else None
    return {
        "compile_s": compile_s,
        "compile_speedup": compiled_ips / eager_ips,
        "breakeven_images": breakeven,
        # the assumption behind the verdict: a typical run trains TYPICAL_RUN_IMAGES images
        "compile_pays": breakeven is not None and breakeven < TYPICAL_RUN_IMAGES,
    }


def print_table(rows: list[dict]) -> None:
    cols = [*VARIANTS, "compiled"] if any("compile_s" in r for r in rows) else list(VARIANTS)
    head = f"{'model':<12} {'params':>9} " + " ".join(f"{c:>11}" for c in cols)
    head += f" {'eng/pure':>8} {'eng/naive':>9} {'cl gain':>7} {'precision':>12}"
    if "compiled" in cols:
        head += f" {'compile_s':>9} {'speedup':>7} {'pays':>5}"
    print(head)
    for r in rows:
        ips = r["images_per_s"]
        line = f"{r['model']:<12} {r['n_params']:>9,} " + " ".join(
            f"{ips[c]:>11,.0f}" for c in cols
        )
        line += (
            f" {r['engine_over_pure']:>8.2f} {r['engine_over_naive']:>9.2f}"
            # "-" where the model trains in NCHW anyway (no convolutions): the ratio is noise
            f" {format(r['channels_last_speedup'], '.2f') if r['channels_last'] else '-':>7}"
            f" {r['precision'] + ' x' + format(r['precision_speedup'], '.2f'):>12}"
        )
        if "compile_s" in r:
            line += (
                f" {r['compile_s']:>9.1f} {r['compile_speedup']:>7.2f}"
                f" {str(r['compile_pays']).lower():>5}"
            )
        print(line, flush=True)


def model_names(text: str) -> list[str]:
    """An argparse type: comma-separated torch model names (the engine trains no others)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in config.TORCH_MODEL_NAMES]
    if unknown or not names:
        got = f"unknown model {unknown[0]!r}" if unknown else "no model named"
        raise argparse.ArgumentTypeError(
            f"{got}; choose from {', '.join(config.TORCH_MODEL_NAMES)}"
        )
    return names


def get_args_parser() -> argparse.ArgumentParser:
    # the first paragraph: the docstring's first line stops mid-sentence
    parser = cli.StepParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=model_names, default=",".join(MODELS), help="comma-separated names"
    )
    parser.add_argument(
        "--images", type=cli.at_least(1), default=2600, help="images per timed epoch"
    )
    parser.add_argument(
        "--repeats", type=cli.at_least(1), default=5, help="timings per variant (median)"
    )
    parser.add_argument("--batch-size", type=cli.at_least(1), default=128)
    parser.add_argument("--optimizer", default="sgd", choices=config.OPTIMIZERS)
    parser.add_argument(
        "--precision", default="auto", choices=config.PRECISIONS, help="the engine's precision"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--device", default="auto", choices=config.DEVICES)
    parser.add_argument(
        "--threads", type=cli.at_least(0), default=0, help="torch threads; 0 = default"
    )
    parser.add_argument(
        "--mlflow-overhead",
        default="lenet5",
        choices=("none", *config.TORCH_MODEL_NAMES),
        metavar="MODEL",
        help="model of the real training run whose tracking time is measured; none = skip",
    )
    # two at least: the per-epoch figure is the time between two epochs' hooks
    parser.add_argument("--overhead-epochs", type=cli.at_least(2), default=3)
    parser.add_argument(
        "--overhead-subset", type=cli.at_least(0), default=0, help="0 = all 54,000 images"
    )
    parser.add_argument(
        "--json", type=cli.output_file, default=str(ROOT / "bench" / "results" / "bench_train.json")
    )
    return parser


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = engine.select_device(args.device)
    except ValueError as exc:  # cuda or mps asked for where there is none
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        split, kind = bench_images(args.images)
    except data.DataError as exc:  # a damaged cache
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = None
    if args.mlflow_overhead != "none":
        try:
            job = overhead_job(args.mlflow_overhead, args.overhead_epochs, args.overhead_subset)
        except (UserError, data.DataError, ValueError) as exc:  # before any timing
            skip = "--mlflow-overhead none skips it"
            print(
                f"error: --mlflow-overhead {args.mlflow_overhead}: {exc} ({skip})", file=sys.stderr
            )
            return 2
    names = args.models
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {args.optimizer}, precision {args.precision}, "
        f"{len(split.labels)} {kind} images per "
        f"timing, median of {args.repeats}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmb-torchvision-") as tmp:
        root = write_torchvision_raw(split, Path(tmp))
        for name in names:
            rows.append(measure(name, split, root, args, device))
    print_table(rows)
    overhead = None
    if args.mlflow_overhead != "none":
        if job is None:
            print("mlflow_overhead skipped: MLflow is not installed here")
        else:
            o = overhead = mlflow_overhead(job)
            print(
                f"mlflow_overhead model={o['model']} epochs={o['epochs']} subset={o['subset']}"
                f" epoch_s={o['epoch_s']:.2f}"
                f" per_epoch_tracking_s={o['per_epoch_tracking_s']:.3f}"
                f" per_epoch_share={100 * o['per_epoch_share']:.2f}%"
                f" run_tracking_s={o['run_tracking_s']:.2f} run_share={100 * o['run_share']:.1f}%"
            )
    meta = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "precision": args.precision,
        "images": len(split.labels),
        "data": kind,
        "repeats": args.repeats,
        "typical_run_images": TYPICAL_RUN_IMAGES,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg": _loadavg(),
    }
    path = Path(args.json)
    text = json.dumps({"meta": meta, "rows": rows, "mlflow_overhead": overhead}, indent=1)
    files.atomic_write_text(path, text)
    print(f"wrote {path}")
    return 0


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
