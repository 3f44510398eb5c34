"""`snnconv demo`: the classic methods at T = 32 and the paper's suite at T = 4, side by side."""

from __future__ import annotations

import json

import pytest

import core.demo
import core.pipeline
from core import cli
from core.report import NEURON_CLASSES, REPORT_FILES, accuracy_table
from core.spec import CLASSIC_METHODS
from tests.core.report_fixtures import columns, make_report, parse_table

IF_HEADING, ASG_HEADING = (heading for _, heading in NEURON_CLASSES)
POINTS = [1, 2, 4, 8, 16, 32]


@pytest.fixture
def fake_jobs(monkeypatch, tmp_path):
    """Replaces training and the pipeline: records each JobSpec, returns a hand-made report."""
    specs = []
    model = tmp_path / "model.safetensors"
    monkeypatch.setattr(core.demo, "demo_model", lambda quiet: model)

    def run(spec, progress=None, artifacts_dir=None):
        specs.append(spec)
        return make_report(list(spec.methods), spec.timesteps)

    monkeypatch.setattr(core.pipeline, "run", run)
    return specs, model


def test_demo_runs_classic_and_suite_on_the_same_model_and_images(fake_jobs, tmp_path):
    specs, model = fake_jobs
    core.demo.run_demo(tmp_path / "out", quiet=True)
    classic, suite = specs
    assert classic.methods == list(CLASSIC_METHODS) and classic.timesteps == 32
    assert suite.methods == ["cq-asg", "cq-ctt"] and suite.timesteps == 4
    assert suite.cq.finetune_epochs == core.demo.SUITE_FINETUNE_EPOCHS >= 1
    for field in ("model_path", "arch", "dataset", "seed", "eval_samples", "calib_samples",
                  "device"):
        assert getattr(classic, field) == getattr(suite, field), field
    assert classic.model_path == model


def test_demo_prints_and_writes_the_combined_table(fake_jobs, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["demo", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "table.txt").read_text()
    assert printed.startswith(table)
    reports = []
    for job in ("classic", "suite"):
        for name in REPORT_FILES:
            assert (out / job / name).is_file(), f"{job}/{name}"
            assert f"{job}/ (" in printed
        reports.append(json.loads((out / job / "report.json").read_text()))
    rows, groups = parse_table(table, columns(POINTS))
    for document in reports:
        for method in document["methods"]:
            row = rows[method["method"]]
            for t in POINTS:
                if t <= len(method["top1"]):
                    assert row[f"t={t}"] == f"{100 * method['top1'][t - 1]:.2f}"
            assert row["latency"] == str(method["latency"]["end_to_end_steps"])
            assert row["µJ at T"] == f"{method['energy_uj'][-1]:.3f}"
    assert groups["cq-asg"] == ASG_HEADING and groups["cq-ctt"] == IF_HEADING
    assert "table.txt" in printed


def test_demo_timesteps_set_the_classic_job_only(fake_jobs, tmp_path):
    specs, _ = fake_jobs
    core.demo.run_demo(tmp_path / "out", timesteps=8, quiet=True)
    assert [spec.timesteps for spec in specs] == [8, 4]


@pytest.mark.slow
def test_real_demo_table_matches_its_reports(tmp_path):
    """The real demo (trains the CNN unless cached): both groups, the reports' own numbers."""
    demo = core.demo.run_demo(tmp_path / "out", quiet=True)
    assert demo.table == accuracy_table(*demo.reports)
    assert (tmp_path / "out" / "table.txt").read_text() == demo.table + "\n"
    rows, groups = parse_table(demo.table, columns(POINTS))
    assert groups["cq-asg"] == ASG_HEADING
    assert {groups[m] for m in (*CLASSIC_METHODS, "cq-ctt")} == {IF_HEADING}
    classic = json.loads((tmp_path / "out" / "classic" / "report.json").read_text())
    suite = json.loads((tmp_path / "out" / "suite" / "report.json").read_text())
    assert classic["ann"]["top1"] == suite["ann"]["top1"] > 0.95
    for document in (classic, suite):
        for method in document["methods"]:
            row = rows[method["method"]]
            last = len(method["top1"])
            assert row[f"t={last}"] == f"{100 * method['top1'][-1]:.2f}"
            assert row["µJ at T"] == f"{method['energy_uj'][-1]:.3f}"
    asg = next(m for m in suite["methods"] if m["method"] == "cq-asg")
    assert asg["latency"]["anytime"] is False
    assert asg["latency"]["end_to_end_steps"] > asg["latency"]["window"] == 4
    assert row_energy_below_ann(rows["cq-asg"]) and asg["top1"][-1] > 0.9


def row_energy_below_ann(row: dict[str, str]) -> bool:
    return float(row["vs ANN"].rstrip("×")) < 1
