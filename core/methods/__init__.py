"""Conversion methods, one module each; ``convert(name, ctx)`` dispatches by name.

The names are ``core.spec.METHODS``; CONVERTERS has exactly one converter per name
(tests/core/test_methods.py checks both ways).
"""

from __future__ import annotations

from collections.abc import Callable

from core.methods import (
    channel_norm,
    cq_asg,
    cq_ctt,
    cq_if,
    half_threshold,
    max_norm,
    qcfs,
    robust_norm,
)
from core.methods.context import ConversionContext
from core.methods.potential_correction import correct_potentials
from core.snn import SpikingNetwork
from core.spec import MethodName

CONVERTERS: dict[MethodName, Callable[[ConversionContext], SpikingNetwork]] = {
    "max-norm": max_norm.convert,
    "robust-norm": robust_norm.convert,
    "half-threshold": half_threshold.convert,
    "channel-norm": channel_norm.convert,
    "cq-asg": cq_asg.convert,
    "cq-if": cq_if.convert,
    "cq-ctt": cq_ctt.convert,
    "qcfs": qcfs.convert,
}


def convert(method: MethodName, ctx: ConversionContext) -> SpikingNetwork:
    """Build the spiking network of ``method`` from the context's ANN; an IF network then
    gets the post-conversion potential correction when the spec asks for it."""
    return correct_potentials(CONVERTERS[method](ctx), ctx,
                              ctx.spec.potential_correction_batches)


__all__ = ["CONVERTERS", "ConversionContext", "convert"]
