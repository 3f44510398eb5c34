"""Benchmark 1: IF simulation throughput (samples·steps per second) of one converted network.

Variants, run side by side for each T:
- chunk length: the default memory budget (many steps folded into the batch) against a
  budget so small that every chunk holds one step;
- input: direct (analog) input with the constant-prefix optimisation (the layers before the
  first neurons run once per chunk), the same input with the optimisation switched off, and
  the deterministic rate code (whose first layer must run at every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.bench_common import (
    PreparedJob,
    Sizes,
    convert_once,
    median,
    simulate_again,
)
from benchmarks.common import markdown_table
from core.encoders import DirectEncoder, InputEncoder, RateEncoder
from core.simulate import bytes_per_sample_step, chunk_steps

DEFAULT_BUDGET_MB = 1024.0
ONE_STEP_BUDGET_MB = 1e-3  # below one step of one batch: the chunk length floors at 1
METHOD = "robust-norm"


class PerStepDirectEncoder(DirectEncoder):
    """Direct input that the simulator does not recognise as constant (no analog shortcut)."""

    analog = False


@dataclass(frozen=True)
class Variant:
    name: str
    budget_mb: float
    encoder: type[InputEncoder]


VARIANTS = (
    Variant("multi-step, direct (constant prefix)", DEFAULT_BUDGET_MB, DirectEncoder),
    Variant("multi-step, direct (every step)", DEFAULT_BUDGET_MB, PerStepDirectEncoder),
    Variant("multi-step, rate", DEFAULT_BUDGET_MB, RateEncoder),
    Variant("1 step/chunk, direct (constant prefix)", ONE_STEP_BUDGET_MB, DirectEncoder),
    Variant("1 step/chunk, rate", ONE_STEP_BUDGET_MB, RateEncoder),
)
BASELINE = VARIANTS[0].name


@dataclass
class ThroughputRow:
    steps: int
    variant: str
    chunk: int
    seconds: float          # median wall time of simulate()
    rate: float             # samples·steps per second at that median
    vs_default: float       # median over repeats of seconds / seconds of the default variant


def chunk_length(job: PreparedJob, steps: int, budget_mb: float) -> int:
    """The chunk length core.simulate uses for this budget on the CPU."""
    per_step = bytes_per_sample_step(job.ctx.ann, job.dataset.input_shape)
    return chunk_steps(steps, job.ctx.spec.batch_size, per_step, budget_mb,
                       torch.device("cpu"))


def run(job: PreparedJob, sizes: Sizes, log=print) -> list[ThroughputRow]:
    """Every variant once per repeat, interleaved, for each T."""
    rows = []
    for steps in sizes.throughput_steps:
        sized = job.with_spec(timesteps=steps, eval_samples=sizes.throughput_samples)
        snn = convert_once(sized, METHOD)
        simulate_again(sized, snn, DEFAULT_BUDGET_MB)  # warm-up: lazy imports, allocator
        times: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
        for repeat in range(sizes.repeats):
            for variant in VARIANTS:
                result = simulate_again(sized, snn, variant.budget_mb, variant.encoder())
                times[variant.name].append(result.seconds)
            log(f"  throughput T={steps} repeat {repeat + 1}/{sizes.repeats}")
        work = len(sized.eval_y) * steps
        for variant in VARIANTS:
            seconds = median(times[variant.name])
            ratios = [a / b for a, b in zip(times[variant.name], times[BASELINE], strict=True)]
            rows.append(ThroughputRow(steps=steps, variant=variant.name,
                                      chunk=chunk_length(sized, steps, variant.budget_mb),
                                      seconds=seconds, rate=work / seconds,
                                      vs_default=median(ratios)))
    return rows


def _ratio(rows: list[ThroughputRow], steps: int, slow: str, fast: str) -> float:
    by_name = {r.variant: r for r in rows if r.steps == steps}
    return by_name[slow].vs_default / by_name[fast].vs_default


def summary(rows: list[ThroughputRow]) -> list[str]:
    """One line per T: the speed-ups the design claims."""
    lines = []
    for steps in sorted({r.steps for r in rows}):
        chunking_direct = _ratio(rows, steps, VARIANTS[3].name, VARIANTS[0].name)
        chunking_rate = _ratio(rows, steps, VARIANTS[4].name, VARIANTS[2].name)
        prefix = _ratio(rows, steps, VARIANTS[1].name, VARIANTS[0].name)
        rate = _ratio(rows, steps, VARIANTS[2].name, VARIANTS[0].name)
        lines.append(f"T = {steps}: multi-step chunks are {chunking_direct:.2f}× (direct) and "
                     f"{chunking_rate:.2f}× (rate) as fast as one step per chunk; the constant "
                     f"prefix makes direct input {prefix:.2f}× as fast as without it and "
                     f"{rate:.2f}× as fast as rate-coded input.")
    return lines


def table(rows: list[ThroughputRow], samples: int) -> str:
    header = ["T", "variant", "chunk (steps)", "time (s)", "samples·steps/s",
              "time ÷ default"]
    body = [[str(r.steps), r.variant, str(r.chunk), f"{r.seconds:.2f}", f"{r.rate:,.0f}",
             f"{r.vs_default:.2f}"] for r in rows]
    note = (f"{samples} test images, batch 100, method {METHOD}; time is the wall time of "
            "`core.simulate.simulate` (readout, SOP counting and layer statistics included); "
            "*default* is the first variant.")
    return markdown_table(header, body) + "\n\n" + note


def plot(rows: list[ThroughputRow], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted({r.steps for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(VARIANTS)
    for index, variant in enumerate(VARIANTS):
        rates = [next(r.rate for r in rows if r.steps == t and r.variant == variant.name)
                 for t in steps]
        ax.bar([i + index * width for i in range(len(steps))], rates, width, label=variant.name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(steps))], [f"T = {t}" for t in steps])
    ax.set_ylabel("samples·steps per second")
    ax.set_title("IF simulation throughput, cnn-small / mnist-5k")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
