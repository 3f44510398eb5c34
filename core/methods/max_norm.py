"""max-norm (Diehl et al. 2015): λ_l = the largest activation of layer l on calibration data.

Lossless in the limit T → ∞, but one outlier sets the scale, so most neurons fire rarely and
accuracy needs hundreds of steps.
"""

from core.calibrate import activation_maxima
from core.methods.balancing import layer_names, threshold_balanced
from core.methods.context import ConversionContext
from core.snn import SpikingNetwork


def convert(ctx: ConversionContext) -> SpikingNetwork:
    lambdas = activation_maxima(ctx.ann, layer_names(ctx), ctx.calibration_batches,
                                per_channel=False)
    return threshold_balanced(ctx, "max-norm", lambdas, parameters={"statistic": "max"})
