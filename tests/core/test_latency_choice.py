"""Choice of T: hand-computed curves, then a user's exported model through the CLI.

The oracle for the end-to-end case is the report's own curves read again by the test: the
smallest t whose top-1 reaches the target, and its end-to-end latency from the method's
latency record.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from core import cli
from core.latency_choice import choose_latency
from core.report import Latency, MethodResult, Report
from core.spec import JobSpec
from tests.conftest import USER_EXPORTERS, export_trained_digits_mlp


def _result(method: str, top1: list[float], window: int, end_to_end: int,
            sops: list[float] | None = None) -> MethodResult:
    steps = len(top1)
    sops = sops or [100.0 * t for t in range(1, steps + 1)]
    return MethodResult(method=method, top1=top1, top5=top1, agreement=top1, sops=sops,
                        energy_uj=[s * 1e-6 for s in sops],
                        latency=Latency(window=window, end_to_end_steps=end_to_end,
                                        anytime=window == end_to_end), layers=[])


IF_8 = _result("robust-norm", [0.1, 0.5, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96], 8, 8)
ASG_4 = _result("cq-asg", [0.96, 0.97, 0.97, 0.97], 4, 12)  # depth 3 × T 4


def test_the_soonest_end_to_end_wins_not_the_smallest_t():
    choice = choose_latency([IF_8, ASG_4], ann_top1=0.98, target_accuracy=0.95, max_gap=None)
    by_method = {c.method: c for c in choice.methods}
    assert (by_method["robust-norm"].t, by_method["robust-norm"].end_to_end_steps) == (4, 4)
    # the ASG network meets the target at its window's first step, read after 8 + 1 steps
    assert (by_method["cq-asg"].t, by_method["cq-asg"].end_to_end_steps) == (1, 9)
    assert choice.recommended == "robust-norm"
    assert by_method["robust-norm"].sops == 400.0 and by_method["robust-norm"].top1 == 0.95
    assert choice.target_top1 == 0.95


def test_a_gap_to_the_ann_sets_the_target_and_a_method_may_never_meet_it():
    choice = choose_latency([IF_8, ASG_4], ann_top1=0.98, target_accuracy=None, max_gap=0.01)
    assert choice.target_top1 == pytest.approx(0.97)
    by_method = {c.method: c for c in choice.methods}
    assert by_method["robust-norm"].t is None and by_method["robust-norm"].end_to_end_steps is None
    assert (by_method["cq-asg"].t, by_method["cq-asg"].end_to_end_steps) == (2, 10)
    assert choice.recommended == "cq-asg"
    assert "gap of 1.00 pp" in choice.basis


def test_no_method_meeting_the_target_recommends_none():
    choice = choose_latency([IF_8], ann_top1=0.98, target_accuracy=0.99, max_gap=None)
    assert choice.recommended is None and choice.methods[0].t is None
    assert "no method reaches 99.00 %" in choice.reason


def test_equal_latency_goes_to_fewer_synaptic_operations():
    a = _result("max-norm", [0.5, 0.97], 2, 2, sops=[10.0, 900.0])
    b = _result("channel-norm", [0.5, 0.97], 2, 2, sops=[10.0, 300.0])
    choice = choose_latency([a, b], ann_top1=0.98, target_accuracy=0.97, max_gap=None)
    assert choice.recommended == "channel-norm"


def test_no_target_no_choice():
    assert choose_latency([IF_8], 0.98, None, None) is None


@pytest.mark.parametrize("options", [{"target_accuracy": 0.9, "max_gap": 0.01},
                                     {"target_accuracy": 1.5}, {"target_accuracy": 0.0},
                                     {"max_gap": -0.1}, {"max_gap": 1.0}])
def test_the_spec_refuses_two_targets_and_values_outside_fractions(tmp_path, options):
    with pytest.raises(ValidationError):
        JobSpec(model_path=tmp_path / "m.onnx", **options)


@pytest.mark.parametrize("exporter", USER_EXPORTERS)
def test_a_users_export_gets_its_choice_in_the_report_the_table_and_the_plot(
        capsys, tmp_path, exporter):
    model = export_trained_digits_mlp(tmp_path, exporter)
    out = tmp_path / "out"
    status = cli.main(["convert", str(model), "--quiet", "--dataset", "digits", "--method",
                       "robust-norm,max-norm", "--timesteps", "16", "--eval-samples", "200",
                       "--max-gap", "0.05", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    report = Report.model_validate(json.loads((out / "report.json").read_text()))
    choice = report.latency_choice
    target = report.ann.top1 - 0.05
    assert choice.target_top1 == pytest.approx(target)
    for method, chosen in zip(report.methods, choice.methods, strict=True):
        expected = next((t for t, a in enumerate(method.top1, 1) if a >= target - 1e-12), None)
        assert chosen.t == expected
        if expected is not None:
            assert chosen.end_to_end_steps == expected  # IF networks: anytime
            assert f"{method.method:<16} t = {expected:<4}" in printed
    assert choice.recommended in {"robust-norm", "max-norm", None}
    assert f"recommended: {choice.recommended or 'none'}" in printed
    assert "target" in (out / "accuracy.svg").read_text()  # the target line's legend entry
