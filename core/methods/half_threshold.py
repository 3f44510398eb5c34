"""half-threshold: robust-norm with the membrane starting at u0 = θ/2 (as in QCFS, Bu 2022).

A neuron starting at zero emits floor(T·a/θ) spikes; starting at θ/2 it emits the rounded
value, which removes the systematic downward bias that dominates at small T.
"""

from core.methods.balancing import threshold_balanced
from core.methods.context import ConversionContext
from core.methods.robust_norm import robust_lambdas
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    return threshold_balanced(ctx, "half-threshold", robust_lambdas(ctx, per_channel=False),
                              initial_fraction=0.5,
                              parameters={"percentile": ctx.spec.percentile})
