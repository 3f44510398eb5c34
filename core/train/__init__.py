"""CQ and QCFS training: the ReLU → CQ / QCFS rewrites, input coding, the training loop, export.

The modules it inserts (``CQActivation``, ``VREncode``, ``ICEExpand``) live in
core/graph/modules.py beside the other canonical modules; they are re-exported here.
"""

from core.graph.modules import CQActivation, ICEExpand, VREncode, cq_quantize
from core.train.export import export_onnx, export_safetensors
from core.train.fit import EpochStats, FitResult, evaluate, fit
from core.train.input_coding import with_input_coding
from core.train.rewrite import to_cq, to_qcfs

__all__ = [
    "CQActivation",
    "EpochStats",
    "FitResult",
    "ICEExpand",
    "VREncode",
    "cq_quantize",
    "evaluate",
    "export_onnx",
    "export_safetensors",
    "fit",
    "to_cq",
    "to_qcfs",
    "with_input_coding",
]
