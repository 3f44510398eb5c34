"""benchmarks.peer_recipes: SpikingJelly's recipes on any trained module (skipped when
SpikingJelly is not installed in .bench-deps)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmarks import peer_recipes

pytest.importorskip("spikingjelly")


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    model[1].running_mean.uniform_(-0.1, 0.1)
    model.eval()
    with torch.no_grad():  # centre the logits, so that the ANN's answers vary
        probe = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
        model[-1].bias -= model(probe).mean(0)
    return model


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1)
    calib = torch.rand(40, 1, 8, 8, generator=generator)
    test = torch.rand(30, 1, 8, 8, generator=generator)
    with torch.no_grad():
        labels = _net()(test).argmax(-1)  # the ANN's own answers: its SNN should approach them
    assert len(labels.unique()) == 3
    return calib, test, labels


@pytest.mark.parametrize("recipe", list(peer_recipes.RECIPES))
def test_every_recipe_gives_top1_at_every_step(recipe, data):
    calib, test, labels = data
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top1 = peer_recipes.spikingjelly_top1_per_step(model, calib.numpy(), test, labels.numpy(),
                                                   steps=32, recipe=recipe, batch_size=16)
    assert len(top1) == 32 and all(0.0 <= a <= 1.0 for a in top1)
    assert top1[-1] >= 0.6  # the converted net agrees with the ANN after enough steps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:estimate_delay_start:RuntimeWarning")
def test_delayed_readout_leaves_the_first_steps_undefined(data):
    calib, test, labels = data
    top1 = peer_recipes.spikingjelly_top1_per_step(_net(), calib, test, labels, steps=6,
                                                   recipe="ltb", delay_start=2)
    assert [math.isnan(a) for a in top1] == [True, True, False, False, False, False]
    auto = peer_recipes.spikingjelly_top1_per_step(_net(), calib, test, labels, steps=6,
                                                   recipe="ltb", delay_start="auto")
    assert len(auto) == 6 and not math.isnan(auto[-1])


def test_unknown_recipe_is_refused(data):
    calib, test, labels = data
    with pytest.raises(ValueError, match="unknown SpikingJelly recipe"):
        peer_recipes.spikingjelly_top1_per_step(_net(), calib, test, labels, steps=2,
                                                recipe="qcfs")


def test_run_counts_cumulative_spikes_per_step(data):
    calib, test, labels = data
    run = peer_recipes.spikingjelly_run(_net(), calib, test, labels, steps=6, recipe="99.9%",
                                        batch_size=16)
    assert run.top1 == peer_recipes.spikingjelly_top1_per_step(
        _net(), calib, test, labels, steps=6, recipe="99.9%", batch_size=16)
    spikes = run.spikes_per_image
    assert len(spikes) == 6 and spikes[-1] > 0
    assert all(b >= a for a, b in zip(spikes, spikes[1:], strict=False))  # cumulative
    network = peer_recipes.SpikingJellyNetwork(_net(), calib, "99.9%", batch_size=16)
    _outputs, total = network.step_outputs(test, 6)  # bench_peers' form: the whole run's
    assert total == pytest.approx(spikes[-1] * len(test))

