"""Dataset names → loaders, and the catalogue of what is available under a data directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.datasets import bundled, cifar, idx, imagefolder, npz
from core.datasets.types import Dataset, DatasetStatus
from core.errors import DatasetUnavailable

_Loader = Callable[[Path | None], Dataset]
_StatusProbe = Callable[[Path | None], DatasetStatus]

# name → (description, loader, catalogue probe)
_FIXED: dict[str, tuple[str, _Loader, _StatusProbe]] = {
    "digits": (
        bundled.DIGITS_DESCRIPTION,
        lambda _: bundled.load_digits(),
        lambda _: bundled.digits_status(),
    ),
    "mnist-5k": (
        bundled.MNIST_5K_DESCRIPTION,
        lambda _: bundled.load_mnist_5k(),
        lambda _: bundled.mnist_5k_status(),
    ),
    **{
        spec.name: (
            spec.description,
            lambda d, spec=spec: idx.load(spec, d),
            lambda d, spec=spec: idx.status(spec, d),
        )
        for spec in (idx.MNIST, idx.FASHION_MNIST)
    },
    **{
        spec.name: (
            spec.description,
            lambda d, spec=spec: cifar.load(spec, d),
            lambda d, spec=spec: cifar.status(spec, d),
        )
        for spec in (cifar.CIFAR10, cifar.CIFAR100)
    },
}

# Patterned names: prefix → (loader, catalogue probe), each taking (name, data_dir).
_PATTERNS = {
    imagefolder.PREFIX: (imagefolder.load, imagefolder.status),
    npz.PREFIX: (npz.load, npz.status),
}


def names() -> list[str]:
    """The fixed dataset names; ``imagefolder:<name>`` and ``npz:<name>`` are also accepted."""
    return list(_FIXED)


def _unknown(name: str) -> DatasetUnavailable:
    patterns = ", ".join(f"{prefix}<name>" for prefix in _PATTERNS)
    return DatasetUnavailable(
        f"unknown dataset {name!r}; known datasets: {', '.join(_FIXED)}, or {patterns} "
        "for files in the data directory",
        details={"known": list(_FIXED)},
    )


def load_dataset(name: str, data_dir: Path | None = None) -> Dataset:
    """Load dataset ``name``; never downloads.

    Raises ``DatasetUnavailable`` for unknown names (listing the known ones) and for missing
    or malformed files (saying which files to put where under ``data_dir``).
    """
    if name in _FIXED:
        return _FIXED[name][1](data_dir)
    for prefix, (loader, _) in _PATTERNS.items():
        if name.startswith(prefix):
            return loader(name.removeprefix(prefix), data_dir)
    raise _unknown(name)


def _probe(name: str, description: str, data_dir: Path | None) -> DatasetStatus:
    """The dataset's status, or an unavailable entry carrying the loader's explanation."""
    try:
        if name in _FIXED:
            return _FIXED[name][2](data_dir)
        prefix = name.split(":", 1)[0] + ":"
        return _PATTERNS[prefix][1](name.removeprefix(prefix), data_dir)
    except DatasetUnavailable as exc:
        return DatasetStatus(name=name, description=description, available=False, reason=str(exc))


def catalog(data_dir: Path | None = None) -> list[DatasetStatus]:
    """Every fixed dataset and every image folder / .npz found in ``data_dir``, with status.

    Cheap: it reads headers, file sizes and label arrays, never whole image arrays.
    """
    entries = [_probe(name, description, data_dir) for name, (description, *_) in _FIXED.items()]
    if data_dir is not None and Path(data_dir).is_dir():
        root = Path(data_dir)
        found = [(n, f"image folders in {root}") for n in imagefolder.discover(root)]
        found += [(n, f".npz arrays in {root}") for n in npz.discover(root)]
        entries += [_probe(name, description, root) for name, description in found]
    return entries
