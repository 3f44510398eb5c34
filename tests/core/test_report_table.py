"""The printed accuracy table: neuron classes kept apart, and every cell equal to the report."""

from __future__ import annotations

import pytest

from core.report import NEURON_CLASSES, accuracy_table, checkpoints
from core.spec import CLASSIC_METHODS
from tests.core.report_fixtures import ANN_ENERGY_UJ, columns, make_report, parse_table

IF_HEADING, ASG_HEADING = (heading for _, heading in NEURON_CLASSES)
POINTS = [1, 2, 4, 8, 16, 32]


def _classic_and_suite():
    return (make_report(list(CLASSIC_METHODS), 32), make_report(["cq-asg", "cq-ctt"], 4))


def _expected_cells(result, points):
    cells = {"T": str(result.latency.window),
             "latency": str(result.latency.end_to_end_steps),
             "µJ at T": f"{result.energy_uj[-1]:.3f}",
             "vs ANN": f"{result.energy_uj[-1] / ANN_ENERGY_UJ:.2f}×"}
    for t in points:
        cells[f"t={t}"] = f"{100 * result.top1[t - 1]:.2f}" if t <= len(result.top1) else ""
    return cells


def test_checkpoints_double_up_to_t():
    assert checkpoints(32) == POINTS
    assert checkpoints(4) == [1, 2, 4]
    assert checkpoints(6) == [1, 2, 4, 6]


def test_combined_table_cells_equal_the_reports_numbers():
    classic, suite = _classic_and_suite()
    table = accuracy_table(classic, suite)
    rows, _ = parse_table(table, columns(POINTS))
    results = [*classic.methods, *suite.methods]
    assert sorted(rows) == sorted(result.method for result in results)
    for result in results:
        assert rows[result.method] == _expected_cells(result, POINTS), result.method


def test_combined_table_groups_rows_by_neuron_class():
    classic, suite = _classic_and_suite()
    table = accuracy_table(classic, suite)
    _, groups = parse_table(table, columns(POINTS))
    assert groups["cq-asg"] == ASG_HEADING
    for method in (*CLASSIC_METHODS, "cq-ctt"):
        assert groups[method] == IF_HEADING, method
    assert table.index(IF_HEADING) < table.index(ASG_HEADING)
    assert "depth × T" in ASG_HEADING and "not anytime" in ASG_HEADING
    assert "anytime" in IF_HEADING and "latency = T" in IF_HEADING


def test_table_states_the_anns_accuracy_and_energy():
    classic, suite = _classic_and_suite()
    first = accuracy_table(classic, suite).splitlines()[0]
    assert first.startswith("ANN top-1: 97.10 % on 1000 mnist-5k test images")
    assert f"energy {ANN_ENERGY_UJ:.3f} µJ per image" in first
    assert "961,280 MACs" in first


def test_single_report_still_makes_a_table():
    report = make_report(["robust-norm", "half-threshold"], 8)
    table = accuracy_table(report)
    rows, groups = parse_table(table, columns([1, 2, 4, 8]))
    assert set(rows) == {"robust-norm", "half-threshold"}
    for result in report.methods:
        assert rows[result.method] == _expected_cells(result, [1, 2, 4, 8])
    assert set(groups.values()) == {IF_HEADING}
    assert ASG_HEADING not in table


def test_single_report_with_both_neuron_classes():
    report = make_report(["cq-if", "cq-asg"], 4)
    rows, groups = parse_table(accuracy_table(report), columns([1, 2, 4]))
    assert groups == {"cq-if": IF_HEADING, "cq-asg": ASG_HEADING}
    assert rows["cq-asg"]["latency"] == "12" and rows["cq-if"]["latency"] == "4"


@pytest.mark.parametrize("other", [
    {"ann_top1": 0.5}, {"dataset": "digits"}, {"samples": 10},
])
def test_reports_on_different_anns_or_images_are_refused(other):
    classic = make_report(list(CLASSIC_METHODS), 32)
    with pytest.raises(ValueError, match="same ANN"):
        accuracy_table(classic, make_report(["cq-asg"], 4, **other))


def test_no_report_is_refused():
    with pytest.raises(ValueError):
        accuracy_table()
