"""Shared fixtures for core tests: a small ReLU network trained on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.graph import canonicalize


@pytest.fixture(scope="session")
def digits_arrays():
    """scikit-learn's 8×8 digits as float32 NCHW in [0, 1], shuffled with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1297], y[:1297], x[1297:], y[1297:]


@pytest.fixture(scope="session")
def digits_mlp(digits_arrays):
    """A ReLU MLP trained for a few seconds on digits (≈ 97 % test accuracy)."""
    x, y, _, _ = digits_arrays
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64),
                          nn.ReLU(), nn.Linear(64, 10))
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        for i in range(0, len(xt), 64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64]).backward()
            optimiser.step()
    return canonicalize(model.eval())
