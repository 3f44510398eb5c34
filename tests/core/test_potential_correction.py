"""Post-conversion potential correction: a hand-computed layer, the mean bias it removes from
a population, and a user's export through the CLI."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from torch import fx, nn

from core import cli
from core.encoders import DirectEncoder
from core.methods.balancing import anytime_latency
from core.methods.potential_correction import correct_potentials
from core.neurons import IFNeuron, neurons_of
from core.report import Report
from core.snn import SpikingNetwork
from tests.conftest import USER_EXPORTERS, export_trained_digits_mlp


def _identity_layer(features: int) -> nn.Linear:
    layer = nn.Linear(features, features)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(features))
        layer.bias.zero_()
    return layer


def _network(features: int, steps: int) -> SpikingNetwork:
    modules = [_identity_layer(features), nn.ReLU(), _identity_layer(features)]
    ann = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules))).eval()
    network = fx.symbolic_trace(nn.Sequential(*copy.deepcopy(modules)))
    network.add_submodule("1", IFNeuron(1.0))  # the ReLU's place, under its name
    return SpikingNetwork(method="robust-norm", network=network, reference=ann,
                          encoder=DirectEncoder(), timesteps=steps,
                          latency=anytime_latency(steps))


def _context(x: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), sample_shape=tuple(x.shape[1:]),
                           spec=SimpleNamespace(batch_size=len(x), memory_budget_mb=64),
                           calibration_batches=lambda: iter([x]),
                           progress=lambda *_: None)


def test_the_correction_by_hand():
    # θ = a = 1, T = 4, currents 0.3 and 0.6: u = .3 .6 .9 1.2 → 1 spike (r = .25 against
    # q = .3); u = .6 1.2 .8 1.4 → 2 spikes (r = .5 against .6).  Δu = (q − r)·T·θ/a
    snn = _network(2, 4)
    x = torch.tensor([[0.3, 0.6]])
    correct_potentials(snn, _context(x), batches=1)
    (neuron,) = neurons_of(snn.network).values()
    assert neuron.initial_offset.tolist() == pytest.approx([0.2, 0.4], abs=1e-6)
    assert snn.parameters["potential_correction_gap_before"] == pytest.approx(0.075, abs=1e-6)
    # one neuron cannot do better: 0.2 + .3·t still crosses 1 once, 0.4 + .6·t twice
    assert snn.parameters["potential_correction_gap_after"] == pytest.approx(0.075, abs=1e-6)


def test_a_population_loses_the_floor_bias():
    # currents spread over [0, 1): without correction the count is floor(T·I), a mean bias
    # of about 1/(2T) below the ANN; Δu = θ/2 turns it into rounding
    steps, samples = 8, 1000
    snn = _network(1, steps)
    x = (torch.arange(samples, dtype=torch.float32) / samples).unsqueeze(1)
    correct_potentials(snn, _context(x), batches=1)
    before = snn.parameters["potential_correction_gap_before"]
    after = snn.parameters["potential_correction_gap_after"]
    assert before == pytest.approx(1 / (2 * steps), rel=0.05)
    assert after < 0.1 * before
    (neuron,) = neurons_of(snn.network).values()
    assert neuron.initial_offset.item() == pytest.approx(0.5, abs=0.02)


def test_an_asg_network_is_left_alone():
    snn = _network(2, 4)
    snn.mode = "asg"
    assert correct_potentials(snn, _context(torch.ones(1, 2)), batches=3).parameters == {}


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_through_the_cli(capsys, tmp_path, exporter):
    path = export_trained_digits_mlp(tmp_path, exporter)
    runs = {}
    for batches in (0, 2):
        out = tmp_path / f"out-{batches}"
        assert cli.main(["convert", str(path), "--quiet", "--dataset", "digits", "--method",
                         "robust-norm,half-threshold", "--timesteps", "4", "--eval-samples",
                         "300", "--potential-correction-batches", str(batches),
                         "--out", str(out)]) == 0
        runs[batches] = Report.model_validate(json.loads((out / "report.json").read_text()))
    capsys.readouterr()
    for plain, corrected in zip(runs[0].methods, runs[2].methods, strict=True):
        assert "potential_correction_batches" not in plain.parameters
        parameters = corrected.parameters
        assert parameters["potential_correction_batches"] == 2
        assert parameters["potential_correction_gap_after"] \
            < parameters["potential_correction_gap_before"]
        assert corrected.top1 != plain.top1  # the corrected network is another network
