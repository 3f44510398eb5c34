"""Put uploaded weights into a zoo architecture and trace it to a GraphModule."""

from __future__ import annotations

import torch
from torch import fx, nn

from core import zoo
from core.errors import InvalidSpec, ModelRejected


def build_with_weights(
    arch: str | None, tensors: dict[str, torch.Tensor]
) -> tuple[fx.GraphModule, tuple[int, ...]]:
    """Zoo architecture ``arch`` with ``tensors`` loaded strictly, traced in eval mode.

    Returns the GraphModule and one sample's input shape.
    """
    model = _build(arch)
    _require_matching_keys(model, tensors, arch)
    model.load_state_dict(tensors, strict=True)
    return fx.symbolic_trace(model.float().eval()), tuple(zoo.info(arch).input_shape)


def _build(arch: str | None) -> nn.Module:  # refuses a missing or unknown ``arch``
    known = ", ".join(zoo.names())
    if not arch:
        raise ModelRejected(
            f"weights-only files need an architecture name; choose one of: {known}",
            code="arch-required",
            details={"known": zoo.names()},
        )
    try:
        return zoo.build(arch)
    except InvalidSpec:
        raise ModelRejected(
            f"unknown architecture {arch!r}; choose one of: {known}",
            code="unknown-arch",
            details={"known": zoo.names()},
        ) from None


def _require_matching_keys(model: nn.Module, tensors: dict[str, torch.Tensor], arch: str) -> None:
    """Say exactly which names or shapes differ, rather than torch's long RuntimeError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong_shape = sorted(
        f"{name} (file {tuple(tensors[name].shape)}, {arch} {tuple(expected[name].shape)})"
        for name in set(expected) & set(tensors)
        if tensors[name].shape != expected[name].shape
    )
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing[:20])}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected[:20])}")
    if wrong_shape:
        problems.append(f"wrong shape: {', '.join(wrong_shape[:20])}")
    if problems:
        raise ModelRejected(
            f"the weights do not fit architecture {arch!r} — " + "; ".join(problems),
            code="weights-mismatch",
            details={"missing": missing, "unexpected": unexpected, "wrong_shape": wrong_shape},
        )
