"""The value types of the dataset registry: splits, loaded datasets and catalogue entries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``x`` float32 N×C×H×W with values in [0, 1], ``y`` int64 class indices."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Loaders are the only producers; a wrong array here is a bug, not user input.
        if self.x.dtype != np.float32 or self.x.ndim != 4:
            raise ValueError(f"x must be float32 N×C×H×W, got {self.x.dtype} {self.x.shape}")
        if self.y.dtype != np.int64 or self.y.shape != (len(self.x),):
            raise ValueError(f"y must be int64 of length {len(self.x)}, got {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: both splits plus what a model needs to know about them."""

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]


class DatasetStatus(BaseModel):
    """A catalogue entry: whether ``name`` can be loaded, and if not, what to put where."""

    name: str
    description: str
    available: bool
    reason: str | None = Field(None, description="why it is unavailable and how to fix it")
    input_shape: list[int] | None = None
    num_classes: int | None = None
    train_size: int | None = None
    test_size: int | None = None
