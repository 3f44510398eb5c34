"""Simulator speed (issue 10): simulate time over T ANN forwards on the same batch.

For each case the ratio  (wall time of ``simulate``) / (T × wall time of one ANN forward of
the reference network on the same batch)  is measured in one process, the cases and the ANN
forwards interleaved round by round, so load from other work on the machine hits both sides
of a ratio alike.  Reported: the median over rounds of the ratio, and the ratio of the
minima (fastest simulate over T × fastest forward), and the median ratio of process CPU
times (all threads), which other processes on a busy machine disturb least.

Cases: robust-norm on cnn-small / mnist-5k at T = 32 (direct input, batch 100, diagnostics
on: SOPs, layer statistics, anytime readout), and cq-asg and cq-ctt at T = 8 (one CQ
fine-tune of 1 epoch, shared).  For cq-asg the denominator also counts T forwards: the ASG
network's latency is depth × T steps, but it runs every layer once per window, so T ANN
forwards is the honest (stricter) unit of work.

    .venv/bin/python -m benchmarks.bench_speed [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import numpy as np
import torch

import core.simulate
from benchmarks.bench_common import (
    ARCH,
    DATASET,
    Sizes,
    convert_once,
    machine,
    median,
    model_file,
    prepare,
    simulate_again,
)
from core.spec import CQOptions, JobSpec

BATCH = 100
THREADS = 2
CASES = (("robust-norm", 32), ("cq-asg", 8), ("cq-ctt", 8))
# the same robust-norm network with the constant-input shortcut (layers before the first
# neurons run once per chunk on a direct input) switched off, to measure what it gives
EVERY_STEP = "robust-norm, every step"


def _ann_seconds(reference, x: np.ndarray, repeats: int = 10) -> tuple[float, float]:
    """(wall, CPU) seconds of one forward of ``reference`` on the batch ``x``: medians of 10."""
    xb = torch.from_numpy(x)
    walls, cpus = [], []
    with torch.no_grad():
        reference(xb)
        for _ in range(repeats):
            began, began_cpu = time.perf_counter(), time.process_time()
            reference(xb)
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - began_cpu)
    return median(walls), median(cpus)


def build(workdir: Path):
    """(case name → (job, snn)) for every case; one CQ fine-tune serves both CQ methods."""
    model = model_file(Sizes(), workdir)
    built = {}
    cq_job = None
    for method, steps in CASES:
        spec = JobSpec(model_path=model, arch=ARCH, dataset=DATASET, methods=[method],
                       timesteps=steps, eval_samples=BATCH, batch_size=BATCH,
                       calib_samples=1000, device="cpu",
                       cq=CQOptions(finetune_epochs=1, ctt_batches=20))
        if method.startswith("cq-"):
            cq_job = cq_job or prepare(spec.model_copy(update={"methods": ["cq-asg", "cq-ctt"]}))
            job = cq_job
        else:
            job = prepare(spec)
        built[method] = (job, convert_once(job, method))
    return built


def _simulate(name: str, built) -> object:
    if name != EVERY_STEP:
        return simulate_again(*built[name], 1024.0)
    safe = core.simulate.constant_input_is_safe
    core.simulate.constant_input_is_safe = lambda network: False
    try:
        return simulate_again(*built["robust-norm"], 1024.0)
    finally:
        core.simulate.constant_input_is_safe = safe


def run(rounds: int, profile: bool, workdir: Path) -> None:
    torch.set_num_threads(THREADS)
    built = build(workdir)
    cases = (*CASES, (EVERY_STEP, 32))
    info = machine()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    ratios: dict[str, list[float]] = {name: [] for name, _ in cases}
    seconds: dict[str, list[float]] = {name: [] for name, _ in cases}
    forwards: dict[str, list[float]] = {name: [] for name, _ in cases}
    cpu_ratios: dict[str, list[float]] = {name: [] for name, _ in cases}
    for name, _ in cases:  # warm up every case once
        _simulate(name, built)
    for index in range(rounds):
        for name, steps in cases:
            job, snn = built[name if name != EVERY_STEP else "robust-norm"]
            ann, ann_cpu = _ann_seconds(snn.reference, job.eval_x[:BATCH])
            began, began_cpu = time.perf_counter(), time.process_time()
            result = _simulate(name, built)
            took, took_cpu = time.perf_counter() - began, time.process_time() - began_cpu
            after, after_cpu = _ann_seconds(snn.reference, job.eval_x[:BATCH])
            ann, ann_cpu = min(ann, after), min(ann_cpu, after_cpu)
            seconds[name].append(took)
            forwards[name].append(ann)
            ratios[name].append(took / (steps * ann))
            cpu_ratios[name].append(took_cpu / (steps * ann_cpu))
            print(f"round {index + 1} {name} T={steps}: simulate {took * 1e3:.1f} ms, "
                  f"ANN forward {ann * 1e3:.2f} ms, ratio {ratios[name][-1]:.2f}, "
                  f"CPU-time ratio {cpu_ratios[name][-1]:.2f}, "
                  f"top1@T {result.top1[-1]:.3f}")
    print("\n| case | T | simulate (ms, min) | ANN forward (ms, min) | ratio, median of rounds "
          "| ratio of the minima | CPU-time ratio, median |\n|---|---|---|---|---|---|---|")
    for name, steps in cases:
        print(f"| {name} | {steps} | {min(seconds[name]) * 1e3:.1f} | "
              f"{min(forwards[name]) * 1e3:.2f} | {median(ratios[name]):.2f} | "
              f"{min(seconds[name]) / (steps * min(forwards[name])):.2f} | "
              f"{median(cpu_ratios[name]):.2f} |")
    if profile:
        for name, _ in CASES:
            profiler = cProfile.Profile()
            profiler.enable()
            _simulate(name, built)
            profiler.disable()
            print(f"\n### cProfile of one simulate, {name}")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also print the cProfile top entries of one simulate per case")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/snnconv-bench-speed"))
    args = parser.parse_args()
    run(args.rounds, args.profile, args.workdir)


if __name__ == "__main__":
    main()
