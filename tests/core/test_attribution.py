"""Error attribution against hand-computed spike trains, the ANN itself, and the shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core import cli
from core.attribution import IdealRate, attribute_errors, if_layers_in_order
from core.neurons import IFNeuron
from core.report import Report
from core.shards import merge_method, to_shard
from core.simulate import simulate
from tests.conftest import (
    USER_EXPORTERS,
    export_trained_digits_mlp,
    hand_built_snn,
    linear_layer,
)


def _simulator(x, y):
    def run(network, report=None):
        return simulate(network, x, y, sample_shape=tuple(x.shape[1:]), batch_size=len(x),
                        device=torch.device("cpu"), memory_budget_mb=64, progress=report)
    return run


def test_one_layer_by_hand():
    # x = 0.5 into θ = 1: the SNN's class-0 count ⌊t/2⌋ against 0.375·t for class 1 gives
    # top-1 0 1 0 1 1 1; the ideal rate neuron sends 0.5 every step, 0.5·t > 0.375·t always
    modules = [linear_layer([[1.0]]), nn.ReLU(), linear_layer([[1.0], [0.0]], bias=[0.0, 0.375])]
    snn = hand_built_snn(modules, {"1": IFNeuron(1.0)}, steps=6)
    x, y = np.array([[0.5]], np.float32), np.array([0])
    run = _simulator(x, y)
    result = run(snn)
    assert result.top1 == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    (layer,) = attribute_errors(snn, result, run)
    assert layer.layer == "1" and layer.top1 == [1.0] * 6
    assert layer.recovered == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_the_ideal_rate_neuron_is_the_if_rate_limit():
    neuron = IdealRate(IFNeuron(torch.tensor([2.0, 0.5]), torch.tensor([1.0, 3.0])))
    current = torch.tensor([[1.0, 1.0], [-1.0, 0.25], [5.0, 0.1]])
    # a·clamp(I/θ, 0, 1) per channel: θ = (2, 0.5), a = (1, 3)
    expected = torch.tensor([[0.5, 3.0], [0.0, 1.5], [1.0, 0.6]])
    assert torch.allclose(neuron(current), expected)


def test_shares_add_up_and_merge_exactly_over_shards():
    generator = torch.Generator().manual_seed(0)
    modules = [linear_layer(torch.randn(6, 4, generator=generator).tolist()), nn.ReLU(),
               linear_layer(torch.randn(5, 6, generator=generator).tolist()), nn.ReLU(),
               linear_layer(torch.randn(3, 5, generator=generator).tolist())]
    snn = hand_built_snn(modules, {"1": IFNeuron(0.7), "3": IFNeuron(0.9)}, steps=8)
    x = torch.rand(40, 4, generator=generator).numpy()
    y = np.asarray(snn.reference(torch.from_numpy(x)).argmax(1))
    assert if_layers_in_order(snn) == ["1", "3"]
    run = _simulator(x, y)
    whole = run(snn)
    whole.error_attribution = attribute_errors(snn, whole, run)
    total = [sum(a.recovered[t] for a in whole.error_attribution) for t in range(8)]
    assert total == pytest.approx([a - b for a, b in zip(whole.error_attribution[-1].top1,
                                                         whole.top1, strict=True)])
    parts = []
    for rows in (slice(0, 15), slice(15, 40)):
        run_part = _simulator(x[rows], y[rows])
        part = run_part(snn)
        part.error_attribution = attribute_errors(snn, part, run_part)
        parts.append(to_shard(part, len(y[rows])))
    merged = merge_method(parts)
    assert [a.layer for a in merged.error_attribution] == ["1", "3"]
    for got, expected in zip(merged.error_attribution, whole.error_attribution, strict=True):
        assert got.top1 == pytest.approx(expected.top1, abs=1e-12)
        assert got.recovered == pytest.approx(expected.recovered, abs=1e-12)


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_through_the_cli(capsys, tmp_path, exporter):
    path = export_trained_digits_mlp(tmp_path, exporter)
    out = tmp_path / "out"
    assert cli.main(["convert", str(path), "--quiet", "--dataset", "digits", "--method",
                     "robust-norm", "--timesteps", "4", "--eval-samples", "300",
                     "--error-attribution", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = Report.model_validate(json.loads((out / "report.json").read_text()))
    (method,) = report.methods
    (layer,) = method.error_attribution  # the MLP's one hidden layer
    assert layer.recovered == pytest.approx([a - b for a, b in zip(layer.top1, method.top1,
                                                                   strict=True)])
    # with its IF layer ideal the network is the ANN clipped at θ: the ANN is the oracle
    assert all(abs(a - report.ann.top1) <= 0.02 for a in layer.top1)
    assert f"{layer.layer} {100 * layer.recovered[-1]:+.2f}" in printed
    assert "all IF layers ideal" in (out / "accuracy.svg").read_text()
