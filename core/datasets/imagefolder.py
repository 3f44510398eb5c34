"""``imagefolder:<name>``: PNG/JPEG files in ``<data_dir>/<name>/{train,test}/<class>/``.

Class indices follow the sorted class folder names of ``train/``.  Images are not resized,
so all must share one size; they are read as greyscale when every image is single-channel,
else as RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.datasets.arrays import nhwc_to_nchw, uint8_to_unit
from core.datasets.files import require_data_dir, safe_component
from core.datasets.types import Dataset, DatasetStatus, Split
from core.errors import DatasetUnavailable

PREFIX = "imagefolder:"
_SUFFIXES = {".png", ".jpg", ".jpeg"}
_GREY_MODES = {"1", "L", "I", "I;16", "F"}
_LAYOUT = "train/<class>/*.png|jpg and test/<class>/*.png|jpg"


def _root(name: str, data_dir: Path | None) -> Path:
    dataset = PREFIX + name
    folder = safe_component(name, dataset)
    base = require_data_dir(data_dir, dataset, f"{folder}/{_LAYOUT}")
    root = base / folder
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetUnavailable(
            f"dataset {dataset!r} is not available: {root} needs {_LAYOUT}",
            details={"folder": str(root)},
        )
    return root


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DatasetUnavailable(f"{root / 'train'} has no class folders")
    unknown = sorted(
        p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes
    )
    if unknown:
        raise DatasetUnavailable(f"{root / 'test'} has classes missing from train: {unknown}")
    return classes


def _image_files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = [
        (path, label)
        for label, cls in enumerate(classes)
        if (split_dir / cls).is_dir()
        for path in sorted((split_dir / cls).iterdir())
        if path.suffix.lower() in _SUFFIXES and path.is_file()
    ]
    if not files:
        raise DatasetUnavailable(f"{split_dir} holds no .png/.jpg images")
    return files


def _probe(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and mode from the image header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetUnavailable(f"cannot read image {path}: {exc}") from exc


def _read_pixels(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _load_split(files: list[tuple[Path, int]], mode: str) -> Split:
    images = np.stack([_read_pixels(path, mode) for path, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    return Split(uint8_to_unit(nhwc_to_nchw(images)), labels)


def load(name: str, data_dir: Path | None) -> Dataset:
    """Load ``imagefolder:<name>``; all images must have one size."""
    root = _root(name, data_dir)
    classes = _class_names(root)
    train_files = _image_files(root / "train", classes)
    test_files = _image_files(root / "test", classes)
    probes = {path: _probe(path) for path, _ in train_files + test_files}
    sizes = {size for size, _ in probes.values()}
    if len(sizes) != 1:
        examples = {size: path for path, (size, _) in probes.items()}
        raise DatasetUnavailable(
            f"{root}: images differ in size (width×height {sorted(sizes)}; e.g. "
            f"{', '.join(str(p) for p in examples.values())}); resize them to one size first"
        )
    grey = all(mode in _GREY_MODES for _, mode in probes.values())
    mode = "L" if grey else "RGB"
    train = _load_split(train_files, mode)
    test = _load_split(test_files, mode)
    return Dataset(PREFIX + name, train, test, len(classes), train.x.shape[1:], classes)


def status(name: str, data_dir: Path | None) -> DatasetStatus:
    """Catalogue entry: counts files and probes one image (the shape assumes they agree)."""
    root = _root(name, data_dir)
    classes = _class_names(root)
    train_files = _image_files(root / "train", classes)
    test_files = _image_files(root / "test", classes)
    (width, height), mode = _probe(train_files[0][0])
    return DatasetStatus(
        name=PREFIX + name,
        description=f"image folders under {root}",
        available=True,
        input_shape=[1 if mode in _GREY_MODES else 3, height, width],
        num_classes=len(classes),
        train_size=len(train_files),
        test_size=len(test_files),
    )


def discover(data_dir: Path) -> list[str]:
    """Names of the folders in ``data_dir`` laid out as image folders."""
    return sorted(
        PREFIX + p.name
        for p in data_dir.iterdir()
        if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()
    )
