"""Does ``torch.compile`` pay for the IF neuron's step loop?  (issue 10: "torch.compile where
it measurably helps")

Times the product's ``IFNeuron`` (eager: three in-place kernels per step) against the same
update written functionally and compiled with inductor, on the layer shapes of the speed
benchmark, checks the spikes are bit-identical, and reports the one-off compile time, which
a job pays again for every new layer shape and T (the loop over T is unrolled).

    .venv/bin/python -m benchmarks.bench_compile [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from core.neurons import IFNeuron

THREADS = 2
# (T, one layer's [B, C, H, W]): cnn-small's spiking layers at the speed benchmark's sizes
CASES = ((32, (100, 16, 14, 14)), (8, (100, 32, 14, 14)))
QUICK_CASES = ((2, (4, 2, 3, 3)),)


def if_update(currents: torch.Tensor, threshold: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """IF with reset by subtraction, u0 = 0, written without in-place ops for the compiler;
    like IFNeuron it also returns the spike counts and scales the spikes by the amplitude."""
    membrane = torch.zeros_like(currents[0])
    spikes = []
    for t in range(currents.shape[0]):
        membrane = membrane + currents[t]
        fired = (membrane >= threshold).to(currents.dtype)
        membrane = membrane - fired * threshold
        spikes.append(fired)
    spikes = torch.stack(spikes)
    return spikes * threshold, spikes.sum(0)


def _eager(neuron: IFNeuron, currents: torch.Tensor) -> torch.Tensor:
    neuron.reset()
    neuron.steps = currents.shape[0]
    return neuron(currents.reshape(-1, *currents.shape[2:])).view(currents.shape)


def _fastest(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def measure(steps: int, shape: tuple[int, ...], repeats: int) -> dict:
    torch.manual_seed(0)
    currents = torch.rand(steps, *shape) * 0.6
    neuron, threshold = IFNeuron(1.0), torch.tensor(1.0)
    compiled = torch.compile(if_update, dynamic=False)
    began = time.perf_counter()
    spikes, counts = compiled(currents, threshold)
    compile_s = time.perf_counter() - began
    if not (torch.equal(spikes, _eager(neuron, currents))
            and torch.equal(counts, neuron.spike_count)):
        raise AssertionError("compiled IF spikes or counts differ from IFNeuron's")
    eager_s = _fastest(lambda: _eager(neuron, currents), repeats)
    compiled_s = _fastest(lambda: compiled(currents, threshold), repeats)
    return {"T": steps, "shape": shape, "eager_ms": 1e3 * eager_s,
            "compiled_ms": 1e3 * compiled_s, "speedup": eager_s / compiled_s,
            "compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    print("| T | layer [B, C, H, W] | IFNeuron eager (ms, fastest) | compiled (ms, fastest) "
          "| speed-up | first call incl. compile (s) |")
    print("|---|---|---|---|---|---|")
    for steps, shape in QUICK_CASES if args.quick else CASES:
        row = measure(steps, shape, repeats=2 if args.quick else 10)
        print(f"| {row['T']} | {list(row['shape'])} | {row['eager_ms']:.2f} | "
              f"{row['compiled_ms']:.2f} | {row['speedup']:.2f}× | {row['compile_s']:.1f} |")


if __name__ == "__main__":
    main()
