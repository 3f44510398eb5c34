"""``npz:<name>``: arrays ``x_train, y_train, x_test, y_test`` in ``<data_dir>/<name>.npz``.

Images may be N×C×H×W or N×H×W×C (read as channel-last when the last axis has at most 4
entries and the second more than 4), or N×H×W for greyscale; uint8 (0..255) or floating
point already in [0, 1].  An optional ``class_names`` string array names the classes.
Loaded with ``allow_pickle=False``: object arrays are refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from core.datasets.arrays import nhwc_to_nchw, uint8_to_unit
from core.datasets.files import require_data_dir, safe_component
from core.datasets.types import Dataset, DatasetStatus, Split
from core.errors import DatasetUnavailable

PREFIX = "npz:"
_KEYS = ("x_train", "y_train", "x_test", "y_test")
_MAX_CHANNELS = 4


def _path(name: str, data_dir: Path | None) -> Path:
    dataset = PREFIX + name
    stem = safe_component(name, dataset)
    needs = f"{stem}.npz with arrays {', '.join(_KEYS)}"
    path = require_data_dir(data_dir, dataset, needs) / f"{stem}.npz"
    if not path.is_file():
        raise DatasetUnavailable(
            f"dataset {dataset!r} is not available: {path} does not exist; put {needs} there",
            details={"path": str(path)},
        )
    return path


def _to_nchw(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DatasetUnavailable(f"{path}: {key} has shape {x.shape}; expected N×C×H×W or N×H×W×C")
    channel_last = x.shape[3] <= _MAX_CHANNELS < x.shape[1]
    return nhwc_to_nchw(x) if channel_last else x


def _to_unit(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return uint8_to_unit(x)
    if x.dtype.kind != "f":
        raise DatasetUnavailable(f"{path}: {key} is {x.dtype}; use uint8 0..255 or float in [0, 1]")
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise DatasetUnavailable(f"{path}: floating-point {key} must lie in [0, 1]")
    return x.astype(np.float32)


def _labels(y: np.ndarray, count: int, path: Path, key: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (count,):
        raise DatasetUnavailable(
            f"{path}: {key} must be {count} integer labels, got {y.dtype} {y.shape}"
        )
    if y.size and y.min() < 0:
        raise DatasetUnavailable(f"{path}: {key} has negative labels")
    return y.astype(np.int64)


def _split(arrays: dict[str, np.ndarray], part: str, path: Path) -> Split:
    x_key, y_key = f"x_{part}", f"y_{part}"
    x = _to_unit(_to_nchw(arrays[x_key], path, x_key), path, x_key)
    return Split(np.ascontiguousarray(x), _labels(arrays[y_key], len(x), path, y_key))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _KEYS if k not in archive.files]
            if missing:
                raise DatasetUnavailable(f"{path} lacks arrays {missing}; it needs {list(_KEYS)}")
            wanted = [*_KEYS, "class_names"] if "class_names" in archive.files else list(_KEYS)
            return {key: archive[key] for key in wanted}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetUnavailable(f"cannot read {path} as a plain .npz archive: {exc}") from exc


def load(name: str, data_dir: Path | None) -> Dataset:
    """Load ``npz:<name>``; refuses pickled (object) arrays."""
    path = _path(name, data_dir)
    arrays = _read_arrays(path)
    train = _split(arrays, "train", path)
    test = _split(arrays, "test", path)
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DatasetUnavailable(
            f"{path}: train samples {train.x.shape[1:]} and test samples {test.x.shape[1:]} differ"
        )
    num_classes = int(max(train.y.max(initial=-1), test.y.max(initial=-1))) + 1
    class_names = [str(c) for c in arrays.get("class_names", np.arange(num_classes))]
    if len(class_names) < num_classes:
        raise DatasetUnavailable(
            f"{path}: class_names has {len(class_names)} entries but labels reach {num_classes - 1}"
        )
    num_classes = len(class_names)
    return Dataset(PREFIX + name, train, test, num_classes, train.x.shape[1:], class_names)


def _member_shape(archive: zipfile.ZipFile, key: str) -> tuple[int, ...]:
    """An array's shape from its .npy header inside the archive, without reading its data."""
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read_header(member)
    return tuple(shape)


def status(name: str, data_dir: Path | None) -> DatasetStatus:
    """Catalogue entry from the .npy headers and the (small) label arrays."""
    path = _path(name, data_dir)
    try:
        with zipfile.ZipFile(path) as archive:
            x_shape = _member_shape(archive, "x_train")
            test_shape = _member_shape(archive, "x_test")
        with np.load(path, allow_pickle=False) as archive:
            labels = [archive["y_train"], archive["y_test"]]
            named = len(archive["class_names"]) if "class_names" in archive.files else 0
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetUnavailable(
            f"cannot read {path} as a plain .npz with {list(_KEYS)}: {exc}"
        ) from exc
    sample = _to_nchw(np.empty((1, *x_shape[1:]), dtype=np.uint8), path, "x_train").shape[1:]
    if any(y.dtype.kind not in "iu" for y in labels):
        raise DatasetUnavailable(f"{path}: y_train and y_test must hold integer labels")
    top = max((int(y.max()) for y in labels if y.size), default=-1)
    return DatasetStatus(
        name=PREFIX + name,
        description=f"arrays from {path}",
        available=True,
        input_shape=list(sample),
        num_classes=max(top + 1, named),
        train_size=x_shape[0],
        test_size=test_shape[0],
    )


def discover(data_dir: Path) -> list[str]:
    """Names of the .npz files in ``data_dir``."""
    return sorted(PREFIX + p.stem for p in data_dir.glob("*.npz") if p.is_file())
