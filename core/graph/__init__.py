"""Graph passes over torch.fx: canonicalisation, analysis and the ANN→SNN rewrite."""

from core.graph.analysis import activation_names, classify, preflight, require_convertible
from core.graph.canonicalize import canonicalize, trace
from core.graph.input_layout import InputLayout, adapt_input_layout
from core.graph.modules import ChannelAffine, ClampedReLU

__all__ = ["ChannelAffine", "ClampedReLU", "InputLayout", "activation_names",
           "adapt_input_layout", "canonicalize", "classify", "preflight", "require_convertible",
           "trace"]
