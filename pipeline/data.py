"""Fashion-MNIST on disk: IDX reading and validation, sources, the seeded split and its cache.

The prepared cache is what training reads (as in nanoGPT's prepare step): uint8 arrays in
`.npz` files plus a JSON manifest, one directory per (data digest, split settings), written
to a temporary directory and renamed into place so a reader never sees half a cache.
The test split lives in its own file that only evaluation opens.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.errors import UserError

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
# Bump when the cache layout or the digest changes, so old caches are never misread: format 3
# adds the SHA-256 of the split's index arrays to the manifest and to the digest, and each
# cache file's SHA-256 to the manifest (0.1 wrote format 1).
CACHE_FORMAT = 3


class DataError(UserError, ValueError):
    """A data file or source that cannot be used; the message names the file and the fix
    (a UserError: wherever it is raised, the command line prints it as one line)."""


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
    try:
        raw = path.read_bytes()
    except OSError as exc:  # not a storage failure of ours: say it is the input
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged deflate stream
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


def idx_sha256(array: np.ndarray) -> str:
    """SHA-256 of a uint8 array's IDX encoding: the digest config.OFFICIAL_FILES gives per
    file, so an array can be checked without its original file."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return hashlib.sha256(header + np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()


def is_official_test(split: Split) -> bool:
    """The split holds exactly the official test images and labels, in order."""
    return (idx_sha256(split.images[:, 0]), idx_sha256(split.labels.astype(np.uint8))) == (
        config.OFFICIAL_FILES["test_images"][1],
        config.OFFICIAL_FILES["test_labels"][1],
    )


def _find_file(directory: Path, name: str) -> Path:
    # Plain before gzip; torchvision's download layout (FashionMNIST/raw) as a fallback.
    for base in (directory, directory / "FashionMNIST" / "raw"):
        for candidate in (base / name, base / f"{name}.gz"):
            try:
                if candidate.is_file():
                    return candidate
            except PermissionError as exc:  # Python 3.11's is_file raises it: name the folder
                raise DataError(f"{base}: cannot read it ({exc.strerror})") from None
    raise DataError(f"{directory / name}[.gz]: file not found")


def resolve_source(source: str) -> Path:
    """The contract's order: a directory given, FASHION_MNIST_DIR, Debian's, else download."""
    path = source_path(source)
    return download(path) if path == download_root() else path


def download_root() -> Path:
    return config.data_dir() / "download"


def source_path(source: str) -> Path:
    """The folder `source` reads from (resolve_source's), without downloading anything: the
    download folder when nothing else is there. A folder that was asked for and is not
    there is an error, never a fall-through to other data."""
    if source not in ("auto", "download"):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise DataError(f"source {source}: no such directory")
        return path
    if source == "auto":
        chosen = os.environ.get("FASHION_MNIST_DIR")
        if chosen:  # set on purpose: a typo must not fall through to other data
            if not Path(chosen).expanduser().is_dir():
                raise DataError(f"FASHION_MNIST_DIR={chosen}: no such directory")
            return Path(chosen).expanduser()
        if Path(config.DEBIAN_DATA_DIR).is_dir():
            return Path(config.DEBIAN_DATA_DIR)
    return download_root()


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
            " (SHA-256 of the decoded content); to use them anyway, prepare them with"
            " allow_unofficial=true and train with dataset=<the digest prepare prints>"
        )
    return RawData(files, directory, not mismatches, mismatches)


def split_sha256(train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    """SHA-256 of the split itself (both index arrays, int64 little-endian): another
    scikit-learn release could draw another split from the same seed."""
    digest = hashlib.sha256(np.ascontiguousarray(train_idx, "<i8").tobytes())
    digest.update(b"|" + np.ascontiguousarray(val_idx, "<i8").tobytes())
    return digest.hexdigest()


def dataset_digest(raw: RawData, split_hash: str, val_fraction: float, seed: int) -> str:
    """`dataset.digest`: SHA-256 of the decoded files' digests, the split's indices and the
    split settings."""
    payload = {
        "files": {key: f.sha256 for key, f in sorted(raw.files.items())},
        "split_sha256": split_hash,
        "val_fraction": round(float(val_fraction), 6),
        "seed": int(seed),
        "format": CACHE_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _sklearn_splitter(purpose: str, otherwise: str):
    """scikit-learn's train_test_split, which draws every split and subset (so one seed
    gives the same images everywhere). A PyTorch-only machine (the benchmarks' GPU image)
    can still train from a cache prepared elsewhere, if not draw a new split there."""
    try:
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError(
            f"{purpose} needs scikit-learn, which is not installed here: install it, or {otherwise}"
        ) from None
    return train_test_split


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int):
    """Seeded, stratified train/val indices (sorted, disjoint, covering every index)."""
    train_test_split = _sklearn_splitter(
        "drawing the validation split",
        "prepare the data where it is and point FMB_DATA_DIR at that folder",
    )
    # scikit-learn's sizes (validation rounded up); stratifying needs one image per class
    # in each part, which its own error says in scikit-learn's terms, after a traceback
    n_val = math.ceil(val_fraction * len(labels))
    n_classes = len(np.unique(labels))
    if min(n_val, len(labels) - n_val) < n_classes:
        raise DataError(
            f"val_fraction {val_fraction:g} splits the {len(labels):,} training images into"
            f" {len(labels) - n_val:,} train / {n_val:,} validation; each part needs at least"
            f" {n_classes} (one per class)"
        )
    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        indices, test_size=val_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train_idx), np.sort(val_idx)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified sample of `size` (all indices when size >= len)."""
    if size <= 0 or size >= len(labels):
        return np.arange(len(labels))
    train_test_split = _sklearn_splitter(
        "drawing a training subset", "train on the whole split (subset 0)"
    )
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
    train_x, train_y = raw.files["train_images"].array, raw.files["train_labels"].array
    train_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    split_hash = split_sha256(train_idx, val_idx)
    digest = dataset_digest(raw, split_hash, val_fraction, seed)
    target = cache_dir(digest)
    existing = _whole(target, digest)
    if existing is not None:
        return target, {**existing, "source": str(raw.source)}, True  # the folder read now
    manifest = {
        "format": CACHE_FORMAT,
        "digest": digest,
        "split_sha256": split_hash,
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
    arrays = {
        "split.npz": {
            "train_x": _images(train_x[train_idx]),
            "train_y": train_y[train_idx].astype(np.int64),
            "val_x": _images(train_x[val_idx]),
            "val_y": train_y[val_idx].astype(np.int64),
            "train_index": train_idx,
            "val_index": val_idx,
        },
        "test.npz": {
            "test_x": _images(raw.files["test_images"].array),
            "test_y": raw.files["test_labels"].array.astype(np.int64),
        },
    }
    return _write_new(target, manifest, arrays)


def _write_new(target: Path, manifest: dict, arrays: dict) -> tuple[Path, dict, bool]:
    """write_cache's writing: a temp folder beside `target`, renamed into place."""
    digest, source = manifest["digest"], manifest["source"]
    tmp = _temp_dir_beside(target)
    try:
        manifest["cache_files"] = {name: _save(tmp / name, a) for name, a in arrays.items()}
        _write_synced(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
        finished = _whole(target, digest)  # a parallel prepare wrote the same cache meanwhile
        if finished is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return target, {**finished, "source": source}, True
        if target.exists():  # unreadable, corrupt, or of an older format: replaced whole,
            old = target.with_name(f".{target.name}.old.{os.getpid()}")  # moved aside first:
            os.rename(target, old)  # no reader ever sees it half deleted
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        finished = _whole(target, digest)
        if finished is not None:
            return target, {**finished, "source": source}, True
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, manifest, False


def _whole(target: Path, digest: str) -> dict | None:
    """The manifest of the cache of `digest` when it is in place and whole (this prepare's
    earlier one, or another process's); None otherwise."""
    manifest = read_manifest(target)
    whole = manifest is not None and manifest.get("digest") == digest and intact(target, manifest)
    return manifest if whole else None


ORPHAN_AGE_S = 3600  # a temp folder untouched this long lost its writer (a prepare takes ~10 s)


def _temp_dir_beside(target: Path) -> Path:
    """A temporary folder to be renamed to `target`, with the mode of the folder it sits in:
    mkdtemp's private 0700 would outlive the rename, and a shared FMB_DATA_DIR must stay
    readable by the users it is shared with. The folders of writers killed mid-write
    (SIGKILL: no cleanup runs; ~55 MB each) are removed here once they are an hour old."""
    for orphan in target.parent.glob(".*.*"):
        with contextlib.suppress(OSError):  # another process may remove it first
            if orphan.is_dir() and time.time() - orphan.stat().st_mtime > ORPHAN_AGE_S:
                shutil.rmtree(orphan, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, target.parent.stat().st_mode & 0o777)
    return tmp


def _write_synced(path: Path, payload: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the folder is renamed into place
    except OSError as exc:  # a full disk: say which file could not be written
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _save(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write an .npz; returns its SHA-256 (the manifest records it)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    _write_synced(path, payload)
    return hashlib.sha256(payload).hexdigest()


def _checked_bytes(path: Path, manifest: dict) -> bytes:
    """A cache file's bytes, refused unless their SHA-256 is the manifest's."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); run prepare again") from None
    expected = manifest.get("cache_files", {}).get(path.name)
    if hashlib.sha256(payload).hexdigest() != expected:
        raise DataError(
            f"{path}: its SHA-256 differs from the manifest's (a corrupt or changed cache);"
            " run prepare again to rewrite it"
        )
    return payload


def intact(directory: Path, manifest: dict) -> bool:
    """Every cache file has the SHA-256 its manifest recorded."""
    try:
        for name in ("split.npz", "test.npz"):
            _checked_bytes(Path(directory) / name, manifest)
    except DataError:
        return False
    return True


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(path.parent)
    if manifest is None:
        raise DataError(
            f"{path.parent / 'manifest.json'}: missing or unreadable; run prepare again"
        )
    with np.load(io.BytesIO(_checked_bytes(path, manifest))) as npz:
        arrays = {key: npz[key] for key in npz.files}
    labels = [a for key, a in arrays.items() if key.endswith("_y")]
    if any(a.size and (a.min() < 0 or a.max() > 9) for a in labels):
        raise DataError(f"{path}: a label outside 0..9; run prepare again")
    return arrays


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
    found, matches = [], []
    for directory in root.iterdir():
        if directory.name.startswith("."):
            continue
        manifest = read_manifest(directory)
        if manifest is None:
            continue
        if digest:
            if manifest["digest"].startswith(digest):
                matches.append(directory)
        elif (
            manifest["official"]
            and manifest["seed"] == seed
            and abs(manifest["val_fraction"] - val_fraction) < 1e-9
        ):
            found.append((manifest["created"], directory))
    if len(matches) > 1:
        names = ", ".join(sorted(m.name for m in matches))
        raise DataError(
            f"dataset {digest} matches {len(matches)} prepared caches ({names}); give more digits"
        )
    if digest:
        return matches[0] if matches else None
    return max(found)[1] if found else None


def dataset_cache(dataset: str, val_fraction: float = 0.1, split_seed: int = 42) -> Path:
    """The cache a run trains on: the one whose digest starts with `dataset`, or for "auto"
    the official data with these split settings (prepared now when missing)."""
    if dataset == "auto":
        return ensure_prepared(val_fraction, split_seed)
    found = find_cache(dataset)
    if found is None:
        # a cache folder of that digest whose manifest does not read (folders: digest[:16])
        damaged = sorted(cache_dir(dataset).parent.glob(f"{dataset[:16]}*"))
        if damaged:
            raise DataError(
                f"{damaged[0] / 'manifest.json'}: missing, damaged or of an older format; run"
                " prepare on the same files again"
            )
        raise DataError(
            f"no prepared data with dataset.digest {dataset} in {config.data_dir()}; run prepare"
            " on the same files first"
        )
    manifest = read_manifest(found)
    if manifest["seed"] != split_seed or abs(manifest["val_fraction"] - val_fraction) > 1e-9:
        # the run logs val_fraction and split_seed: they must be the data's, not defaults
        raise DataError(
            f"dataset {dataset} was split with val_fraction={manifest['val_fraction']} and"
            f" split_seed={manifest['seed']}, not {val_fraction} and {split_seed}; pass its"
            " values with it"
        )
    return found


def ensure_prepared(
    val_fraction: float = 0.1, split_seed: int = 42, source: str = "auto", allow_unofficial=False
) -> Path:
    """The prepared cache of the official data with these split settings, prepared from
    `source` (see resolve_source) when missing. An existing cache is used as it is, so a
    good cache keeps working when the original files are damaged later. `allow_unofficial`
    (benchmark smoke tests on synthetic files) prepares whatever IDX files `source` holds."""
    found = None if allow_unofficial else find_cache("", val_fraction, split_seed)
    if found is not None:
        return found
    raw = load_raw(resolve_source(source), allow_unofficial=allow_unofficial)
    directory, _, _ = write_cache(raw, val_fraction, split_seed)
    return directory


def load_split(directory: Path, part: str) -> Split:
    """Load 'train' or 'val' from a prepared cache. The test split has its own loader."""
    if part not in ("train", "val"):
        raise ValueError(f"load_split takes train or val, not {part!r}; use load_test_split")
    arrays = _split_arrays(str(Path(directory).resolve()))
    return Split(arrays[f"{part}_x"], arrays[f"{part}_y"])


@functools.lru_cache(maxsize=2)
def _split_arrays(directory: str) -> dict[str, np.ndarray]:
    # A study trains dozens of times in one process: read (and verify) the 42 MB split once.
    # The arrays are read-only so no caller can change what the next one gets.
    arrays = _load_npz(Path(directory) / "split.npz")
    for array in arrays.values():
        array.flags.writeable = False
    return arrays


def train_and_val(
    directory: Path, subset: int = 0, seed: int = 0, *, strict: bool = False
) -> tuple[Split, Split]:
    """(train, val) of a prepared cache; train reduced to a stratified `subset` (drawn with
    `seed`) when 0 < subset < its size. At or above its size the whole split is used, unless
    `strict` (a subset the user asked for): then it is an error, because the run would be
    labelled a subset while it trains on all of it."""
    train, val = load_split(directory, "train"), load_split(directory, "val")
    if strict and subset >= len(train.labels):
        raise DataError(
            f"subset {subset:,} is not below the training split's {len(train.labels):,}"
            " images; use subset=0 for all of them"
        )
    if 0 < subset < len(train.labels):
        keep = stratified_subset(train.labels, subset, seed)
        train = Split(train.images[keep], train.labels[keep])
    return train, val


def load_test_split(directory: Path) -> Split:
    """The test split: only evaluation (and prepare, which verifies it) calls this."""
    arrays = _load_npz(Path(directory) / "test.npz")
    return Split(arrays["test_x"], arrays["test_y"])
