"""robust-norm (Rueckauer et al. 2017): λ_l = the p-th percentile (default 99.9) of layer l's
positive activations on calibration data; reset by subtraction.

Ignoring the rare largest activations raises firing rates, so accuracy arrives several
times sooner than with max-norm at the cost of clipping those outliers.
"""

from core.calibrate import activation_percentiles
from core.methods.balancing import layer_names, threshold_balanced
from core.methods.context import ConversionContext
from core.snn import SpikingNetwork


def robust_lambdas(ctx: ConversionContext, *, per_channel: bool):
    return activation_percentiles(ctx.ann, layer_names(ctx), ctx.calibration_batches,
                                  percentile=ctx.spec.percentile, per_channel=per_channel)


def convert(ctx: ConversionContext) -> SpikingNetwork:
    return threshold_balanced(ctx, "robust-norm", robust_lambdas(ctx, per_channel=False),
                              parameters={"percentile": ctx.spec.percentile})
