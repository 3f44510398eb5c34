"""Run every benchmark and write docs/benchmarks.md with its plots.

    .venv/bin/python benchmarks/run_all.py            # the full run (about an hour, estimated)
    .venv/bin/python benchmarks/run_all.py --quick    # tiny sizes: checks the harness only
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `benchmarks` and `core` importable
    sys.path.insert(0, str(REPO))

from benchmarks import (  # noqa: E402
    bench_latency,
    bench_memory,
    bench_methods,
    bench_peers,
    bench_sharded,
    bench_speed,
    bench_throughput,
)
from benchmarks.bench_common import (  # noqa: E402
    ARCH,
    DATASET,
    Sizes,
    machine,
    model_file,
    prepare,
)
from core.datasets import load_dataset  # noqa: E402
from core.spec import JobSpec  # noqa: E402

PLOT_PREFIX = "benchmarks-"


def _section(title: str, *parts: str) -> str:
    return "\n\n".join([f"## {title}", *parts])


def _image(path: Path, markdown: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(markdown.parent).as_posix()})"


def _sharded(quick: bool, log) -> str:
    """The 1- and 2-worker runs of the whole mnist-5k test split, or why they did not run."""
    if quick:
        return "Not run in quick mode (it starts Celery workers on Redis and PostgreSQL)."
    try:
        return bench_sharded.summary(bench_sharded.main([]))
    except Exception as error:  # noqa: BLE001 - a missing service must not lose the page
        log(f"  sharded evaluation not run: {error}")
        return f"Not run: `{type(error).__name__}: {error}` (it needs Redis and PostgreSQL)."


def in_fresh_process(function, *args):
    """``function(*args)`` in a new interpreter.  Benchmark 6 divides by the ANN's forward
    time, which the earlier sections' leftovers (allocator state, thread pools) change: the
    same forward measured 5.3 ms after benchmarks 1–5 and 2.3 ms in a fresh process, which
    would flatter the ratios by 1.5–2×."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def run(out: Path, quick: bool, workdir: Path, log=print) -> Path:
    """Run all benchmarks; write ``out`` (markdown) and its plots beside it."""
    sizes = Sizes.quick() if quick else Sizes()
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = PLOT_PREFIX + ("quick-" if quick else "")
    began = time.perf_counter()
    host = machine()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/run_all.py",
                                                 *sys.argv[1:]])
    dataset = load_dataset(DATASET)
    model_path = model_file(sizes, workdir, dataset)
    job = prepare(JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET, device="cpu",
                          calib_samples=sizes.calib_samples))
    sections = []

    log("1/7 simulation throughput")
    rows = bench_throughput.run(job, sizes, log)
    plot = bench_throughput.plot(rows, out.parent / f"{prefix}throughput.png")
    sections.append(_section(
        "1. Simulation throughput", "\n".join(f"- {line}" for line in
                                              bench_throughput.summary(rows)),
        bench_throughput.table(rows, sizes.throughput_samples),
        _image(plot, out, "throughput per variant")))

    log("2/7 peak memory against the memory budget")
    memory = bench_memory.run(model_path, sizes, log)
    plot = bench_memory.plot(memory, out.parent / f"{prefix}memory.png")
    sections.append(_section("2. Peak memory against `memory_budget_mb`",
                             bench_memory.table(memory, sizes),
                             _image(plot, out, "peak memory and time per budget")))

    log("3/7 per-method cost")
    costs = bench_methods.run(model_path, sizes, log)
    sections.append(_section("3. Where a job's time goes, per method",
                             bench_methods.table(costs, sizes)))

    log("4/7 accuracy against latency")
    report = bench_latency.run(model_path, sizes, log)
    plot = bench_latency.plot(report, out.parent / f"{prefix}accuracy.png")
    sections.append(_section("4. Accuracy against latency, and energy (classic methods)",
                             bench_latency.table(report),
                             _image(plot, out, "top-1 against time steps")))

    log("5/7 peer libraries")
    peers = bench_peers.run(job, model_path, sizes, log)
    sections.append(_section("5. Peer comparison: SpikingJelly and sinabs",
                             bench_peers.table(peers, sizes)))

    log("6/7 simulator speed against T × the ANN's forward")
    speed = in_fresh_process(bench_speed.run, 1 if quick else 5, workdir / "speed", sizes)
    sections.append(_section("6. Simulator speed against T × the ANN's forward",
                             bench_speed.table(speed)))

    log("7/7 sharded evaluation on 1 and 2 Celery workers")
    sections.append(_section("7. Sharded evaluation on Celery workers", _sharded(quick, log)))

    minutes = (time.perf_counter() - began) / 60
    header = [
        "# Benchmarks",
        "Generated by `benchmarks/run_all.py`; do not edit by hand.",
        "\n".join([f"- command: `{command}`" + (" (quick sizes: harness check only, numbers "
                                                 "mean nothing)" if quick else ""),
                   f"- date: {host['date']}, whole run {minutes:.1f} min",
                   f"- machine: {host['cpu']}, {host['cores']} cores, {host['platform']}",
                   f"- torch {host['torch']} ({host['torch threads']} threads), "
                   f"Python {host['python']}",
                   f"- model: {ARCH} on {DATASET}, "
                   + ("the demo's trained weights (`core.demo.demo_model`)"
                      if sizes.train_epochs is None else
                      f"trained {sizes.train_epochs} epoch(s) here"),
                   f"- timings: median of {sizes.repeats} repeats with the variants interleaved "
                   "in each repeat; ratios are medians of per-repeat ratios. The machine was "
                   "shared with other work, so absolute numbers are noisy; the ratios are the "
                   "result."]),
    ]
    out.write_text("\n\n".join(header + sections) + "\n", encoding="utf-8")
    log(f"wrote {out} in {minutes:.1f} min")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="markdown file to write; plots go beside it")
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "benchmarks",
                        help="where briefly trained weights are written (quick mode)")
    args = parser.parse_args(argv)
    run(args.out, args.quick, args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
