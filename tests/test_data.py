"""IDX reading and validation, the split, the cache, and the prepare step."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time

import numpy as np
import pytest
from conftest import NAMES, idx_bytes, mlflow_run, run_step, write_dataset

from pipeline import data


def test_reads_gzip_and_plain_identically(tmp_path):
    gz_dir = write_dataset(tmp_path / "gz", gz=True)
    plain_dir = write_dataset(tmp_path / "plain", gz=False)
    a, b = (
        data.load_raw(gz_dir, allow_unofficial=True),
        data.load_raw(plain_dir, allow_unofficial=True),
    )
    for key in NAMES:
        assert np.array_equal(a.files[key].array, b.files[key].array)
        assert a.files[key].sha256 == b.files[key].sha256
    assert a.files["train_images"].array.shape == (600, 28, 28)
    assert not a.official and len(a.mismatches) == 4


def corrupt(directory, key, payload: bytes, gz=True):
    path = directory / (NAMES[key] + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


GOOD_IMAGES = idx_bytes(np.zeros((3, 28, 28), np.uint8))
BAD_CASES = {
    "truncated": (GOOD_IMAGES[:-5], "truncated or padded"),
    "padded": (GOOD_IMAGES + b"\0", "truncated or padded"),
    "wrong kind": (idx_bytes(np.zeros(3, np.uint8)), "magic number"),
    "wrong size": (idx_bytes(np.zeros((3, 32, 32), np.uint8)), "expected 28x28"),
    "header only": (GOOD_IMAGES[:6], "too short"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_image_files_are_rejected_with_the_file_named(tmp_path, case):
    payload, message = BAD_CASES[case]
    path = corrupt(write_dataset(tmp_path), "train_images", payload)
    with pytest.raises(data.DataError, match=message) as info:
        data.load_raw(tmp_path, allow_unofficial=True)
    assert str(path) in str(info.value)


def test_labels_out_of_range_and_count_mismatch(tmp_path):
    write_dataset(tmp_path)
    corrupt(tmp_path, "test_labels", idx_bytes(np.full(200, 10, np.uint8)))
    with pytest.raises(data.DataError, match="out of range"):
        data.load_raw(tmp_path, allow_unofficial=True)
    corrupt(tmp_path, "test_labels", idx_bytes(np.zeros(199, np.uint8)))
    with pytest.raises(data.DataError, match="199 labels for 200 images"):
        data.load_raw(tmp_path, allow_unofficial=True)


def test_corrupt_gzip_and_missing_file(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / (NAMES["train_labels"] + ".gz")).write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DataError, match="corrupt gzip"):
        data.load_raw(tmp_path, allow_unofficial=True)
    labels = tmp_path / (NAMES["train_labels"] + ".gz")
    good = gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8) % 10))
    # a valid header, then a damaged deflate stream: zlib.error, not OSError
    labels.write_bytes(good[:12] + bytes(b ^ 0xFF for b in good[12:40]) + good[40:])
    with pytest.raises(data.DataError, match="corrupt gzip"):
        data.load_raw(tmp_path, allow_unofficial=True)
    labels.unlink()
    with pytest.raises(data.DataError, match="file not found"):
        data.load_raw(tmp_path, allow_unofficial=True)
    labels.mkdir()  # there, but not readable as a file: an input error, not a storage one
    with pytest.raises(data.DataError, match="cannot read it"):
        data._decoded_bytes(labels)


def test_unofficial_data_needs_permission(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(data.DataError, match="allow_unofficial=true"):
        data.load_raw(tmp_path)


def test_split_is_stratified_seeded_disjoint():
    labels = np.repeat(np.arange(10), 100)
    train, val = data.stratified_split(labels, 0.2, seed=3)
    assert len(train) == 800 and len(val) == 200
    assert not set(train) & set(val) and len(set(train) | set(val)) == 1000
    assert np.array_equal(np.bincount(labels[val]), np.full(10, 20))
    again, _ = data.stratified_split(labels, 0.2, seed=3)
    other, _ = data.stratified_split(labels, 0.2, seed=4)
    assert np.array_equal(train, again) and not np.array_equal(train, other)


@pytest.mark.parametrize("fraction", [0.005, 0.995])
def test_a_split_too_small_to_stratify_is_one_clear_error(fraction):
    labels = np.repeat(np.arange(10), 100)  # 5 images in one part: fewer than the classes
    with pytest.raises(data.DataError, match=f"val_fraction {fraction:g} splits the 1,000"):
        data.stratified_split(labels, fraction, seed=0)
    assert len(data.stratified_split(labels, 0.01, seed=0)[1]) == 10  # one per class is enough


def test_a_subset_asked_for_must_be_below_the_training_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    directory = data.write_cache(raw, 0.1, 42)[0]  # 540 training images
    assert len(data.train_and_val(directory, 100, seed=1, strict=True)[0].labels) == 100
    for subset in (540, 10_000):
        with pytest.raises(data.DataError, match=f"subset {subset:,} is not below the training"):
            data.train_and_val(directory, subset, seed=1, strict=True)
    # a model's own default subset (svc's 10,000) on a smaller split: all of it
    assert len(data.train_and_val(directory, 10_000, seed=1)[0].labels) == 540


def test_a_fashion_mnist_dir_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "typo"))
    with pytest.raises(data.DataError, match="FASHION_MNIST_DIR=.*typo: no such directory"):
        data.resolve_source("auto")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert data.resolve_source("auto") == tmp_path


def test_a_cache_folder_takes_its_parents_permissions(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared").chmod(0o755)
    directory = data.write_cache(raw, 0.1, 42)[0]
    assert directory.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700


def test_cache_entries_are_keyed_by_split_settings_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    prepared = tmp_path / "data" / "prepared"
    orphan, fresh = prepared / ".0123456789abcdef.a1b2c3", prepared / ".fedcba9876543210.d4e5f6"
    for folder in (orphan, fresh):  # a writer killed mid-write left them
        (folder / "part").mkdir(parents=True)
    os.utime(orphan, (time.time() - 2 * data.ORPHAN_AGE_S,) * 2)
    first, manifest, reused = data.write_cache(raw, 0.1, 42)
    assert not orphan.exists() and fresh.exists()  # a young one may still be being written
    shutil.rmtree(fresh)
    assert not reused and manifest["sizes"] == {"train": 540, "val": 60, "test": 200}
    assert data.write_cache(raw, 0.1, 42)[2] is True
    for other in [(0.2, 42), (0.1, 7)]:
        directory, m, _ = data.write_cache(raw, *other)
        assert directory != first and m["digest"] != manifest["digest"]
    train, val = data.load_split(first, "train"), data.load_split(first, "val")
    assert train.images.shape == (540, 1, 28, 28) and train.images.dtype == np.uint8
    assert np.array_equal(np.bincount(val.labels), np.full(10, 6))
    assert not list((tmp_path / "data" / "prepared").glob(".*")), "temp dirs left behind"
    with pytest.raises(ValueError, match="load_test_split"):
        data.load_split(first, "test")
    # a run names its data by digest and logs the split settings: they must be the data's
    other = data.write_cache(raw, 0.2, 7)[1]["digest"][:16]
    assert data.dataset_cache(other, 0.2, 7).name == other
    with pytest.raises(data.DataError, match="val_fraction=0.2 and split_seed=7, not 0.1 and 42"):
        data.dataset_cache(other)


def test_a_failed_prepare_keeps_the_previous_cache(tmp_path, stores):
    src = write_dataset(tmp_path / "idx")
    ok = run_step(["prepare", "--source", str(src), "--allow_unofficial", "true"], stores)
    assert ok.returncode == 0, ok.stderr
    before = sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir())
    corrupt(src, "train_images", GOOD_IMAGES[:-1])
    bad = run_step(["prepare", "--source", str(src), "--allow_unofficial", "true"], stores)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error: ")
    assert "train-images-idx3-ubyte.gz" in bad.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "prepared").iterdir()) == before
    manifest = json.loads(
        (tmp_path / "data" / "prepared" / before[0] / "manifest.json").read_text()
    )
    assert (
        data.load_split(tmp_path / "data" / "prepared" / before[0], "train").labels.size
        == manifest["sizes"]["train"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val_fraction", "0"], "val_fraction"),
        (["--val_fraction", "1.5"], "val_fraction"),
        (["--split_seed", "abc"], "split_seed"),
        (["--source", "/nonexistent/dir"], "not a directory"),
        (["--allow_unofficial", "maybe"], "true or false"),
    ],
)
def test_bad_prepare_parameters_give_one_error_line(args, message, stores):
    result = run_step(["prepare", *args], stores, timeout=60)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.realdata
@pytest.mark.slow
def test_prepare_real_data_through_mlflow_run(real_data, tmp_path, stores):
    import mlflow

    first = mlflow_run("prepare", {"source": str(real_data)}, stores, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = mlflow_run(
        "prepare", {}, {**stores, "FASHION_MNIST_DIR": str(real_data)}, cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr[-3000:]
    mlflow.set_tracking_uri(stores["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=["fashion-mnist"],
        output_format="list",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for run, cache in zip(runs, ["written", "reused"], strict=True):
        assert run.data.tags["pipeline.step"] == "prepare"
        assert run.data.tags["dataset.official"] == "true"
        assert run.data.tags["dataset.cache"] == cache
        assert run.data.metrics["n_train"] == 54000 and run.data.metrics["n_test"] == 10000
        contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
        assert contexts == {"training", "validation", "test"}
        digests = {i.dataset.digest for i in run.inputs.dataset_inputs}
        assert digests == {run.data.tags["dataset.digest"][:16]}
    assert runs[0].data.tags["dataset.digest"] == runs[1].data.tags["dataset.digest"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id)}
    assert {
        "config.json",
        "manifest.json",
        "class_balance.png",
        "samples_per_class.png",
    } <= artifacts
    caches = list((tmp_path / "data" / "prepared").iterdir())
    assert len(caches) == 1 and (caches[0] / "split.npz").is_file()
    shutil.rmtree(tmp_path / "data")


def test_the_digest_covers_the_split_itself(tmp_path, monkeypatch):
    """Another scikit-learn release could draw another split from the same seed: the digest
    hashes the split's indices, so that split gets another digest and another cache."""
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    first, manifest, _ = data.write_cache(raw, 0.1, 42)
    train, val = data.stratified_split(raw.files["train_labels"].array, 0.1, 42)
    assert manifest["split_sha256"] == data.split_sha256(train, val)
    original = data.stratified_split

    def other_release(labels, val_fraction, seed):  # same settings, another draw
        return original(labels, val_fraction, seed + 1)

    monkeypatch.setattr(data, "stratified_split", other_release)
    second, other, reused = data.write_cache(raw, 0.1, 42)
    assert not reused and second != first and other["digest"] != manifest["digest"]


def test_a_cache_of_the_old_format_is_prepared_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    directory, manifest, _ = data.write_cache(raw, 0.1, 42)
    old = {**manifest, "format": 1}  # written by 0.1, whose digest did not cover the split
    (directory / "manifest.json").write_text(json.dumps(old))
    assert data.read_manifest(directory) is None and data.find_cache(manifest["digest"]) is None
    again, fresh, reused = data.write_cache(raw, 0.1, 42)
    assert not reused and again == directory and fresh["format"] == data.CACHE_FORMAT


def test_an_unreadable_source_folder_is_named_not_called_unwritable(tmp_path, monkeypatch):
    """Python 3.11's Path.is_file raises PermissionError in a folder it cannot search: it
    reached the step as a write failure ("cannot write ...; free space")."""
    from pathlib import Path

    src, real_is_file = write_dataset(tmp_path / "idx"), Path.is_file

    def denied(path: Path) -> bool:
        if path.parent == src:
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", denied)
    with pytest.raises(data.DataError, match="idx: cannot read it \\(Permission denied\\)"):
        data.load_raw(src, allow_unofficial=True)


def test_a_reused_cache_names_the_folder_read_now(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    first = write_dataset(tmp_path / "first")
    second = shutil.copytree(first, tmp_path / "second")  # the same files elsewhere
    data.write_cache(data.load_raw(first, allow_unofficial=True), 0.1, 42)
    _, manifest, reused = data.write_cache(data.load_raw(second, allow_unofficial=True), 0.1, 42)
    assert reused and manifest["source"] == str(second)


def test_a_cache_another_prepare_finished_meanwhile_is_kept(tmp_path, monkeypatch):
    """Two prepares at once: the second found no cache, wrote its own, and then deleted the
    first one's finished cache to put its copy in (a reader of it failed meanwhile)."""
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    directory, manifest, _ = data.write_cache(raw, 0.1, 42)
    inode, real_read = directory.stat().st_ino, data.read_manifest
    calls = []

    def not_yet_there(path):  # the second prepare looked before the first one's rename
        calls.append(path)
        return None if len(calls) == 1 else real_read(path)

    monkeypatch.setattr(data, "read_manifest", not_yet_there)
    again, reread, reused = data.write_cache(raw, 0.1, 42)
    assert reused and again == directory and directory.stat().st_ino == inode  # not replaced
    assert reread["digest"] == manifest["digest"]
    assert not list(directory.parent.glob(".*")), "its temp folder was left behind"


def test_a_digest_prefix_of_two_caches_or_of_a_damaged_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FMB_DATA_DIR", str(tmp_path / "data"))
    raw = data.load_raw(write_dataset(tmp_path / "idx"), allow_unofficial=True)
    directory, manifest, _ = data.write_cache(raw, 0.1, 42)
    digest = manifest["digest"]
    twin_digest = digest[:8] + "0" * 56 if digest[8] != "0" else digest[:8] + "1" * 56
    twin = shutil.copytree(directory, directory.parent / twin_digest[:16])
    (twin / "manifest.json").write_text(json.dumps({**manifest, "digest": twin_digest}))
    with pytest.raises(data.DataError, match=f"dataset {digest[:8]} matches 2 prepared caches"):
        data.find_cache(digest[:8])
    assert data.find_cache(digest[:16]) == directory  # more digits: one
    (directory / "manifest.json").write_text("{broken")
    with pytest.raises(data.DataError, match=f"{digest[:16]}/manifest.json: missing, damaged"):
        data.dataset_cache(digest[:16])
    assert data.find_cache(digest) is None  # main's reuse check: prepare again, no error
