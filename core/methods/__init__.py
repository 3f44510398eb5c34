"""Conversion methods, one module each; ``convert(name, ctx)`` dispatches by name."""

from __future__ import annotations

from collections.abc import Callable

from core.methods import (
    channel_norm,
    cq_asg,
    cq_ctt,
    cq_if,
    half_threshold,
    max_norm,
    robust_norm,
)
from core.methods.context import ConversionContext
from core.snn import SpikingNetwork

CONVERTERS: dict[str, Callable[[ConversionContext], SpikingNetwork]] = {
    "max-norm": max_norm.convert,
    "robust-norm": robust_norm.convert,
    "half-threshold": half_threshold.convert,
    "channel-norm": channel_norm.convert,
    "cq-asg": cq_asg.convert,
    "cq-if": cq_if.convert,
    "cq-ctt": cq_ctt.convert,
}


def convert(method: str, ctx: ConversionContext) -> SpikingNetwork:
    """Build the spiking network of ``method`` from the context's ANN."""
    return CONVERTERS[method](ctx)


__all__ = ["CONVERTERS", "ConversionContext", "convert"]
