"""The three kinds of value an ONNX tensor becomes during import.

* a constant: a numpy array, folded at import time (weights, shape arithmetic);
* a symbolic shape: a numpy *object* array whose entries are ints or ``BATCH`` — what
  ``Shape`` returns for a runtime tensor, so ``x.view(x.size(0), -1)`` keeps its batch
  dimension dynamic instead of freezing the export batch size;
* a runtime tensor: a ``torch.fx.Node`` whose dimension 0 is the batch.
"""

from __future__ import annotations

import math

import numpy as np
from torch import fx

Value = np.ndarray | fx.Node


class NodeUnsupported(Exception):
    """An operator is known but this use of it cannot be imported; the text says why."""


class _Batch:
    """The batch size, unknown until run time; any arithmetic on it is refused."""

    def __repr__(self) -> str:
        return "batch"

    def _refuse(self, *_: object) -> _Batch:
        raise NodeUnsupported("arithmetic on the batch size is not supported")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __int__ = __float__ = _refuse


BATCH = _Batch()


def is_runtime(value: Value | None) -> bool:
    return isinstance(value, fx.Node)


def is_symbolic(value: Value | None) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == object


def optional_input(inputs: list[Value | None], index: int) -> Value | None:
    """Input ``index`` of a node, or None where it is omitted (trailing or empty name)."""
    return inputs[index] if len(inputs) > index else None


def require_constant(value: Value | None, what: str) -> np.ndarray:
    """``value`` as a numeric array, or ``NodeUnsupported`` naming ``what``."""
    if not isinstance(value, np.ndarray) or value.dtype == object:
        raise NodeUnsupported(f"{what} must be a constant")
    return value


def constant_ints(value: Value | None, what: str) -> list[int]:
    return [int(v) for v in require_constant(value, what).reshape(-1)]


def constant_scalar(value: Value | None, what: str) -> float:
    array = require_constant(value, what)
    if array.size != 1:
        raise NodeUnsupported(f"{what} must be a single number, not shape {array.shape}")
    return float(array.reshape(()))


def normalise_axis(axis: int, rank: int) -> int:
    """An ONNX axis (possibly negative) as a non-negative index; axis 0 is the batch."""
    if not -rank <= axis < rank:
        raise NodeUnsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def non_batch_axes(axes: list[int], rank: int) -> tuple[int, ...]:
    resolved = tuple(sorted(normalise_axis(a, rank) for a in axes))
    if 0 in resolved:
        raise NodeUnsupported("operating across the batch dimension is not supported")
    return resolved


def resolve_reshape(in_shape: tuple[int, ...], target: list[int], allow_zero: bool) -> tuple:
    """ONNX Reshape semantics on a known shape: 0 copies the input dim, -1 is inferred."""
    if not allow_zero:
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if target.count(-1) > 1:
        raise NodeUnsupported("reshape target has more than one -1")
    known = math.prod(d for d in target if d != -1)
    total = math.prod(in_shape)
    if -1 in target:
        if known == 0 or total % known:
            raise NodeUnsupported(f"cannot reshape {in_shape} to {target}")
        target = [total // known if d == -1 else d for d in target]
    if math.prod(target) != total:
        raise NodeUnsupported(f"cannot reshape {in_shape} to {target}")
    return tuple(target)
