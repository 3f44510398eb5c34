"""What CQ fine-tuning starts from: rescaled to the clamp and given fresh BatchNorm, each
without changing the function (oracle: the network before the pass, on the same inputs)."""

from __future__ import annotations

import torch
from torch import nn

from core.graph.canonicalize import canonicalize
from core.graph.modules import ClampedReLU
from core.train.batchnorm import with_fresh_batchnorm
from core.train.clamp_fit import least_loss_level, scale_to_clamp
from tests.battery.models import ResNetStyle


def _folded_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = ResNetStyle().eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_var.uniform_(0.5, 4.0)
                layer.weight.uniform_(1.0, 3.0)
    return canonicalize(model)  # BN folded, as an ONNX export delivers it


def _batches(x: torch.Tensor):
    return lambda: iter(x.split(16))


def test_scale_to_clamp_keeps_the_function_and_moves_activations_onto_the_clamp():
    model, x = _folded_resnet(), torch.rand(48, 1, 8, 8)
    scaled = scale_to_clamp(model, 0.8, 5, _batches(x))
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), model(x), rtol=1e-4, atol=1e-4)
    maxima = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: maxima.append(float(out.max())))
             for m in scaled.modules() if isinstance(m, ClampedReLU)]
    with torch.no_grad():
        scaled(x)
    for hook in hooks:
        hook.remove()
    assert len(maxima) == 7 and all(0.8 <= top <= 0.8 * 64 for top in maxima)


def test_least_loss_level_beats_the_maximum_and_the_smallest_candidate():
    values = torch.rand(10_000) ** 3  # skewed: most activations small

    def error(level: float) -> float:
        scale = 0.25 / level
        quantised = torch.floor(torch.clamp(values * scale, 0, 0.25) * 4) / 4 / scale
        return float(((values - quantised) ** 2).mean())

    chosen = least_loss_level(values, clamp_max=0.25, levels=4)
    top = float(values.max())
    assert 0 < chosen < top
    assert error(chosen) < error(top) and error(chosen) < error(top / 64)


def test_fresh_batchnorm_is_the_identity_in_eval_mode_and_trains():
    model, x = _folded_resnet(), torch.rand(48, 1, 8, 8)
    with_bn = with_fresh_batchnorm(model, _batches(x))
    fresh = [m for m in with_bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(fresh) == 8 and not any(m.training for m in fresh)  # 7 convs + the shortcut
    with torch.no_grad():
        torch.testing.assert_close(with_bn(x), model(x), rtol=1e-4, atol=1e-4)
    assert all(m.weight.requires_grad for m in fresh)
