"""Benchmark 6, simulator speed: simulate time over T forwards of the ANN on the same batch.

For each case the ratio  (wall time of ``simulate``) / (T × wall time of one forward of the
reference ANN on the same batch)  is measured in one process, the cases and the ANN forwards
interleaved round by round, so load from other work on the machine hits both sides of a
ratio alike.  Reported: the median over rounds of the ratio, the ratio of the minima, the
median ratio of process CPU times (all threads), and the median ratio to the same ANN with
channels-last convolutions (the layout the simulator itself uses on a CPU).

Cases: robust-norm on cnn-small / mnist-5k at T = 32 (direct input, batch 100, diagnostics
on: SOPs, layer statistics, anytime readout), and cq-asg and cq-ctt at T = 8 (one CQ
fine-tune of 1 epoch, shared).  For cq-asg the denominator also counts T forwards: the ASG
network's latency is depth × T steps, but it runs every layer once per window, so T ANN
forwards is the honest (stricter) unit of work.  Variants switch one optimisation off in
the same rounds.  Also: the cProfile top entries of one ``simulate`` per case, and the
sweep of rows per chunk behind ``core.simulate.CPU_ROWS_PER_CHUNK``.

    .venv/bin/python -m benchmarks.bench_speed [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

import torch

import core.if_kernel
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
from benchmarks.common import markdown_table
from core.graph.layout import as_channels_last, channels_last
from core.spec import CQOptions, JobSpec

BATCH = 100
THREADS = 2
BUDGET_MB = JobSpec.model_fields["memory_budget_mb"].default
CASES = {"robust-norm": 32, "cq-asg": 8, "cq-ctt": 8}
TARGETS = {"robust-norm": 0.8, "cq-asg": 1.2, "cq-ctt": 1.2}
SWEEP_ROWS = (100, 200, 400, 800, 1600, 3200)
PROFILE_ENTRIES = 8


@contextlib.contextmanager
def _every_step():
    """The constant-input shortcut (layers before the first neurons run once per chunk on a
    direct input) switched off."""
    with patch.object(core.simulate, "constant_input_is_safe", lambda network: False):
        yield


@contextlib.contextmanager
def _nchw():
    """Only the channels-last layout switched off."""
    with patch.object(core.simulate, "channels_last", lambda network: network), \
            patch.object(core.simulate, "as_channels_last", lambda x: x):
        yield


@contextlib.contextmanager
def _eager_neurons():
    """The fused IF kernels, the IF → factors → pooling fusion and the channels-last layout
    switched off: three PyTorch kernels per neuron layer and step, pooling and scaling as
    layers of their own, NCHW convolutions."""
    with patch.object(core.if_kernel, "_kernel", lambda kind: None), \
            patch.object(core.simulate, "fuse_if_outputs", lambda network: network), _nchw():
        yield


# the same networks with optimisations switched off, measured in the same rounds
VARIANTS = {
    "robust-norm, every step": ("robust-norm", _every_step),
    "robust-norm, NCHW": ("robust-norm", _nchw),
    "robust-norm, eager neurons": ("robust-norm", _eager_neurons),
    "cq-ctt, NCHW": ("cq-ctt", _nchw),
    "cq-ctt, eager neurons": ("cq-ctt", _eager_neurons),
}


@dataclass
class Case:
    name: str
    steps: int
    seconds: list[float] = field(default_factory=list)
    forwards: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)
    channels_last_ratios: list[float] = field(default_factory=list)
    top1: float = 0.0


@dataclass
class SpeedResult:
    rounds: int
    cases: list[Case]
    profiles: dict[str, list[tuple[str, int, float]]]  # case → (function, calls, own s)
    sweep: dict[tuple[str, int], float]  # (case, rows per chunk) → fastest seconds


def _ann_seconds(reference, x: torch.Tensor, repeats: int = 10) -> tuple[float, float]:
    """(wall, CPU) seconds of one forward of ``reference`` on the batch ``x``: medians."""
    walls, cpus = [], []
    with torch.inference_mode():
        reference(x)
        for _ in range(repeats):
            began, began_cpu = time.perf_counter(), time.process_time()
            reference(x)
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - began_cpu)
    return median(walls), median(cpus)


def build(workdir: Path, sizes: Sizes) -> dict:
    """(case name → (job, snn)) for every case; one CQ fine-tune serves both CQ methods."""
    model = model_file(sizes, workdir)
    built, cq_job = {}, None
    for method, steps in CASES.items():
        spec = JobSpec(model_path=model, arch=ARCH, dataset=DATASET, methods=[method],
                       timesteps=steps, eval_samples=BATCH, batch_size=BATCH,
                       calib_samples=sizes.calib_samples, device="cpu",
                       cq=CQOptions(finetune_epochs=sizes.finetune_epochs,
                                    ctt_batches=sizes.ctt_batches))
        if method.startswith("cq-"):
            cq_job = cq_job or prepare(spec.model_copy(update={"methods": ["cq-asg", "cq-ctt"]}))
            job = cq_job
        else:
            job = prepare(spec)
        built[method] = (job, convert_once(job, method))
    return built


def _simulate(name: str, built):
    base, switched_off = VARIANTS.get(name, (name, contextlib.nullcontext))
    with switched_off():
        return simulate_again(*built[base], BUDGET_MB)


def _measure_round(case: Case, built, fast_references) -> None:
    base = VARIANTS.get(case.name, (case.name,))[0]
    job, snn = built[base]
    x = torch.from_numpy(job.eval_x[:BATCH])
    ann, ann_cpu = _ann_seconds(snn.reference, x)
    began, began_cpu = time.perf_counter(), time.process_time()
    result = _simulate(case.name, built)
    took, took_cpu = time.perf_counter() - began, time.process_time() - began_cpu
    after, after_cpu = _ann_seconds(snn.reference, x)
    fast, _ = _ann_seconds(fast_references[base], as_channels_last(x))
    ann, ann_cpu = min(ann, after), min(ann_cpu, after_cpu)
    case.seconds.append(took)
    case.forwards.append(ann)
    case.ratios.append(took / (case.steps * ann))
    case.cpu_ratios.append(took_cpu / (case.steps * ann_cpu))
    case.channels_last_ratios.append(took / (case.steps * fast))
    case.top1 = result.top1[-1]


def _profile(name: str, built) -> list[tuple[str, int, float]]:
    profiler = cProfile.Profile()
    profiler.enable()
    _simulate(name, built)
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(((f"{Path(file).name}:{line}({function})" if file != "~" else function,
                    calls, own) for (file, line, function), (_, calls, own, _, _)
                   in stats.items()), key=lambda row: -row[2])
    return rows[:PROFILE_ENTRIES]


def _chunk_sweep(built, rounds: int) -> dict[tuple[str, int], float]:
    times: dict[tuple[str, int], list[float]] = {
        (name, rows): [] for name in ("robust-norm", "cq-ctt") for rows in SWEEP_ROWS}
    for _ in range(rounds):
        for name, rows in times:
            with patch.object(core.simulate, "CPU_ROWS_PER_CHUNK", rows):
                began = time.perf_counter()
                _simulate(name, built)
                times[name, rows].append(time.perf_counter() - began)
    return {key: min(values) for key, values in times.items()}


def run(rounds: int, workdir: Path, sizes: Sizes | None = None, log=print) -> SpeedResult:
    torch.set_num_threads(THREADS)
    sizes = sizes or Sizes()
    built = build(workdir, sizes)
    fast_references = {name: channels_last(snn.reference) for name, (_, snn) in built.items()}
    cases = [Case(name, steps) for name, steps in CASES.items()]
    cases += [Case(name, CASES[base]) for name, (base, _) in VARIANTS.items()]
    for case in cases:  # warm up every case once (and compile the kernels)
        _simulate(case.name, built)
    for index in range(rounds):
        for case in cases:
            _measure_round(case, built, fast_references)
            log(f"  speed round {index + 1} {case.name}: ratio {case.ratios[-1]:.2f}")
    profiles = {name: _profile(name, built) for name in CASES}
    return SpeedResult(rounds=rounds, cases=cases, profiles=profiles,
                       sweep=_chunk_sweep(built, rounds))


def table(result: SpeedResult) -> str:
    header = ["case", "T", "simulate (ms, fastest)", "ANN forward (ms, fastest)",
              "÷ T×ANN, median", "÷ T×ANN, of the minima", "CPU-time ratio, median",
              "÷ T×ANN (channels-last ANN), median", "target", "top-1 at T"]
    rows = [[case.name, str(case.steps), f"{min(case.seconds) * 1e3:.1f}",
             f"{min(case.forwards) * 1e3:.2f}", f"**{median(case.ratios):.2f}**",
             f"{min(case.seconds) / (case.steps * min(case.forwards)):.2f}",
             f"{median(case.cpu_ratios):.2f}", f"{median(case.channels_last_ratios):.2f}",
             f"≤ {TARGETS[case.name]}" if case.name in TARGETS else "–",
             f"{case.top1 * 100:.1f}"] for case in result.cases]
    parts = [markdown_table(header, rows), _notes(result)]
    for name, entries in result.profiles.items():
        parts.append(f"cProfile of one `simulate`, {name} (top {PROFILE_ENTRIES} by own time):")
        parts.append(markdown_table(["function", "calls", "own time (ms)"],
                                    [[f"`{fn}`", str(calls), f"{own * 1e3:.1f}"]
                                     for fn, calls, own in entries]))
    parts.append("Rows (steps × batch) per network call on the CPU, fastest simulate of "
                 f"{result.rounds} (ms); `core.simulate.CPU_ROWS_PER_CHUNK` = "
                 f"{core.simulate.CPU_ROWS_PER_CHUNK}:")
    names = list(dict.fromkeys(name for name, _ in result.sweep))
    parts.append(markdown_table(["case", *(f"{rows} rows" for rows in SWEEP_ROWS)],
                                [[name, *(f"{result.sweep[name, rows] * 1e3:.0f}"
                                          for rows in SWEEP_ROWS)] for name in names]))
    return "\n\n".join(parts)


def _notes(result: SpeedResult) -> str:
    by_name = {case.name: case for case in result.cases}
    lines = [f"{result.rounds} interleaved rounds; batch {BATCH}, {THREADS} torch threads, "
             f"default memory budget ({BUDGET_MB} MB). The ANN forward is the uploaded "
             "network's own (NCHW) forward; the channels-last column divides by the same ANN "
             "with channels-last convolutions instead."]
    for name, target in TARGETS.items():
        ratio = median(by_name[name].ratios)
        verdict = "met" if ratio <= target else f"missed by {ratio / target:.2f}×"
        lines.append(f"- {name}: {ratio:.2f} × T × ANN forward against ≤ {target}: {verdict}")
    for variant, (base, _) in VARIANTS.items():
        gain = median(by_name[variant].ratios) / median(by_name[base].ratios)
        lines.append(f"- {variant}: {gain:.2f}× the time of {base}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/snnconv-bench-speed"))
    args = parser.parse_args()
    info = machine()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    print(table(run(args.rounds, args.workdir)))


if __name__ == "__main__":
    main()
