"""Smoke test of the benchmark harness: every benchmark runs at tiny sizes and the page
it writes has each section, a table per section and the plots it links to."""

from __future__ import annotations

import re

import pytest

from benchmarks import bench_latency
from benchmarks.run_all import run

SECTIONS = ("## 1. Simulation throughput", "## 2. Peak memory", "## 3. Where a job's time goes",
            "## 4. Accuracy against latency", "## 5. Peer comparison", "## 6. Simulator speed",
            "## 7. Sharded evaluation")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    run(out, quick=True, workdir=out.parent / "work", log=lambda _message: None)
    return out


def test_page_has_every_section_with_a_table(page):
    text = page.read_text()
    assert text.startswith("# Benchmarks")
    assert "- machine: " in text and "torch " in text and "- command: `" in text
    positions = [text.index(title) for title in SECTIONS]
    assert positions == sorted(positions)
    for start, stop in zip(positions[:-1], positions[1:], strict=True):
        assert "|---|" in text[start:stop]
    assert "Not run in quick mode" in text[positions[-1]:]


def test_speed_section_states_each_target_and_profile(page):
    text = page.read_text()
    section = text[text.index("## 6. Simulator speed"):text.index("## 7. Sharded")]
    for case, target in (("robust-norm", "0.8"), ("cq-asg", "1.2"), ("cq-ctt", "1.2")):
        assert f"- {case}: " in section and f"against ≤ {target}: " in section
    assert section.count("cProfile of one `simulate`") == 3
    assert "Rows (steps × batch) per network call" in section  # the chunk sweep


def test_peer_section_reports_every_configuration_and_cost(page):
    text = page.read_text()
    section = text[text.index("## 5. Peer comparison"):]
    header = next(line for line in section.splitlines() if line.startswith("| configuration"))
    for column in ("t=1", "t=4", "spikes/image", "image·steps/s", "peak MB", "÷ T×ANN"):
        assert f"| {column} |" in header
    rows = {line.split(" | ")[0].removeprefix("| ") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| configuration")}
    assert {"snnconv robust-norm", "snnconv channel-norm", "snnconv cq-asg T=2",
            "snnconv cq-ctt T=2", "snnconv qcfs T=2"} <= rows
    # a peer is either measured or named with the reason it could not run
    for peer in ("SpikingJelly max", "SpikingJelly 99.9%", "SpikingJelly channel-wise 99.9%",
                 "SpikingJelly local threshold balancing", "sinabs from_model"):
        assert peer in rows or f"- **{peer}** could not be run: `" in section
    # the first configuration of each library gets a peak-memory figure in quick mode
    first = next(line for line in section.splitlines()
                 if line.startswith("| snnconv robust-norm |")).split(" | ")
    assert first[header.split(" | ").index("peak MB")] != "–"


def test_linked_plots_exist_and_are_png(page):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text())
    assert len(links) == 3
    for link in links:
        data = (page.parent / link).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_step_reaching_the_target():
    assert bench_latency.first_step_reaching([0.1, 0.5, 0.9, 0.95], 0.9) == 3
    assert bench_latency.first_step_reaching([0.1, 0.5], 0.9) is None


def test_compile_benchmark_checks_the_compiled_if_against_the_neuron():
    from benchmarks import bench_compile

    row = bench_compile.measure(3, (2, 2, 3, 3), repeats=1)
    assert row["T"] == 3 and row["eager_ms"] > 0 and row["compiled_ms"] > 0
