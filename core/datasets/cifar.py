"""CIFAR-10 and CIFAR-100 from the data directory, in either official distribution.

Binary version: each record is the label byte(s) then 3,072 pixel bytes (1,024 red, 1,024
green, 1,024 blue, row-major 32×32); CIFAR-100 records carry a coarse then a fine label and
we use the fine one.  Python version: pickled dicts with ``data`` (N×3072 uint8) and
``labels`` / ``fine_labels``, read with the restricted unpickler of ``safe_pickle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.datasets.arrays import uint8_to_unit
from core.datasets.files import require_data_dir
from core.datasets.safe_pickle import load_restricted_pickle
from core.datasets.types import Dataset, DatasetStatus, Split
from core.errors import DatasetUnavailable

_PIXELS = 3 * 32 * 32
_SHAPE = (3, 32, 32)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """One on-disk distribution of a CIFAR dataset, relative to the data directory."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    binary: bool

    def describe(self) -> str:
        files = ", ".join(self.train_files + self.test_files)
        return f"{self.folder}/ with {files}"


@dataclass(frozen=True)
class CifarDataset:
    """A CIFAR variant: its layouts (tried in order), label fields and classes."""

    name: str
    description: str
    layouts: tuple[Layout, ...]
    label_bytes: int  # binary records: 1 (CIFAR-10) or 2 (CIFAR-100, coarse then fine)
    pickle_label_key: str
    class_names: tuple[str, ...]


_CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

CIFAR10 = CifarDataset(
    name="cifar10",
    description="CIFAR-10, 50,000 / 10,000 32x32 colour images in 10 classes",
    layouts=(
        Layout("cifar-10-batches-bin", tuple(f"{b}.bin" for b in _CIFAR10_BATCHES),
               ("test_batch.bin",), binary=True),
        Layout("cifar-10-batches-py", _CIFAR10_BATCHES, ("test_batch",), binary=False),
    ),
    label_bytes=1,
    pickle_label_key="labels",
    class_names=CIFAR10_CLASSES,
)  # fmt: skip
CIFAR100 = CifarDataset(
    name="cifar100",
    description="CIFAR-100, 50,000 / 10,000 32x32 colour images in 100 fine classes",
    layouts=(
        Layout("cifar-100-binary", ("train.bin",), ("test.bin",), binary=True),
        Layout("cifar-100-python", ("train",), ("test",), binary=False),
    ),
    label_bytes=2,
    pickle_label_key="fine_labels",
    class_names=CIFAR100_CLASSES,
)


def _missing(layout: Layout, root: Path) -> list[str]:
    return [
        f
        for f in layout.train_files + layout.test_files
        if not (root / layout.folder / f).is_file()
    ]


def _choose_layout(spec: CifarDataset, data_dir: Path | None) -> tuple[Path, Layout]:
    wanted = " or ".join(layout.describe() for layout in spec.layouts)
    root = require_data_dir(data_dir, spec.name, wanted)
    for layout in spec.layouts:
        if not _missing(layout, root):
            return root / layout.folder, layout
    gaps = "; ".join(
        f"{root / layout.folder} lacks {', '.join(_missing(layout, root))}"
        for layout in spec.layouts
    )
    raise DatasetUnavailable(
        f"dataset {spec.name!r} is not available in {root}: {gaps}. Extract the official "
        f"archive there so that it holds {wanted}.",
        details={"data_dir": str(root)},
    )


def _binary_records(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + _PIXELS
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DatasetUnavailable(
            f"{path} is {raw.size} bytes, not a whole number of {record}-byte CIFAR records"
        )
    rows = raw.reshape(-1, record)
    # The last label byte is the class (CIFAR-100: the fine label after the coarse one).
    return rows[:, label_bytes:], rows[:, label_bytes - 1]


def _field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    for candidate in (key, key.encode()):
        if candidate in batch:
            return batch[candidate]
    raise DatasetUnavailable(f"{path} has no {key!r} entry")


def _pickled_records(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = load_restricted_pickle(path)
    if not isinstance(batch, dict):
        raise DatasetUnavailable(f"{path} does not hold a CIFAR batch dictionary")
    data = _field(batch, "data", path)
    labels = np.asarray(_field(batch, label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetUnavailable(f"{path}: 'data' must be an N×3072 uint8 array")
    if data.shape[1] != _PIXELS or labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DatasetUnavailable(
            f"{path}: expected N×{_PIXELS} pixels and N integer labels, "
            f"got {data.shape} and {labels.shape}"
        )
    return data, labels


def _read_split(folder: Path, files: Sequence[str], layout: Layout, spec: CifarDataset) -> Split:
    pixels, labels = [], []
    for name in files:
        path = folder / name
        if layout.binary:
            batch_pixels, batch_labels = _binary_records(path, spec.label_bytes)
        else:
            batch_pixels, batch_labels = _pickled_records(path, spec.pickle_label_key)
        pixels.append(batch_pixels)
        labels.append(batch_labels)
    y = np.concatenate(labels).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= len(spec.class_names)):
        raise DatasetUnavailable(
            f"{folder}: labels must lie in 0..{len(spec.class_names) - 1}, "
            f"found {y.min()}..{y.max()}"
        )
    x = uint8_to_unit(np.concatenate(pixels).reshape(-1, *_SHAPE))
    return Split(x, y)


def load(spec: CifarDataset, data_dir: Path | None) -> Dataset:
    """Load CIFAR-10/100 from the binary or python distribution, whichever is complete."""
    folder, layout = _choose_layout(spec, data_dir)
    train = _read_split(folder, layout.train_files, layout, spec)
    test = _read_split(folder, layout.test_files, layout, spec)
    classes = len(spec.class_names)
    return Dataset(spec.name, train, test, classes, _SHAPE, list(spec.class_names))


def _binary_count(folder: Path, files: Sequence[str], label_bytes: int) -> int:
    return sum((folder / f).stat().st_size // (label_bytes + _PIXELS) for f in files)


def status(spec: CifarDataset, data_dir: Path | None) -> DatasetStatus:
    """Catalogue entry; sizes come from file sizes (binary) and are omitted for pickles."""
    folder, layout = _choose_layout(spec, data_dir)
    sizes: dict[str, int | None] = {"train_size": None, "test_size": None}
    if layout.binary:
        sizes = {
            "train_size": _binary_count(folder, layout.train_files, spec.label_bytes),
            "test_size": _binary_count(folder, layout.test_files, spec.label_bytes),
        }
    return DatasetStatus(
        name=spec.name,
        description=spec.description,
        available=True,
        input_shape=list(_SHAPE),
        num_classes=len(spec.class_names),
        **sizes,
    )
