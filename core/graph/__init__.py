"""Graph passes over torch.fx: canonicalisation, analysis and the ANN→SNN rewrite."""

from core.graph.analysis import activation_names, classify, preflight, require_convertible
from core.graph.canonicalize import canonicalize
from core.graph.input_layout import InputLayout, adapt_input_layout
from core.graph.modules import ChannelAffine, ClampedReLU, CQActivation, ICEExpand, VREncode
from core.graph.patterns import trace

__all__ = ["CQActivation", "ChannelAffine", "ClampedReLU", "ICEExpand", "InputLayout",
           "VREncode", "activation_names", "adapt_input_layout", "canonicalize", "classify",
           "preflight", "require_convertible", "trace"]
