"""Helpers for the table and demo tests: small, hand-made reports and a parser of the table."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from core.report import (
    AnnResult,
    DatasetInfo,
    EnergyModel,
    Latency,
    MethodResult,
    Report,
)

ANN_ENERGY_UJ = 4.422


def method_result(method: str, steps: int, *, depth: int = 3, offset: float = 0.0
                  ) -> MethodResult:
    """A result whose numbers differ per method and per t; cq-asg is accumulate-then-spike."""
    asg = method == "cq-asg"
    top1 = [min(0.9 + offset, 0.1 + offset + 0.8 * t / steps) for t in range(1, steps + 1)]
    energy = [0.0123 * t + offset for t in range(1, steps + 1)]
    latency = (Latency(window=steps, end_to_end_steps=depth * steps, anytime=False) if asg
               else Latency(window=steps, end_to_end_steps=steps, anytime=True))
    return MethodResult(method=method, top1=top1, top5=top1, agreement=top1,
                        sops=[1000.0 * t for t in range(1, steps + 1)], energy_uj=energy,
                        latency=latency, layers=[])


def make_report(methods: list[str], steps: int, *, ann_top1: float = 0.971,
                dataset: str = "mnist-5k", samples: int = 1000) -> Report:
    results = [method_result(method, steps, offset=0.001 * index)
               for index, method in enumerate(methods)]
    return Report(
        snnconv_version="test", created_at=datetime(2024, 1, 1, tzinfo=UTC),
        spec={"methods": methods, "timesteps": steps}, device="cpu",
        dataset=DatasetInfo(name=dataset, eval_samples=samples, calib_samples=10,
                            input_shape=[1, 28, 28], num_classes=10),
        ann=AnnResult(top1=ann_top1, top5=0.999, macs=961_280, energy_uj=ANN_ENERGY_UJ),
        methods=results, energy_model=EnergyModel())


def columns(points: list[int]) -> list[str]:
    """The table's column labels after "method" for checkpoints ``points``."""
    return ["T", *(f"t={t}" for t in points), "latency", "µJ at T", "vs ANN"]


def parse_table(table: str, labels: list[str]) -> tuple[dict[str, dict[str, str]], dict]:
    """(method → {label → cell}, method → the neuron-class heading above its row).

    Every column is right-aligned under its label, so a cell ends where its label ends.
    Rows are the lines ending in a "vs ANN" ratio such as "0.60×"; other lines between the
    two rules are headings (an indented line continues the heading above it).
    """
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    ends, position = [], len("method")
    for label in labels:
        position = header.index(label, position) + len(label)
        ends.append(position)
    assert header[ends[-1]:] == "", "the header has columns the test does not know"
    rows, groups, heading = {}, {}, ""
    rule = lines.index(header) + 1
    assert set(lines[rule]) == {"-"}
    for line in lines[rule + 1:]:
        if set(line) == {"-"}:
            break
        if not re.search(r"\d\.\d\d×$", line):
            heading = heading + "\n" + line if line.startswith(" ") else line
            continue
        method = line.split()[0]
        cells, start = {}, len(method)
        for label, end in zip(labels, ends, strict=True):
            cells[label] = line[start:end].strip()
            start = end
        assert line[start:] == ""
        rows[method], groups[method] = cells, heading
    return rows, groups
