"""Batched inference: a model's outputs for a whole array, one batch at a time."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def batched_logits(model: nn.Module, x: np.ndarray, batch_size: int,
                   device: str | torch.device) -> torch.Tensor:
    """Outputs of ``model`` for a float32 array of N samples, gathered on the CPU.

    ``batch_size`` rows at a time are moved to ``device`` (where the model must already be);
    the model is called as it is, in whatever train/eval mode it is in.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.cat([model(tensor[start:start + batch_size].to(device)).cpu()
                      for start in range(0, len(tensor), batch_size)])
