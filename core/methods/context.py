"""What every conversion method receives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from core.spec import JobSpec
from core.train.recognise import CQDetection

StageProgress = Callable[[str, float, str], None]


@dataclass
class CQNetwork:
    """The CQ-trained ANN that cq-asg, cq-if and cq-ctt convert, built once per job."""

    model: fx.GraphModule           # the CQ ANN, input coding (if any) as its first module
    body: fx.GraphModule            # the same without the input coding: what becomes the SNN
    coding: torch.nn.Module | None  # VREncode / ICEExpand, or None for direct input
    clamp_max: float
    levels: int
    window: int
    finetune: dict


@dataclass
class ConversionContext:
    """The canonical ANN, the data a method may use, and the CQ network the methods share.

    ``trainable`` is the same network before BatchNorm folding (BN and dropout still in it),
    the starting point for fine-tuning: BN lets each layer re-learn its scale, which the CQ
    clamp at m needs (the paper fine-tunes with BN, then folds it).
    ``train_x``/``train_y`` is the training split (fine-tuning, CTT); ``calib_x`` its first
    ``calib_samples`` images.  Images are float32 NCHW in [0, 1]; normalisation, if any, is
    already the first layer of ``ann``.  ``detection`` says whether the upload is already
    CQ-trained (its L, m and input coding); ``spec`` has its automatic defaults resolved.
    ``cq_network`` is the CQ ANN that cq-asg, cq-if and cq-ctt convert, built by the first of
    them to run (``core.methods.cq.build_cq_network``); None until then.
    ``tuned_networks`` holds, by method, the CQ ANN with the weights that spike-aware
    fine-tuning gave cq-if or cq-ctt (for export beside the report).
    """

    ann: fx.GraphModule
    trainable: fx.GraphModule
    spec: JobSpec
    device: torch.device
    sample_shape: tuple[int, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    calib_x: np.ndarray
    progress: StageProgress
    detection: CQDetection = field(default_factory=CQDetection)
    cq_network: CQNetwork | None = None
    tuned_networks: dict[str, fx.GraphModule] = field(default_factory=dict)

    def calibration_batches(self) -> Iterator[torch.Tensor]:
        size = self.spec.batch_size
        for first in range(0, len(self.calib_x), size):
            yield torch.from_numpy(self.calib_x[first:first + size]).to(self.device)
