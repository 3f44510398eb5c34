"""Benchmark 2: peak memory and time of one simulation against ``memory_budget_mb``.

Each budget runs in its own process, so one setting's allocations cannot hide another's.
The process loads and converts first, then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``, value 5) and reads VmHWM after simulating: the difference is the
peak the simulation added.  Where the mark cannot be reset, ``ru_maxrss`` before and after
is used instead (it can only under-report: an earlier peak hides a smaller later one).
"""

from __future__ import annotations

import ctypes
import json
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.bench_common import (
    ARCH,
    DATASET,
    Sizes,
    convert_and_simulate,
    convert_once,
    median,
    prepare,
    simulate_again,
)
from benchmarks.common import markdown_table
from core.simulate import bytes_per_sample_step, chunk_steps
from core.spec import JobSpec

REPO = Path(__file__).resolve().parent.parent
METHOD = "robust-norm"
BATCH = 100


@dataclass
class MemoryRow:
    budget_mb: float
    chunk: int
    predicted_mb: float     # chunk · bytes per sample-step · batch: the simulator's own bound
    peak_delta_mb: float    # largest peak-RSS increase over the repeats
    seconds: float          # median simulate() time
    method: str             # how the peak was measured


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Return freed heap pages to the kernel, then restart the peak-RSS mark from here.

    Without the trim, memory that calibration freed stays resident and the simulation
    reuses it unseen, so its peak would look smaller than it is.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_in_this_process(model_path: Path, budget_mb: float, steps: int, samples: int,
                            repeats: int, calib_samples: int) -> MemoryRow:
    """Load, convert, then simulate ``repeats`` times, measuring peak RSS around each run."""
    spec = JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET, methods=[METHOD],
                   timesteps=steps, eval_samples=samples, batch_size=BATCH,
                   calib_samples=calib_samples, device="cpu")
    job = prepare(spec)
    per_step = bytes_per_sample_step(job.ctx.ann, job.dataset.input_shape)
    chunk = chunk_steps(steps, BATCH, per_step, budget_mb, torch.device("cpu"))
    # warm-up on two images: lazy imports and allocator pools are not the budget's doing
    convert_and_simulate(job.with_spec(timesteps=2, eval_samples=2), METHOD, budget_mb)
    deltas, times, how = [], [], "VmHWM reset"
    for _ in range(repeats):
        snn = convert_once(job, METHOD)  # calibration's memory is not the simulator's
        if _reset_peak():
            before = _status_kb("VmRSS")
            result = simulate_again(job, snn, budget_mb)
            deltas.append((_status_kb("VmHWM") - before) / 1024)
        else:
            how = "ru_maxrss"
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result = simulate_again(job, snn, budget_mb)
            deltas.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
        times.append(result.seconds)
    return MemoryRow(budget_mb=budget_mb, chunk=chunk,
                     predicted_mb=chunk * per_step * BATCH / 2**20,
                     peak_delta_mb=max(deltas), seconds=median(times), method=how)


def run(model_path: Path, sizes: Sizes, log=print) -> list[MemoryRow]:
    """One child process per budget, in order."""
    rows = []
    for budget in sizes.memory_budgets_mb:
        request = json.dumps({"model_path": str(model_path), "budget_mb": budget,
                              "steps": sizes.memory_steps, "samples": sizes.memory_samples,
                              "repeats": sizes.repeats, "calib": sizes.calib_samples})
        done = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", request],
                              cwd=REPO, capture_output=True, text=True, check=True)
        rows.append(MemoryRow(**json.loads(done.stdout.strip().splitlines()[-1])))
        log(f"  memory budget {budget:g} MB: peak +{rows[-1].peak_delta_mb:.0f} MB")
    return rows


def table(rows: list[MemoryRow], sizes: Sizes) -> str:
    header = ["memory_budget_mb", "chunk (steps)", "simulator's bound (MB)",
              "peak RSS increase (MB)", "time (s)", "time ÷ largest budget's"]
    fastest = rows[-1].seconds
    body = [[f"{r.budget_mb:g}", str(r.chunk), f"{r.predicted_mb:.0f}", f"{r.peak_delta_mb:.0f}",
             f"{r.seconds:.2f}", f"{r.seconds / fastest:.2f}"] for r in rows]
    how = rows[0].method if rows else "?"
    note = (f"{METHOD}, direct input, T = {sizes.memory_steps}, {sizes.memory_samples} test "
            f"images, batch {BATCH}; one process per budget, peak measured by {how}; "
            "the bound is chunk × bytes per sample-step × batch "
            "(`core.simulate.bytes_per_sample_step`).")
    return markdown_table(header, body) + "\n\n" + note


def plot(rows: list[MemoryRow], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [r.budget_mb for r in rows]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(budgets, [r.peak_delta_mb for r in rows], "o-", label="peak RSS increase")
    left.plot(budgets, [r.predicted_mb for r in rows], "s--", label="simulator's bound")
    left.set_xscale("log")
    left.set_xlabel("memory_budget_mb")
    left.set_ylabel("MB")
    right = left.twinx()
    right.plot(budgets, [r.seconds for r in rows], "^:", color="tab:red", label="time")
    right.set_ylabel("simulation time (s)", color="tab:red")
    left.legend(loc="upper left", fontsize=8)
    left.set_title("Memory budget → peak memory and time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    row = measure_in_this_process(Path(args["model_path"]), args["budget_mb"], args["steps"],
                                  args["samples"], args["repeats"], args["calib"])
    print(json.dumps(asdict(row)))
