"""Per-sample early exit: spike trains and exits computed by hand, the threshold grid and the
operating point's rule, per-sample SOPs that add up to the simulator's, exact shard merges,
choice of T, and a user's export through the CLI."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core import cli, pipeline
from core.early_exit import (
    BatchTrace,
    ExitCalibration,
    ExitCounter,
    ExitCounts,
    TraceCollector,
    calibrate,
    candidate_thresholds,
    count_exits,
    summarise,
)
from core.encoders import DirectEncoder
from core.graph.modules import CQActivation
from core.graph.patterns import trace
from core.hardware import DEFAULT_PROFILE, PROFILES
from core.latency_choice import choice_lines, choose_latency
from core.neurons import ASGNeuron, IFNeuron
from core.report import EARLY_EXIT_CSV, Latency, MethodResult, Report, early_exit_lines
from core.shards import merge_method, to_shard
from core.simulate import simulate
from core.snn import SpikingNetwork
from core.spec import JobSpec
from tests.conftest import (
    USER_EXPORTERS,
    export_trained_digits_mlp,
    hand_built_snn,
    linear_layer,
)

CPU = torch.device("cpu")


def _run(snn, x, y, per_sample=None, batch_size=None) -> MethodResult:
    return simulate(snn, x, y, sample_shape=tuple(x.shape[1:]),
                    batch_size=batch_size or len(x), device=CPU, memory_budget_mb=64,
                    per_sample=per_sample)


def _summary(result: MethodResult) -> dict:
    return result.model_dump(exclude={"seconds", "early_exit"})


# x into θ = 1, reset by subtraction; class 0 receives the spikes, class 1 a constant 0.375
# per step.  Sample a (x = 0.5) fires at t = 2, 4, 6: O(t) = (⌊t/2⌋, 0.375·t), so
# m(t) = |⌊t/2⌋ − 0.375·t| / t = .375 .125 .0417 .125 .025 .125 and its prediction is
# 1 0 1 0 0 0 (label 0).  Sample b (x = 1) fires every step: O(t) = (t, 0.375·t), m = .625,
# always class 0.  Each spike drives one synapse (the class-1 weight is 0), the input layer
# is analog (its one MAC counted once): SOPs up to t are a 0 1 1 2 2 3, b 1 2 3 4 5 6.
HAND_MODULES = [linear_layer([[1.0]]), nn.ReLU(), linear_layer([[1.0], [0.0]], bias=[0.0, 0.375])]
HAND_X, HAND_Y = np.array([[0.5], [1.0]], np.float32), np.array([0, 0])


def _hand_snn() -> SpikingNetwork:
    return hand_built_snn(HAND_MODULES, {"1": IFNeuron(1.0)}, steps=6)


def test_the_margins_predictions_and_sops_per_sample_by_hand():
    collector = TraceCollector()
    result = _run(_hand_snn(), HAND_X, HAND_Y, per_sample=collector)
    got = collector.joined()
    assert got.prediction.T.tolist() == [[1, 0, 1, 0, 0, 0], [0] * 6]
    assert got.margin[:, 0] == pytest.approx([.375, .125, .125 / 3, .125, .025, .125])
    assert got.margin[:, 1] == pytest.approx([.625] * 6)
    assert got.sops.T.tolist() == [[0, 1, 1, 2, 2, 3], [1, 2, 3, 4, 5, 6]]
    e_mac, e_ac = PROFILES[DEFAULT_PROFILE].e_mac_pj, PROFILES[DEFAULT_PROFILE].e_ac_pj
    assert got.energy_uj[:, 1] == pytest.approx([(e_mac + e_ac * s) * 1e-6
                                                 for s in range(1, 7)])
    assert result.sops == [0.5, 1.5, 2.0, 3.0, 3.5, 4.5]  # the two samples' mean


def test_exits_accuracy_steps_and_sops_at_each_threshold_by_hand():
    counter = ExitCounter([0.3, 0.5, 0.7, None])
    _run(_hand_snn(), HAND_X, HAND_Y, per_sample=counter)
    counts = counter.counts
    # τ = .3: a exits at t = 1 (m .375, class 1: wrong), b at 1      → 1 correct, 1 + 1 steps
    # τ = .5: a never reaches it (6 steps, 3 SOPs, right), b at t = 1 → 2 correct, 6 + 1 steps
    # τ = .7 and ∞: both read at T = 6                               → 2 correct, 12 steps
    assert counts.samples == 2
    assert counts.correct == [1, 2, 2, 2]
    assert counts.steps == [2, 7, 12, 12]
    assert counts.sops == [0 + 1, 3 + 1, 3 + 6, 3 + 6]


def test_the_readout_at_every_t_is_the_same_with_and_without_per_sample_counts():
    plain = _run(_hand_snn(), HAND_X, HAND_Y)
    counted = _run(_hand_snn(), HAND_X, HAND_Y, per_sample=ExitCounter([0.5]))
    assert _summary(counted) == _summary(plain)


def _pooled_cnn() -> SpikingNetwork:
    generator = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    readout = nn.Linear(3 * 3 * 3, 4)
    with torch.no_grad():
        for layer in (conv, readout):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.zero_()
    modules = [conv, nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), readout]
    return hand_built_snn(modules, {"1": IFNeuron(0.6)}, steps=7)


def _asg_mlp() -> SpikingNetwork:
    generator = torch.Generator().manual_seed(4)
    modules = [linear_layer(torch.rand(5, 4, generator=generator).tolist()), CQActivation(1.0, 4),
               linear_layer(torch.randn(3, 5, generator=generator).tolist())]
    reference = trace(nn.Sequential(*modules)).eval()
    network = trace(reference)
    network.add_submodule("1", ASGNeuron(1.0, 4))
    network.recompile()
    return SpikingNetwork(method="test", network=network.eval(), reference=reference,
                          encoder=DirectEncoder(), timesteps=4,
                          latency=Latency(window=4, end_to_end_steps=8, anytime=False),
                          mode="asg")


@pytest.mark.parametrize("make, shape", [(_pooled_cnn, (6, 6)), (_asg_mlp, (4,))],
                         ids=["if-pooled", "asg"])
def test_per_sample_sops_add_up_to_the_simulators_and_change_nothing(make, shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(10, *((1, *shape) if len(shape) == 2 else shape), generator=generator)
    x = x.numpy()
    y = np.arange(10) % 3
    plain = _run(make(), x, y, batch_size=4)
    collector = TraceCollector()
    counted = _run(make(), x, y, per_sample=collector, batch_size=4)  # three batches
    assert _summary(counted) == _summary(plain)
    got = collector.joined()
    assert got.sops.shape == (len(plain.top1), 10)
    assert got.sops.sum(1) / 10 == pytest.approx(plain.sops, rel=1e-12)
    assert got.energy_uj.sum(1) / 10 == pytest.approx(plain.energy_uj, rel=1e-12)
    assert got.sops[-1].sum() > 0  # the spikes did reach a synaptic layer
    # the per-sample predictions are the readout the accuracy per t counts
    assert (got.prediction == got.labels).mean(1).tolist() == pytest.approx(plain.top1)


def test_the_threshold_grid_holds_margins_that_occur_without_repeats_then_never():
    margin = np.array([[0.5, 2.0, np.inf], [1.0, 3.0, 0.25]], np.float32)
    thresholds = candidate_thresholds(margin)
    assert thresholds[-1] is None
    finite = thresholds[:-1]
    assert finite == sorted(set(finite)) and set(finite) <= {0.25, 0.5, 1.0, 2.0, 3.0}
    assert finite[0] == 0.25  # the 0-quantile: every sample exits at t = 1
    assert candidate_thresholds(np.ones((3, 2), np.float32)) == [1.0, None]


def _calibration(correct: list[int], steps: list[int], tolerance: float,
                 samples: int = 200) -> ExitCalibration:
    zeros = [0.0] * len(correct)
    counts = ExitCounts(samples=samples, correct=correct, steps=steps, sops=zeros,
                        energy_uj=zeros)
    return ExitCalibration(thresholds=[0.1 * (i + 1) for i in range(len(correct) - 1)] + [None],
                           counts=counts, tolerance=tolerance)


def _test_counts(samples: int = 100) -> ExitCounts:
    return ExitCounts(samples=samples, correct=[80, 95, 96, 97], steps=[100, 200, 300, 400],
                      sops=[1e3, 2e3, 3e3, 4e3], energy_uj=[1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("tolerance, chosen", [(0.005, 2), (0.02, 1), (0.0, 3), (0.5, 0)])
def test_the_operating_point_is_the_fewest_calibration_steps_within_the_tolerance(
        tolerance, chosen):
    # calibration top-1 90, 97, 98.5, 99 % (τ = ∞) at 1, 2, 3, 4 mean steps: 0.5 pp below
    # 99 % allows 98.5 % exactly (197/200), 2 pp allows 97 %, none only τ = ∞
    calibration = _calibration([180, 194, 197, 198], [200, 400, 600, 800], tolerance)
    early = summarise(calibration, _test_counts())
    assert early.chosen == chosen
    point = early.operating_point
    assert point.calib_mean_steps == chosen + 1 and point.mean_steps == chosen + 1
    assert point.top1 == [0.80, 0.95, 0.96, 0.97][chosen]
    assert point.sops == 10.0 * (chosen + 1) and early.calib_samples == 200
    assert early.points[-1].threshold is None


def test_equal_steps_go_to_the_higher_calibration_top1():
    early = summarise(_calibration([190, 196, 197, 198], [200, 200, 600, 800], 0.05),
                      _test_counts())
    assert early.chosen == 1


def _exit_result(top1_at_t: list[float], calibration: ExitCalibration,
                 counts: ExitCounts) -> MethodResult:
    sops = [100.0 * t for t in range(1, len(top1_at_t) + 1)]
    steps = len(top1_at_t)
    return MethodResult(method="robust-norm", top1=top1_at_t, top5=top1_at_t,
                        agreement=top1_at_t, sops=sops, energy_uj=sops,
                        latency=Latency(window=steps, end_to_end_steps=steps, anytime=True),
                        layers=[], early_exit=summarise(calibration, counts))


def test_choice_of_t_gets_the_early_exit_point_chosen_on_the_calibration_images():
    calibration = _calibration([180, 194, 197, 198], [200, 400, 600, 800], 0.005)
    result = _exit_result([0.5, 0.9, 0.96, 0.97], calibration, _test_counts())
    # target 95 %: the test top-1 at T (97 %) is 2 pp above it, so the calibration top-1 may
    # fall 2 pp below its 99 % at τ = ∞: 97 % at 2 mean steps (test: 95 % at 2 steps)
    choice = choose_latency([result], ann_top1=0.98, target_accuracy=0.95, max_gap=None)
    (method,) = choice.methods
    assert method.t == 3
    assert method.early_exit.mean_steps == 2 and method.early_exit.top1 == 0.95
    assert "early exit: 2.00 mean steps  top-1  95.00 %" in "\n".join(choice_lines(choice))
    # a target above the test top-1 at T: no early-exit point either
    above = choose_latency([result], ann_top1=0.98, target_accuracy=0.975, max_gap=None)
    assert above.methods[0].t is None and above.methods[0].early_exit is None


def test_the_cli_line_states_the_operating_point_against_t():
    calibration = _calibration([180, 194, 197, 198], [200, 400, 600, 800], 0.02)
    result = _exit_result([0.5, 0.9, 0.96, 0.97], calibration, _test_counts())
    (line,) = early_exit_lines(result)
    # chosen: the second point, τ = 0.2: 95 % at 2 mean steps, 2000 of 4000 SOPs at T
    assert line == ("  robust-norm      τ = 0.2: 95.00 % at 2.00 mean steps (T = 4: 97.00 %), "
                    "50 % of the SOPs")


def _random_mlp() -> SpikingNetwork:
    generator = torch.Generator().manual_seed(0)
    modules = [linear_layer(torch.randn(6, 4, generator=generator).tolist()), nn.ReLU(),
               linear_layer(torch.randn(5, 6, generator=generator).tolist()), nn.ReLU(),
               linear_layer(torch.randn(3, 5, generator=generator).tolist())]
    return hand_built_snn(modules, {"1": IFNeuron(0.7), "3": IFNeuron(0.9)}, steps=8)


def _with_exit(snn, x, y, calibration: ExitCalibration) -> MethodResult:
    counter = ExitCounter(calibration.thresholds)
    result = _run(snn, x, y, per_sample=counter, batch_size=10)
    result.early_exit = summarise(calibration, counter.counts)
    return result


def test_slices_merge_into_the_early_exit_of_the_whole_split():
    snn = _random_mlp()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(60, 4, generator=generator).numpy()
    y = np.asarray(snn.reference(torch.from_numpy(x)).argmax(1))
    collector = TraceCollector()
    _run(snn, x[:20], y[:20], per_sample=collector)  # the calibration images
    calibration = calibrate(collector.joined(), tolerance=0.01)
    assert len(calibration.thresholds) > 3  # a real grid, not only τ = ∞
    whole = _with_exit(snn, x[20:], y[20:], calibration)
    parts = [to_shard(_with_exit(snn, x[a:b], y[a:b], calibration), b - a)
             for a, b in ((20, 40), (40, 60))]
    merged = merge_method(parts).early_exit
    expected = whole.early_exit
    assert merged.chosen == expected.chosen
    for ours, theirs in zip(merged.points, expected.points, strict=True):
        exact = ("threshold", "calib_top1", "calib_mean_steps", "top1", "mean_steps")
        assert ours.model_dump(include=set(exact)) == theirs.model_dump(include=set(exact))
        assert ours.sops == pytest.approx(theirs.sops, rel=1e-12)
        assert ours.energy_uj == pytest.approx(theirs.energy_uj, rel=1e-12)
    # the whole split at τ = ∞ is the plain readout at T
    assert expected.points[-1].top1 == whole.top1[-1] and expected.points[-1].mean_steps == 8
    other = calibration.model_copy(update={"thresholds": [0.123] + calibration.thresholds[1:]})
    with pytest.raises(ValueError, match="different thresholds"):
        merge_method([parts[0], to_shard(_with_exit(snn, x[40:], y[40:], other), 20)])


def test_a_trace_of_no_finite_margin_only_reads_at_t():
    empty = BatchTrace(prediction=np.zeros((2, 1), int), margin=np.full((2, 1), np.inf),
                       sops=np.zeros((2, 1)), energy_uj=np.zeros((2, 1)), labels=np.zeros(1))
    assert candidate_thresholds(empty.margin) == [None]
    assert count_exits(empty, [None]).steps == [2]


@pytest.mark.parametrize("tolerance", [-0.01, 1.0, float("nan")])
def test_the_spec_refuses_a_tolerance_outside_fractions(tmp_path, tolerance):
    with pytest.raises(ValidationError):
        JobSpec(model_path=tmp_path / "m.onnx", early_exit=True, early_exit_tolerance=tolerance)


def test_calibrating_leaves_a_poisson_stream_where_it_was(digits_onnx):
    spec = JobSpec(model_path=digits_onnx, dataset="digits", methods=["robust-norm"],
                   timesteps=4, eval_samples=100, calib_samples=50, batch_size=50,
                   device="cpu", input_encoding="poisson")
    plain = pipeline.run(spec).methods[0]
    early = pipeline.run(spec.model_copy(update={"early_exit": True})).methods[0]
    assert early.top1 == plain.top1 and early.sops == plain.sops
    assert early.early_exit.points[-1].top1 == plain.top1[-1]
    assert early.early_exit.calib_samples == 50


def test_shared_networks_and_shards_give_the_unsharded_early_exit(digits_onnx, tmp_path):
    spec = JobSpec(model_path=digits_onnx, dataset="digits", methods=["robust-norm", "cq-asg"],
                   timesteps=4, eval_samples=200, calib_samples=100, batch_size=50,
                   device="cpu", cq={"finetune_epochs": 1}, early_exit=True)
    direct = pipeline.run_into(spec, tmp_path / "direct")
    plan = pipeline.share_networks(spec, tmp_path / "sharded", shard_size=100)
    for index in range(len(plan.bounds)):
        pipeline.evaluate_shard(plan.directory, index)
    report = pipeline.merge_shards_into(tmp_path / "sharded")
    for ours, theirs in zip(report.methods, direct.methods, strict=True):
        assert ours.early_exit.chosen == theirs.early_exit.chosen
        assert [(p.threshold, p.top1, p.mean_steps) for p in ours.early_exit.points] == [
            (p.threshold, p.top1, p.mean_steps) for p in theirs.early_exit.points]
    assert (tmp_path / "sharded" / EARLY_EXIT_CSV).read_text() == (
        tmp_path / "direct" / EARLY_EXIT_CSV).read_text()


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_gets_early_exit_in_the_report_the_output_and_the_plot(
        capsys, tmp_path, exporter):
    model = export_trained_digits_mlp(tmp_path, exporter)
    out = tmp_path / "out"
    assert cli.main(["convert", str(model), "--quiet", "--dataset", "digits", "--method",
                     "robust-norm", "--timesteps", "8", "--eval-samples", "300",
                     "--early-exit", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = Report.model_validate(json.loads((out / "report.json").read_text()))
    (method,) = report.methods
    early = method.early_exit
    never = early.points[-1]
    # τ = ∞ reads every sample at T: the method's own top-1, SOPs and energy at T
    assert never.threshold is None and never.mean_steps == 8
    assert never.top1 == method.top1[-1]
    assert never.sops == pytest.approx(method.sops[-1]) and never.energy_uj == pytest.approx(
        method.energy_uj[-1])
    assert all(1 <= p.mean_steps <= 8 for p in early.points)
    # a higher τ never exits sooner
    assert [p.mean_steps for p in early.points] == sorted(p.mean_steps for p in early.points)
    point = early.operating_point
    assert point.calib_top1 >= never.calib_top1 - early.tolerance - 1e-12
    assert point.mean_steps < 8  # the trained MLP is decided early for most images
    assert early.calib_samples == 1000 and report.spec["early_exit"] is True
    assert early_exit_lines(method)[0] in printed
    assert f"{point.mean_steps:.2f} mean steps (T = 8: {100 * method.top1[-1]:.2f} %)" in printed
    rows = list(csv.DictReader(io.StringIO((out / EARLY_EXIT_CSV).read_text())))
    assert len(rows) == len(early.points)
    assert [int(row["chosen"]) for row in rows].index(1) == early.chosen
    assert "early exit" in (out / "accuracy.svg").read_text()
    assert EARLY_EXIT_CSV in printed
