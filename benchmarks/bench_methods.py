"""Benchmark 3: where one job's time goes, method by method.

One ``core.pipeline.run`` job with all seven methods; its progress events are time-stamped.
A method's time runs from its "convert" event to the next method's (or the report's); its
simulation time is ``MethodResult.seconds``; the rest is conversion (calibration,
fine-tuning, CTT).  Fine-tuning is the time up to the method's last "finetune" event: the
CQ network is trained once per job and cached, so only the first CQ method pays for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_common import ARCH, DATASET, Sizes, median
from benchmarks.common import markdown_table
from core.pipeline import run as run_job
from core.progress import ProgressEvent
from core.spec import CQOptions, JobSpec


@dataclass
class _Clock:
    began: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, ProgressEvent]] = field(default_factory=list)

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append((time.perf_counter() - self.began, event))


@dataclass
class MethodCost:
    method: str
    total: float
    convert: float
    finetune: float
    simulate: float


def _costs(clock: _Clock, simulate_seconds: dict[str, float], end: float) -> list[MethodCost]:
    first_start: dict[str, float] = {}
    for t, event in clock.events:
        if event.stage == "convert" and event.method is not None:
            first_start.setdefault(event.method, t)
    order = sorted(first_start, key=first_start.get)
    costs = []
    for index, method in enumerate(order):
        stop = first_start[order[index + 1]] if index + 1 < len(order) else end
        total = stop - first_start[method]
        tuned = [t for t, e in clock.events if e.method == method and e.stage == "finetune"]
        finetune = max(tuned) - first_start[method] if tuned else 0.0
        simulate = simulate_seconds[method]
        costs.append(MethodCost(method=method, total=total, convert=total - simulate,
                                finetune=finetune, simulate=simulate))
    return costs


def one_job(model_path: Path, sizes: Sizes) -> tuple[list[MethodCost], float, float]:
    """(per-method costs, seconds before the first method, whole job seconds)."""
    spec = JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET, methods=list(sizes.methods),
                   timesteps=sizes.method_steps, eval_samples=sizes.method_eval_samples,
                   calib_samples=sizes.calib_samples,
                   device="cpu", cq=CQOptions(finetune_epochs=sizes.finetune_epochs,
                                              ctt_batches=sizes.ctt_batches))
    clock = _Clock()
    report = run_job(spec, clock)
    end = time.perf_counter() - clock.began
    seconds = {m.method: m.seconds for m in report.methods}
    costs = _costs(clock, seconds, end)
    setup = min(t for t, e in clock.events if e.stage == "convert")
    return costs, setup, end


@dataclass
class MethodCostSummary:
    rows: list[MethodCost]   # medians over repeats
    setup: float
    job: float


def run(model_path: Path, sizes: Sizes, log=print) -> MethodCostSummary:
    jobs = []
    for repeat in range(sizes.repeats):
        jobs.append(one_job(model_path, sizes))
        log(f"  methods job {repeat + 1}/{sizes.repeats}: {jobs[-1][2]:.1f} s")
    rows = []
    for index, first in enumerate(jobs[0][0]):
        runs = [job[0][index] for job in jobs]
        rows.append(MethodCost(method=first.method, total=median(r.total for r in runs),
                               convert=median(r.convert for r in runs),
                               finetune=median(r.finetune for r in runs),
                               simulate=median(r.simulate for r in runs)))
    return MethodCostSummary(rows=rows, setup=median(j[1] for j in jobs),
                             job=median(j[2] for j in jobs))


def table(summary: MethodCostSummary, sizes: Sizes) -> str:
    header = ["method", "conversion (s)", "of which fine-tune (s)", "simulation (s)",
              "total (s)", "share of job"]
    body = [[r.method, f"{r.convert:.2f}", f"{r.finetune:.2f}" if r.finetune else "–",
             f"{r.simulate:.2f}", f"{r.total:.2f}", f"{100 * r.total / summary.job:.0f} %"]
            for r in summary.rows]
    body.append(["(load, ANN evaluation)", "", "", "", f"{summary.setup:.2f}",
                 f"{100 * summary.setup / summary.job:.0f} %"])
    note = (f"One job: {ARCH} / {DATASET}, {len(sizes.methods)} methods, T = {sizes.method_steps}, "
            f"{sizes.method_eval_samples} test images, CQ fine-tune {sizes.finetune_epochs} "
            f"epoch(s), CTT {sizes.ctt_batches} batches; median of {sizes.repeats} jobs "
            f"(whole job {summary.job:.1f} s). The CQ network is fine-tuned once and shared "
            "by cq-asg, cq-if and cq-ctt; whichever comes first pays for it.")
    return markdown_table(header, body) + "\n\n" + note
