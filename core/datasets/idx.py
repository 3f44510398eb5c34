"""MNIST and Fashion-MNIST from their IDX files (optionally gzipped) under the data directory.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data; only unsigned bytes
(type code 0x08) occur in these datasets.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from core.datasets.arrays import uint8_to_unit
from core.datasets.files import find_with_optional_gz, missing_files_error, require_data_dir
from core.datasets.types import Dataset, DatasetStatus, Split
from core.errors import DatasetUnavailable

_UBYTE = 0x08
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NEEDED = ", ".join(f"{f}[.gz]" for f in _FILES.values())


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset: its registry name, folder under the data directory and classes."""

    name: str
    folder: str
    description: str
    class_names: tuple[str, ...]


MNIST = IdxDataset(
    "mnist", "mnist", "MNIST, 60,000 / 10,000 28x28 digits (IDX files)",
    tuple(str(d) for d in range(10)),
)  # fmt: skip
FASHION_MNIST = IdxDataset(
    "fashion-mnist", "fashion-mnist", "Fashion-MNIST, 60,000 / 10,000 28x28 clothes (IDX files)",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)  # fmt: skip


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _read_header(stream: BinaryIO, path: Path) -> tuple[int, ...]:
    magic = stream.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] != _UBYTE or magic[3] == 0:
        raise DatasetUnavailable(f"{path} is not an unsigned-byte IDX file (magic {magic!r})")
    ndim = magic[3]
    raw = stream.read(4 * ndim)
    if len(raw) != 4 * ndim:
        raise DatasetUnavailable(f"{path} is truncated inside its IDX header")
    return struct.unpack(f">{ndim}I", raw)


def read_idx_shape(path: Path) -> tuple[int, ...]:
    """The array shape stored in an IDX file's header, without reading its data."""
    with _open(path) as stream:
        return _read_header(stream, path)


def read_idx(path: Path) -> np.ndarray:
    """The whole uint8 array stored in an IDX file."""
    try:
        with _open(path) as stream:
            shape = _read_header(stream, path)
            data = stream.read()
    except (OSError, EOFError) as exc:
        raise DatasetUnavailable(f"cannot read {path}: {exc}") from exc
    expected = int(np.prod(shape))
    if len(data) != expected:
        raise DatasetUnavailable(
            f"{path} holds {len(data)} data bytes, but its header {shape} needs {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _locate(spec: IdxDataset, data_dir: Path | None) -> dict[str, Path]:
    root = require_data_dir(data_dir, spec.name, f"{spec.folder}/ with {_NEEDED}")
    folder = root / spec.folder
    found = {key: find_with_optional_gz(folder, name) for key, name in _FILES.items()}
    missing = [_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise missing_files_error(spec.name, folder, missing, _NEEDED)
    return {key: path for key, path in found.items() if path is not None}


def _split(images_path: Path, labels_path: Path, num_classes: int) -> Split:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetUnavailable(
            f"{images_path} {images.shape} and {labels_path} {labels.shape} do not pair up "
            "as N×H×W images and N labels"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetUnavailable(f"{labels_path} has a label ≥ {num_classes}")
    x = uint8_to_unit(images)[:, None, :, :]
    return Split(x, labels.astype(np.int64))


def load(spec: IdxDataset, data_dir: Path | None) -> Dataset:
    """Load an IDX dataset; ``DatasetUnavailable`` says which files to put where."""
    paths = _locate(spec, data_dir)
    classes = len(spec.class_names)
    train = _split(paths["train_images"], paths["train_labels"], classes)
    test = _split(paths["test_images"], paths["test_labels"], classes)
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DatasetUnavailable(
            f"{spec.name}: train images {train.x.shape[1:]} and test images "
            f"{test.x.shape[1:]} differ in size"
        )
    return Dataset(spec.name, train, test, classes, train.x.shape[1:], list(spec.class_names))


def status(spec: IdxDataset, data_dir: Path | None) -> DatasetStatus:
    """Catalogue entry from the IDX headers alone."""
    paths = _locate(spec, data_dir)
    train_shape = read_idx_shape(paths["train_images"])
    test_shape = read_idx_shape(paths["test_images"])
    if len(train_shape) != 3:
        raise DatasetUnavailable(f"{paths['train_images']} does not hold N×H×W images")
    return DatasetStatus(
        name=spec.name,
        description=spec.description,
        available=True,
        input_shape=[1, train_shape[1], train_shape[2]],
        num_classes=len(spec.class_names),
        train_size=train_shape[0],
        test_size=test_shape[0],
    )
