"""The report files: the listed names, a JSON document that reads back as the same Report,
CSV rows equal to the accuracies per t, figures that are what they say, nothing about where
they were written."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from core.report import (
    REPORT_FILES,
    LayerStats,
    ModelInfo,
    Report,
    report_csv,
    write_report_files,
)
from tests.core.report_fixtures import make_report

CSV_COLUMNS = ["method", "neuron_class", "t", "end_to_end_steps", "top1", "top5", "agreement",
               "sops", "energy_uj", "ann_top1"]


@pytest.fixture
def report() -> Report:
    """Two methods of different T, one with layer statistics and model information."""
    report = make_report(["robust-norm", "cq-asg"], 8)
    report.methods[0].top1 = [t / 9 for t in range(1, 9)]  # not round at any few decimals
    report.methods[1].top1 = report.methods[1].top1[:4]  # cq-asg ran at T = 4
    for field in ("top5", "agreement", "sops", "energy_uj"):
        setattr(report.methods[1], field, getattr(report.methods[1], field)[:4])
    report.methods[0].layers = [LayerStats(
        name="relu1", kind="if", channels=16, threshold_mean=1.25, threshold_min=0.5,
        threshold_max=2.0, firing_rate=0.125, saturated_fraction=0.001, silent_fraction=0.25,
        rate_error=0.0123456789)]
    report.model = ModelInfo(format="onnx", detected={"cq": False},
                             defaults={"timesteps": "classic methods: 32"})
    report.created_at = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    report.artifacts = ["cq_model.onnx"]
    return report


def test_the_listed_files_are_written_and_returned(report, tmp_path):
    out = tmp_path / "results" / "job-1"  # made if missing
    files = write_report_files(report, out)
    assert list(files) == list(REPORT_FILES)
    assert files == {name: out / name for name in REPORT_FILES}
    assert sorted(path.name for path in out.iterdir()) == sorted(REPORT_FILES)  # no temp files
    assert all(path.stat().st_size > 0 for path in files.values())


def test_json_reads_back_as_the_same_report(report, tmp_path):
    files = write_report_files(report, tmp_path)
    text = files["report.json"].read_text()
    assert Report.model_validate_json(text) == report
    document = json.loads(text)  # the stable contract, as an outside reader sees it
    assert document["ann"]["top1"] == report.ann.top1
    assert [m["method"] for m in document["methods"]] == ["robust-norm", "cq-asg"]
    assert [len(m["top1"]) for m in document["methods"]] == [8, 4]
    assert document["methods"][0]["top1"] == report.methods[0].top1


def test_csv_has_one_row_per_method_and_t_with_its_accuracies(report, tmp_path):
    text = write_report_files(report, tmp_path)["report.csv"].read_text()
    assert text == report_csv(report)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_COLUMNS
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    expected = [(result, t) for result in report.methods
                for t in range(1, len(result.top1) + 1)]
    assert len(records) == len(expected) == 12
    for record, (result, t) in zip(records, expected, strict=True):
        assert (record["method"], int(record["t"])) == (result.method, t)
        # what t means: an IF readout after t steps; an ASG one after the earlier layers'
        # windows as well (the fixture's cq-asg: depth 3, window 8)
        asg = result.method == "cq-asg"
        assert record["neuron_class"] == ("asg" if asg else "if")
        assert int(record["end_to_end_steps"]) == (16 + t if asg else t)
        for column in ("top1", "top5", "agreement", "energy_uj"):
            assert float(record[column]) == pytest.approx(getattr(result, column)[t - 1],
                                                          abs=5e-7)
        assert float(record["sops"]) == pytest.approx(result.sops[t - 1], abs=0.05)
        assert float(record["ann_top1"]) == pytest.approx(report.ann.top1, abs=5e-7)


def _svg_texts(svg: str) -> list[str]:
    """Matplotlib draws text as paths and writes each string beside it as a comment."""
    return re.findall(r"<!-- (.*?) -->", svg)


def test_figures_are_an_svg_document_and_a_png_image(report, tmp_path):
    files = write_report_files(report, tmp_path)
    svg = files["accuracy.svg"].read_text()
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    texts = _svg_texts(svg)
    # one line per method; the ASG one says when its t is read
    assert {"robust-norm", "cq-asg (ASG: read 16 + t steps after the input)",
            "ANN 97.10 %"} <= set(texts)
    assert [str(t) for t in range(1, 9)] == texts[:8]  # t = 1 … 8 on a linear axis
    assert files["accuracy.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_file_depends_on_where_it_was_written(report, tmp_path):
    first = write_report_files(report, tmp_path / "srv" / "snnconv" / "results" / "a")
    second = write_report_files(report, tmp_path / "elsewhere")
    for name in REPORT_FILES:
        data, again = first[name].read_bytes(), second[name].read_bytes()
        if name.endswith(".svg"):  # marker and clip-path ids are random per drawing
            data, again = (re.sub(rb"\b[mp][0-9a-f]{10}\b", b"id", d) for d in (data, again))
        assert data == again, name  # no path, no date of writing
        assert str(tmp_path).encode() not in data and b"/srv/snnconv" not in data, name
