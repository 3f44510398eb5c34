"""Array helpers shared by the loaders and the pipeline: scaling, splitting, normalising."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from core.datasets.types import Split
from core.errors import InvalidSpec


def uint8_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 → float32 in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255.0)).astype(np.float32, copy=False)


def nhwc_to_nchw(images: np.ndarray) -> np.ndarray:
    """Reorder channel-last images to channel-first, contiguous."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_size: int, seed: int
) -> tuple[Split, Split]:
    """A shuffled, class-stratified train/test split that depends only on ``seed``."""
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, shuffle=True, random_state=seed
    )
    return (
        Split(np.ascontiguousarray(x_train), y_train.astype(np.int64)),
        Split(np.ascontiguousarray(x_test), y_test.astype(np.int64)),
    )


def normalize(x: np.ndarray, mean: list[float] | None, std: list[float] | None) -> np.ndarray:
    """Per-channel ``(x - mean) / std`` of an N×C×H×W batch; ``None``/``None`` leaves x as is.

    Raises ``InvalidSpec`` when only one of mean/std is given, when their length differs
    from the number of channels, or when a std entry is not positive.
    """
    if mean is None and std is None:
        return x
    if mean is None or std is None:
        raise InvalidSpec("give both mean and std for input normalisation, or neither")
    channels = x.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise InvalidSpec(
            f"mean and std need one entry per input channel ({channels}); "
            f"got {len(mean)} mean and {len(std)} std entries"
        )
    if any(s <= 0 for s in std):
        raise InvalidSpec(f"std entries must be positive, got {std}")
    shape = (1, channels, 1, 1)
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(shape)
    std_arr = np.asarray(std, dtype=np.float32).reshape(shape)
    return ((x - mean_arr) / std_arr).astype(np.float32, copy=False)


def take(split: Split, n: int | None) -> Split:
    """The first ``n`` samples of ``split`` (all of it when ``n`` is None or too large)."""
    if n is None or n >= len(split):
        return split
    if n < 0:
        raise InvalidSpec(f"sample count must not be negative, got {n}")
    return Split(split.x[:n], split.y[:n])
