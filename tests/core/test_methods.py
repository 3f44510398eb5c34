"""Conversion methods checked against their ANN (the oracle) on real digits."""

from __future__ import annotations

import pytest
import torch

from core.methods import CONVERTERS, ConversionContext, convert
from core.methods.cq import build_cq_network
from core.simulate import simulate
from core.spec import CLASSIC_METHODS, METHODS, PAPER_METHODS, TRAINED_IF_METHODS, JobSpec
from core.train import CQActivation

CPU = torch.device("cpu")


def context(ann, arrays, **spec):
    x, y, _, _ = arrays
    job = JobSpec(model_path="unused.onnx", **spec)
    return ConversionContext(ann=ann, trainable=ann, spec=job, device=CPU, sample_shape=(1, 8, 8),
                             train_x=x, train_y=y, calib_x=x[:500],
                             progress=lambda *_: None)


def run(method, ann, arrays, **spec):
    _, _, xe, ye = arrays
    ctx = context(ann, arrays, methods=[method], **spec)
    snn = convert(method, ctx)
    return simulate(snn, xe, ye, sample_shape=(1, 8, 8), batch_size=250, device=CPU,
                    memory_budget_mb=256)


def ann_top1(ann, arrays) -> float:
    _, _, xe, ye = arrays
    with torch.no_grad():
        return (ann(torch.from_numpy(xe)).argmax(1).numpy() == ye).mean()


def test_every_method_name_has_exactly_one_converter():
    """The names are stated once (core.spec); the converter table must cover exactly them."""
    assert sorted(CONVERTERS) == sorted(METHODS)
    assert CLASSIC_METHODS + PAPER_METHODS + TRAINED_IF_METHODS == METHODS
    assert JobSpec(model_path="unused.onnx", methods=list(METHODS)).methods == list(METHODS)


@pytest.mark.parametrize("method", CLASSIC_METHODS)
def test_classic_methods_converge_to_the_ann(method, digits_mlp, digits_arrays):
    result = run(method, digits_mlp, digits_arrays, timesteps=128)
    reference = ann_top1(digits_mlp, digits_arrays)
    assert result.reference_top1 == pytest.approx(reference)
    assert abs(result.top1[-1] - reference) <= 0.01
    assert result.agreement[-1] >= 0.98
    assert result.agreement[-1] > result.agreement[1]
    assert len(result.top1) == len(result.sops) == 128
    assert all(b >= a for a, b in zip(result.sops, result.sops[1:], strict=False))
    assert result.latency.anytime and result.latency.end_to_end_steps == 128


def test_half_threshold_beats_robust_norm_at_few_steps(digits_mlp, digits_arrays):
    robust = run("robust-norm", digits_mlp, digits_arrays, timesteps=4)
    half = run("half-threshold", digits_mlp, digits_arrays, timesteps=4)
    assert sum(half.top1) > sum(robust.top1)


def test_channel_norm_has_per_channel_thresholds(digits_mlp, digits_arrays):
    result = run("channel-norm", digits_mlp, digits_arrays, timesteps=8)
    assert result.layers
    assert all(layer.channels > 1 for layer in result.layers)
    assert all(layer.threshold_min < layer.threshold_max for layer in result.layers)


def test_layer_statistics_are_consistent(digits_mlp, digits_arrays):
    result = run("robust-norm", digits_mlp, digits_arrays, timesteps=64)
    assert result.layers
    for layer in result.layers:
        assert 0 < layer.firing_rate < 1
        assert 0 <= layer.silent_fraction < 1
        # a 99.9th percentile clips a little, never a lot
        assert 0 < layer.saturated_fraction < 0.01
        assert layer.rate_error < 0.05


def test_asg_reproduces_the_cq_ann_exactly(digits_mlp, digits_arrays):
    _, _, xe, ye = digits_arrays
    ctx = context(digits_mlp, digits_arrays, methods=["cq-asg"], timesteps=4,
                  cq={"finetune_epochs": 1, "encoding": "vr"})
    snn = convert("cq-asg", ctx)
    x = torch.from_numpy(xe)
    with torch.no_grad():
        expected = snn.reference(x)
        snn.encoder.begin(x)
        got = snn.network(snn.encoder.window_mean(4))
    assert (got - expected).abs().max().item() <= 1e-5
    result = simulate(snn, xe, ye, sample_shape=(1, 8, 8), batch_size=250, device=CPU,
                      memory_budget_mb=256)
    assert result.agreement[-1] == 1.0
    assert result.top1[-1] == pytest.approx(result.reference_top1)
    assert result.layers and all(layer.rate_error == 0 for layer in result.layers)
    assert result.latency.end_to_end_steps == 2 * 4 and not result.latency.anytime


@pytest.mark.parametrize(("timesteps", "asked", "used"),
                         [(2, 2.5, 2.5), (1, None, 1.0), (2, None, 0.0), (1, 0.0, 0.0)])
def test_finetuning_uses_the_straight_through_window_asked_or_the_default_per_t(
        digits_mlp, digits_arrays, timesteps, asked, used):
    ctx = context(digits_mlp, digits_arrays, methods=["cq-asg"], timesteps=timesteps,
                  cq={"finetune_epochs": 1, "surrogate_margin": asked})
    network = build_cq_network(ctx)
    margins = {m.surrogate_margin for m in network.model.modules() if isinstance(m, CQActivation)}
    assert margins == {used}
    assert network.finetune["surrogate_margin"] == used


def test_cq_if_and_ctt_share_the_cq_network_and_approach_it(digits_mlp, digits_arrays):
    ctx = context(digits_mlp, digits_arrays, methods=["cq-if", "cq-ctt"], timesteps=8,
                  cq={"finetune_epochs": 1, "encoding": "vr", "ctt_batches": 10,
                      "ctt_eta": 0.1})
    _, _, xe, ye = digits_arrays
    results = {}
    for method in ("cq-if", "cq-ctt"):
        snn = convert(method, ctx)
        results[method] = simulate(snn, xe, ye, sample_shape=(1, 8, 8), batch_size=250,
                                   device=CPU, memory_budget_mb=256)
    if_result, ctt = results["cq-if"], results["cq-ctt"]
    assert if_result.reference_top1 == ctt.reference_top1
    assert if_result.top1[-1] >= if_result.reference_top1 - 0.05
    assert ctt.layers and any(layer.threshold_min != layer.threshold_max for layer in ctt.layers)
    assert ctt.parameters["ctt_rate_gap_last"] <= ctt.parameters["ctt_rate_gap_first"]


def test_simulation_is_chunk_invariant_and_deterministic(digits_mlp, digits_arrays):
    _, _, xe, ye = digits_arrays
    ctx = context(digits_mlp, digits_arrays, methods=["robust-norm"], timesteps=16,
                  input_encoding="poisson", seed=3)
    results = []
    for budget in (0.1, 4096):  # one step per chunk vs all 16 at once
        snn = convert("robust-norm", ctx)
        results.append(simulate(snn, xe[:100], ye[:100], sample_shape=(1, 8, 8),
                                batch_size=100, device=CPU, memory_budget_mb=budget))
    small, large = results
    assert small.top1 == large.top1 and small.sops == large.sops


def test_the_same_network_can_be_simulated_twice(digits_mlp, digits_arrays):
    _, _, xe, ye = digits_arrays
    snn = convert("robust-norm", context(digits_mlp, digits_arrays, methods=["robust-norm"],
                                         timesteps=12))
    first, second = (simulate(snn, xe[:120], ye[:120], sample_shape=(1, 8, 8), batch_size=50,
                              device=CPU, memory_budget_mb=1) for _ in range(2))
    assert first.top1 == second.top1 and first.sops == second.sops
