"""channel-norm: one threshold per channel, the p-th percentile of that channel's positive
activations on calibration data (channel-wise threshold balancing).

Channels with small activations get small thresholds and fire often instead of staying
silent behind a layer-wide scale: the usual remedy when robust-norm collapses at low T.
"""

from core.methods.balancing import threshold_balanced
from core.methods.context import ConversionContext
from core.methods.robust_norm import robust_lambdas
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    return threshold_balanced(ctx, "channel-norm", robust_lambdas(ctx, per_channel=True),
                              initial_fraction=0.0,
                              parameters={"percentile": ctx.spec.percentile,
                                          "granularity": "channel"})
