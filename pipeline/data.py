"""Fashion-MNIST on disk: IDX reading and validation, sources, the seeded split and its cache.

The prepared cache is what training reads (as in nanoGPT's prepare step): uint8 arrays in
`.npz` files plus a JSON manifest, one directory per (data digest, split settings), written
to a temporary directory and renamed into place so a reader never sees half a cache.
The test split lives in its own file that only evaluation opens.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import config

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
CACHE_FORMAT = 1  # bump when the cache layout changes, so old caches are never misread


class DataError(ValueError):
    """A data file or source that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class IdxFile:
    array: np.ndarray  # (N, 28, 28) or (N,) uint8
    sha256: str  # of the decoded bytes, as in NOTES.md
    path: Path


@dataclass(frozen=True)
class Split:
    """One prepared split: images (N, 1, 28, 28) uint8, labels (N,) int64."""

    images: np.ndarray
    labels: np.ndarray


def _decoded_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt gzip file ({exc}); re-download or reinstall it") from None


def read_idx(path: Path, kind: str) -> IdxFile:
    """Read and validate one IDX file (gzip or plain); kind is 'images' or 'labels'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = _decoded_bytes(path)
    magic, ndim = (IMAGES_MAGIC, 3) if kind == "images" else (LABELS_MAGIC, 1)
    header = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and found != magic:
        raise DataError(
            f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {kind}"
            " (wrong kind of file?)"
        )
    if len(data) < header:
        raise DataError(f"{path}: too short for an IDX {kind} header ({len(data)} bytes)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes, expected {expected} for {dims[0]} {kind}"
            " (truncated or padded file)"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and array.size and array.max() > 9:
        raise DataError(f"{path}: label {int(array.max())} out of range 0..9")
    return IdxFile(array, hashlib.sha256(data).hexdigest(), path)


def _find_file(directory: Path, name: str) -> Path:
    # Plain before gzip; torchvision's download layout (FashionMNIST/raw) as a fallback.
    for base in (directory, directory / "FashionMNIST" / "raw"):
        for candidate in (base / name, base / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(f"{directory / name}[.gz]: file not found")


def resolve_source(source: str) -> Path:
    """The contract's order: a directory given, FASHION_MNIST_DIR, Debian's, else download."""
    if source not in ("auto", "download"):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise DataError(f"source {source}: no such directory")
        return path
    if source == "auto":
        for candidate in (os.environ.get("FASHION_MNIST_DIR"), config.DEBIAN_DATA_DIR):
            if candidate and Path(candidate).is_dir():
                return Path(candidate)
    return download(config.data_dir() / "download")


def download(root: Path) -> Path:
    """Fetch the official files with torchvision (needs the internet)."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # urllib errors vary by platform
        raise DataError(
            f"download of Fashion-MNIST failed ({type(exc).__name__}); without internet run"
            " `apt-get install dataset-fashion-mnist` or pass source=<directory>"
        ) from None
    return root / "FashionMNIST" / "raw"


@dataclass(frozen=True)
class RawData:
    files: dict[str, IdxFile]  # keys of config.OFFICIAL_FILES
    source: Path
    official: bool
    mismatches: tuple[str, ...]  # file names whose SHA-256 differs from the official one


def load_raw(directory: Path, allow_unofficial: bool = False) -> RawData:
    """Read the four files and check their decoded SHA-256 against the official values."""
    files: dict[str, IdxFile] = {}
    for key, (name, _, _) in config.OFFICIAL_FILES.items():
        files[key] = read_idx(_find_file(directory, name), key.split("_")[1])
    for part in ("train", "test"):
        n_images, n_labels = len(files[f"{part}_images"].array), len(files[f"{part}_labels"].array)
        if n_images != n_labels:
            raise DataError(
                f"{files[f'{part}_labels'].path}: {n_labels} labels for {n_images} images"
            )
    mismatches = tuple(
        files[key].path.name
        for key, (_, digest, _) in config.OFFICIAL_FILES.items()
        if files[key].sha256 != digest
    )
    if mismatches and not allow_unofficial:
        raise DataError(
            f"{directory}: {', '.join(mismatches)} differ from the official Fashion-MNIST"
            " (SHA-256 of the decoded content); pass allow_unofficial=true to use them anyway"
        )
    return RawData(files, directory, not mismatches, mismatches)


def dataset_digest(raw: RawData, val_fraction: float, seed: int) -> str:
    """`dataset.digest`: SHA-256 of the decoded files' digests plus the split settings."""
    payload = {
        "files": {key: f.sha256 for key, f in sorted(raw.files.items())},
        "val_fraction": round(float(val_fraction), 6),
        "seed": int(seed),
        "format": CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int):
    """Seeded, stratified train/val indices (sorted, disjoint, covering every index)."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        indices, test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_idx), np.sort(val_idx)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified sample of `size` (all indices when size >= len)."""
    if size <= 0 or size >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(
        np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed
    )
    return np.sort(chosen)


def cache_dir(digest: str) -> Path:
    return config.data_dir() / "prepared" / digest[:16]


def _images(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.reshape(-1, *config.IMAGE_SHAPE))


def write_cache(raw: RawData, val_fraction: float, seed: int) -> tuple[Path, dict, bool]:
    """Write (or reuse) the prepared cache; returns (directory, manifest, reused)."""
    digest = dataset_digest(raw, val_fraction, seed)
    target = cache_dir(digest)
    existing = read_manifest(target)
    if existing is not None and existing.get("digest") == digest:
        return target, existing, True
    train_x, train_y = raw.files["train_images"].array, raw.files["train_labels"].array
    train_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    manifest = {
        "format": CACHE_FORMAT,
        "digest": digest,
        "source": str(raw.source),
        "official": raw.official,
        "mismatches": list(raw.mismatches),
        "files": {key: {"name": f.path.name, "sha256": f.sha256} for key, f in raw.files.items()},
        "val_fraction": val_fraction,
        "seed": seed,
        "sizes": {
            "train": len(train_idx),
            "val": len(val_idx),
            "test": len(raw.files["test_labels"].array),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        np.savez(
            tmp / "split.npz",
            train_x=_images(train_x[train_idx]),
            train_y=train_y[train_idx].astype(np.int64),
            val_x=_images(train_x[val_idx]),
            val_y=train_y[val_idx].astype(np.int64),
            train_index=train_idx,
            val_index=val_idx,
        )
        np.savez(
            tmp / "test.npz",
            test_x=_images(raw.files["test_images"].array),
            test_y=raw.files["test_labels"].array.astype(np.int64),
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if target.exists() and read_manifest(target) is None:  # an unreadable leftover
            shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        finished = read_manifest(target)
        if finished is not None and finished.get("digest") == digest:
            return target, finished, True  # a parallel worker wrote the same cache first
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, manifest, False


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != CACHE_FORMAT:
        return None
    return manifest


def find_cache(digest: str = "", val_fraction: float = 0.1, seed: int = 42) -> Path | None:
    """A prepared cache by digest (prefix ok), else the newest official one with these split
    settings; None when there is none."""
    root = config.data_dir() / "prepared"
    if not root.is_dir():
        return None
    found = []
    for directory in root.iterdir():
        manifest = read_manifest(directory)
        if manifest is None or directory.name.startswith("."):
            continue
        if digest:
            if manifest["digest"].startswith(digest):
                return directory
        elif (
            manifest["official"]
            and manifest["seed"] == seed
            and abs(manifest["val_fraction"] - val_fraction) < 1e-9
        ):
            found.append((manifest["created"], directory))
    return max(found)[1] if found else None


def load_split(directory: Path, part: str) -> Split:
    """Load 'train' or 'val' from a prepared cache. The test split has its own loader."""
    if part not in ("train", "val"):
        raise ValueError(f"load_split takes train or val, not {part!r}; use load_test_split")
    arrays = _split_arrays(str(Path(directory).resolve()))
    return Split(arrays[f"{part}_x"], arrays[f"{part}_y"])


@functools.lru_cache(maxsize=2)
def _split_arrays(directory: str) -> dict[str, np.ndarray]:
    # A study trains dozens of times in one process: read the 42 MB split once. The arrays
    # are read-only so no caller can change what the next one gets.
    with np.load(Path(directory) / "split.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def load_test_split(directory: Path) -> Split:
    """The official test split: only the evaluate step calls this."""
    with np.load(Path(directory) / "test.npz") as arrays:
        return Split(arrays["test_x"], arrays["test_y"])
