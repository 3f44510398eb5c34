"""Benchmark 4: accuracy against latency for the classic methods, and the energy estimate.

One ``core.pipeline.run`` job with the four classic methods reports top-1 after every
t ≤ T.  For each method we find the first t at which it reaches the ANN's accuracy minus one
percentage point and read the report's synaptic operations and energy at that t.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_common import ARCH, DATASET, Sizes
from benchmarks.common import markdown_table
from core.pipeline import run as run_job
from core.report import Report, checkpoints
from core.spec import CLASSIC_METHODS, JobSpec

TOLERANCE = 0.01  # one percentage point below the ANN


@dataclass
class LatencyRow:
    method: str
    top1: list[float]
    steps_to_target: int | None
    sops: float | None
    energy_uj: float | None


def first_step_reaching(top1: list[float], target: float) -> int | None:
    """The smallest t (1-based) with top1[t-1] ≥ target, or None."""
    return next((t for t, value in enumerate(top1, 1) if value >= target - 1e-12), None)


def rows_from(report: Report) -> list[LatencyRow]:
    target = report.ann.top1 - TOLERANCE
    rows = []
    for result in report.methods:
        t = first_step_reaching(result.top1, target)
        rows.append(LatencyRow(method=result.method, top1=result.top1, steps_to_target=t,
                               sops=result.sops[t - 1] if t else None,
                               energy_uj=result.energy_uj[t - 1] if t else None))
    return rows


def run(model_path: Path, sizes: Sizes, log=print) -> Report:
    spec = JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET,
                   methods=list(CLASSIC_METHODS), timesteps=sizes.latency_steps,
                   eval_samples=sizes.latency_eval_samples,
                   calib_samples=sizes.calib_samples, device="cpu")
    report = run_job(spec)
    log(f"  latency job: {report.seconds:.1f} s")
    return report


def table(report: Report) -> str:
    steps = len(report.methods[0].top1)
    shown = [t for t in checkpoints(steps) if t >= 4] or [steps]
    header = ["method"] + [f"t={t}" for t in shown] + \
        ["t at ANN − 1 pp", "SOPs/sample there", "energy there (µJ)", "÷ ANN energy"]
    body = []
    for row in rows_from(report):
        cells = [f"{100 * row.top1[t - 1]:.1f}" for t in shown]
        if row.steps_to_target is None:
            cells += [f"not within {steps}", "–", "–", "–"]
        else:
            cells += [str(row.steps_to_target), f"{row.sops:,.0f}", f"{row.energy_uj:.3f}",
                      f"{row.energy_uj / report.ann.energy_uj:.2f}"]
        body.append([row.method] + cells)
    ann = report.ann
    note = (f"Top-1 (%) after t steps; {report.dataset.eval_samples} test images of "
            f"{report.dataset.name}, {ARCH}, direct input. ANN: top-1 {100 * ann.top1:.1f} %, "
            f"{ann.macs:,} MACs, {ann.energy_uj:.3f} µJ per sample. Energy: "
            f"E_MAC = {report.energy_model.e_mac_pj} pJ, E_AC = {report.energy_model.e_ac_pj} "
            f"pJ ({report.energy_model.source}); the first layer's MACs are counted once "
            "(direct input).")
    return markdown_table(header, body) + "\n\n" + note


def plot(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for result in report.methods:
        ax.plot(range(1, len(result.top1) + 1), [100 * v for v in result.top1],
                label=result.method)
    ax.axhline(100 * report.ann.top1, color="black", lw=0.8, ls="--", label="ANN")
    ax.axhline(100 * (report.ann.top1 - TOLERANCE), color="grey", lw=0.8, ls=":",
               label="ANN − 1 pp")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time steps t")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Accuracy vs latency, {ARCH} / {report.dataset.name}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
