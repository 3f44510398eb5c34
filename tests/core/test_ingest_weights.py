"""Weights-only uploads (safetensors, torch.save state_dict) loaded into zoo architectures."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import fx, nn

from core import zoo
from core.errors import ModelRejected
from core.ingest import load_model, state_dict_to_safetensors

ARCH = "cnn-small"


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    torch.manual_seed(0)
    model = zoo.build(ARCH)
    with torch.no_grad():  # move BN statistics away from their defaults
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _save(model: nn.Module, path, kind: str):
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("kind", ["safetensors", "state_dict"])
def test_weights_load_into_zoo_architecture(trained, tmp_path, kind):
    path = _save(trained, tmp_path / "weights.bin", kind)

    loaded = load_model(path, ARCH)

    assert loaded.format == kind and loaded.opset is None
    assert loaded.input_shape == tuple(zoo.info(ARCH).input_shape)
    assert isinstance(loaded.module, fx.GraphModule) and not loaded.module.training
    x = torch.randn(5, *loaded.input_shape)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), trained(x), atol=1e-6)


def test_missing_and_misshapen_weights_are_named(trained, tmp_path):
    state = dict(trained.state_dict())
    first = next(iter(state))
    del state[first]
    last = list(state)[-1]
    state[last] = torch.zeros(3)
    path = tmp_path / "weights.pt"
    torch.save(state, path)

    with pytest.raises(ModelRejected) as caught:
        load_model(path, ARCH)

    assert caught.value.code == "weights-mismatch"
    assert first in str(caught.value) and last in str(caught.value)


def test_unknown_architecture_lists_the_known_ones(trained, tmp_path):
    path = _save(trained, tmp_path / "w.safetensors", "safetensors")

    with pytest.raises(ModelRejected) as caught:
        load_model(path, "no-such-net")

    assert caught.value.code == "unknown-arch"
    assert all(name in str(caught.value) for name in zoo.names())


def test_weights_without_architecture_are_refused(trained, tmp_path):
    path = _save(trained, tmp_path / "w.safetensors", "safetensors")

    with pytest.raises(ModelRejected) as caught:
        load_model(path)

    assert caught.value.code == "arch-required" and ARCH in str(caught.value)


def test_state_dict_is_restored_as_safetensors_with_shared_tensors(tmp_path):
    shared = torch.randn(4, 4)
    state = {"encoder.weight": shared, "decoder.weight": shared, "scale": torch.tensor(2.0)}
    source, dest = tmp_path / "w.pt", tmp_path / "out" / "w.safetensors"
    torch.save(state, source)

    state_dict_to_safetensors(source, dest)

    restored = load_file(str(dest))
    assert set(restored) == set(state)
    assert all(torch.equal(restored[name], state[name]) for name in state)
