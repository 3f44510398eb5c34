"""Benchmark 5: the same trained cnn-small converted by snnconv, SpikingJelly and sinabs.

Every configuration gets the same weights, the same calibration images and the same test
images, and is read out by accumulating the output layer's current.  Three passes:

- accuracy: top-1 after t steps for every t up to ``Sizes.peer_steps`` (one run each; the
  paper's CQ networks and snnconv's qcfs networks are fine-tuned for a fixed window T and
  are run for that window only);
- cost, in interleaved rounds: every round times the ANN's forward pass and then every
  configuration once, on the same ``peer_cost_samples`` images at ``peer_cost_steps`` (a CQ
  or qcfs network at its own T); reported are medians over the rounds of image·steps/s, of
  spikes per image and of time ÷ (T × the ANN's forward time of that round);
- peak memory: one child process per configuration (2 torch threads, batch 100) converts,
  warms up, resets the kernel's peak-RSS mark and reads VmHWM after one simulation, as
  ``bench_memory`` does.

The peers are not project dependencies: ``make bench`` (or ``make bench-peers``) installs
them, pinned in the Makefile's ``PEERS``, with ``pip install --no-deps --target .bench-deps``,
and this module appends ``.bench-deps`` to ``sys.path``: nothing there can change or shadow
the project's torch.  A peer that does not import is reported with its error and left out.
SpikingJelly's recipes are run by ``benchmarks.peer_recipes``, which other benchmarks use to
convert their own trained networks the same way.

    .venv/bin/python -m benchmarks.bench_peers [--quick] [--samples N] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DEPS = REPO / ".bench-deps"
for _path in (REPO, BENCH_DEPS):
    if _path.is_dir() and str(_path) not in sys.path:
        # appended, so nothing in .bench-deps can shadow the project's own packages
        sys.path.append(str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.bench_common import (  # noqa: E402
    ARCH,
    DATASET,
    PreparedJob,
    Sizes,
    convert_once,
    machine,
    median,
    model_file,
    prepare,
)
from benchmarks.common import markdown_table  # noqa: E402
from benchmarks.peer_recipes import (  # noqa: E402
    BATCH,
    PERCENTILE,
    RECIPES,
    SpikingJellyNetwork,
    top1_per_step,
)
from benchmarks.peer_recipes import version as spikingjelly_version  # noqa: E402
from core import zoo  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.simulate import simulate  # noqa: E402
from core.spec import CQOptions, JobSpec, QCFSOptions  # noqa: E402

MEMORY_THREADS = 2
MEMORY_FINETUNE_SAMPLES = 256  # a CQ or qcfs network's memory child fine-tunes on these only
# the memory budget a job gets by default (on a CPU the chunk is capped at
# core.simulate.CPU_ROWS_PER_CHUNK rows anyway, so a larger budget changes nothing there)
SNNCONV_BUDGET_MB = JobSpec.model_fields["memory_budget_mb"].default
CQ_METHODS = ("cq-asg", "cq-ctt")
QCFS_EPOCHS = QCFSOptions.model_fields["finetune_epochs"].default  # the method's default
QCFS_PERCENTILE = QCFSOptions.model_fields["clip_percentile"].default


@dataclass
class Outcome:
    top1: list[float]          # element t-1: accuracy after t steps
    spikes_per_image: float    # all spiking layers, whole run
    seconds: float             # wall time of the run (readout included)


@dataclass
class Network:
    """One converted configuration, ready to run on images."""

    run: Callable[[np.ndarray, np.ndarray], Outcome]
    steps: int


@dataclass
class Configuration:
    """How to build one configuration: ``build(context, steps)`` gives a Network."""

    name: str
    library: str
    build: Callable[[Context, int], Network]
    notes: str
    window: int | None = None  # fixed T (the CQ and qcfs networks); None: any T
    version: str = ""


@dataclass
class Context:
    job: PreparedJob
    model: nn.Module
    finetune_epochs: int
    ctt_batches: int
    finetune_samples: int | None = None
    cq_jobs: dict[int, PreparedJob] = field(default_factory=dict)

    @property
    def calib(self) -> np.ndarray:
        return self.job.ctx.calib_x


@dataclass
class PeerResult:
    name: str
    library: str = ""
    version: str = ""
    window: int | None = None
    top1: list[float] = field(default_factory=list)
    convert_seconds: float = 0.0
    cost_steps: int = 0
    spikes_per_image: float = 0.0
    steps_per_second: float = 0.0   # image·steps/s, median over rounds
    ann_ratio: float = 0.0          # SNN time ÷ (T × ANN forward time), median over rounds
    peak_mb: float | None = None
    memory_error: str | None = None
    error: str | None = None
    notes: str = ""


def trained_module(model_path: Path) -> nn.Module:
    """The zoo cnn-small with the benchmark's weights, as a plain eval-mode nn.Module."""
    model = zoo.build(ARCH)
    model.load_state_dict(load_file(str(model_path)))
    return model.eval()


def _run_steps(step_outputs: Callable[[torch.Tensor], tuple[torch.Tensor, float]],
               x: np.ndarray, y: np.ndarray) -> Outcome:
    """``step_outputs(batch)`` gives (output currents [steps, B, K], spikes in the batch)."""
    began = time.perf_counter()
    top1, spikes = top1_per_step(step_outputs, x, y, batch_size=BATCH)
    return Outcome(top1=top1, spikes_per_image=spikes, seconds=time.perf_counter() - began)


def ann_seconds(model: nn.Module, x: np.ndarray) -> float:
    """Wall time of the ANN's forward pass over ``x`` in batches of BATCH."""
    began = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(x), BATCH):
            model(torch.from_numpy(x[first:first + BATCH]))
    return time.perf_counter() - began


# --- snnconv ------------------------------------------------------------------------------

def _neurons_per_image(snn, sample_shape: tuple[int, ...], names: list[str]) -> dict[str, int]:
    """Neurons per image of each spiking layer: the size of the reference activation it
    replaces (one image through the reference ANN)."""
    sizes: dict[str, int] = {}
    handles = [snn.reference.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: sizes.__setitem__(name, out[0].numel()))
        for name in names]
    try:
        with torch.no_grad():
            snn.reference(torch.zeros(1, *sample_shape))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _snnconv_network(job: PreparedJob, method: str, steps: int) -> Network:
    snn = convert_once(job, method)
    shape = job.dataset.input_shape

    def run(x: np.ndarray, y: np.ndarray) -> Outcome:
        result = simulate(snn, x, y, sample_shape=shape, batch_size=BATCH,
                          device=torch.device("cpu"), memory_budget_mb=SNNCONV_BUDGET_MB)
        neurons = _neurons_per_image(snn, shape, [layer.name for layer in result.layers])
        spikes = sum(layer.firing_rate * neurons[layer.name] * snn.timesteps
                     for layer in result.layers)
        return Outcome(top1=result.top1, spikes_per_image=spikes, seconds=result.seconds)

    return Network(run=run, steps=snn.timesteps)


def classic(method: str) -> Callable[[Context, int], Network]:
    def build(context: Context, steps: int) -> Network:
        sized = context.job.with_spec(timesteps=steps, percentile=PERCENTILE)
        return _snnconv_network(sized, method, steps)

    return build


def _finetune_job(context: Context, **changes) -> PreparedJob:
    """The job under ``changes``, fine-tuning on the first ``context.finetune_samples``
    training images (all of them when None)."""
    job = context.job.with_spec(**changes)
    n = context.finetune_samples
    if n is not None:
        job = replace(job, ctx=replace(job.ctx, train_x=job.ctx.train_x[:n],
                                       train_y=job.ctx.train_y[:n]))
    return job


def paper(method: str) -> Callable[[Context, int], Network]:
    """A CQ method at window ``steps``; cq-asg and cq-ctt of one T share the fine-tune."""

    def build(context: Context, steps: int) -> Network:
        if steps not in context.cq_jobs:
            context.cq_jobs[steps] = _finetune_job(
                context, timesteps=steps, methods=list(CQ_METHODS),
                cq=CQOptions(finetune_epochs=context.finetune_epochs,
                             ctt_batches=context.ctt_batches))
        return _snnconv_network(context.cq_jobs[steps], method, steps)

    return build


def qcfs_build(context: Context, steps: int) -> Network:
    """snnconv's qcfs at window ``steps``, with the method's default options (L = min(T, 8),
    ``QCFS_EPOCHS`` epochs of fine-tuning)."""
    job = _finetune_job(context, timesteps=steps, methods=["qcfs"], qcfs=QCFSOptions())
    return _snnconv_network(job, "qcfs", steps)


# --- SpikingJelly (its recipes live in benchmarks.peer_recipes) ----------------------------

def spikingjelly_build(recipe: str) -> Callable[[Context, int], Network]:
    """One of ``peer_recipes.RECIPES``, calibrated on the benchmark's calibration images."""

    def build(context: Context, steps: int) -> Network:
        network = SpikingJellyNetwork(context.model, context.calib, recipe, batch_size=BATCH)
        return Network(run=lambda x, y: _run_steps(
            lambda images: network.step_outputs(images, steps), x, y), steps=steps)

    return build


# --- sinabs -------------------------------------------------------------------------------

def _fused_sequential(model: nn.Sequential) -> nn.Sequential:
    """Conv+BN folded into one Conv, so each ReLU follows the layer whose weights scale it."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    layers, children = [], list(model)
    index = 0
    while index < len(children):
        layer = children[index]
        if isinstance(layer, nn.Conv2d) and index + 1 < len(children) and \
                isinstance(children[index + 1], nn.BatchNorm2d):
            layers.append(fuse_conv_bn_eval(layer, children[index + 1]))
            index += 2
        else:
            layers.append(layer)
            index += 1
    return nn.Sequential(*layers).eval()


def sinabs_build(context: Context, steps: int) -> Network:
    from sinabs.activation import SingleSpike
    from sinabs.from_torch import from_model
    from sinabs.layers import IAFSqueeze
    from sinabs.utils import normalize_weights

    fused = _fused_sequential(copy.deepcopy(context.model))
    relus = [str(i) for i, layer in enumerate(fused) if isinstance(layer, nn.ReLU)]
    params = [str(int(name) - 1) for name in relus]
    normalize_weights(fused, torch.from_numpy(context.calib), output_layers=relus,
                      param_layers=params, percentile=PERCENTILE)
    shape = tuple(context.calib.shape[1:])
    network = from_model(fused, input_shape=shape, num_timesteps=steps,
                         spike_fn=SingleSpike, min_v_mem=None)
    fired = [0.0]

    def count(_module, _inputs, out):
        fired[0] += float(out.sum())

    for module in network.modules():
        if isinstance(module, IAFSqueeze):
            module.register_forward_hook(count)

    def outputs(images: torch.Tensor) -> tuple[torch.Tensor, float]:
        network.reset_states()
        fired[0] = 0.0
        repeated = images.unsqueeze(1).expand(len(images), steps, *images.shape[1:])
        out = network(repeated.reshape(-1, *images.shape[1:]))
        return out.view(len(images), steps, -1).transpose(0, 1), fired[0]

    return Network(run=lambda x, y: _run_steps(outputs, x, y), steps=steps)


def sinabs_version() -> str:
    import sinabs

    return getattr(sinabs, "__version__", "?")


# --- the configurations -------------------------------------------------------------------

def snnconv_version() -> str:
    from core import __version__

    return __version__


# the SpikingJelly rows: (configuration name, peer_recipes.RECIPES key)
SPIKINGJELLY_ROWS = (("SpikingJelly max", "max"),
                     (f"SpikingJelly {PERCENTILE}%", f"{PERCENTILE}%"),
                     (f"SpikingJelly channel-wise {PERCENTILE}%", f"channel-wise {PERCENTILE}%"),
                     ("SpikingJelly local threshold balancing", "ltb"))


def configurations(sizes: Sizes) -> list[Configuration]:
    configs = [
        Configuration("snnconv robust-norm", "snnconv", classic("robust-norm"),
                      "layer-wise θ = 99.9th pct of positive activations; reset by subtraction; "
                      "SOP counting and layer statistics included; every snnconv configuration "
                      f"is simulated with the default memory_budget_mb={SNNCONV_BUDGET_MB} "
                      "(benchmark 2 shows the memory a smaller budget saves, and its cost in "
                      "time)"),
        Configuration("snnconv channel-norm", "snnconv", classic("channel-norm"),
                      "channel-wise θ = 99.9th pct per channel; otherwise as robust-norm"),
    ]
    for steps in sizes.peer_cq_steps:
        for method in CQ_METHODS:
            configs.append(Configuration(
                f"snnconv {method} T={steps}", "snnconv", paper(method),
                f"the paper's suite at window T (CQ fine-tune of the same weights, "
                f"{sizes.peer_finetune_epochs} epoch(s) on "
                f"{sizes.peer_finetune_samples or 'all the'} training images, shared by "
                "cq-asg and cq-ctt"
                + (f", CTT {sizes.ctt_batches} batches" if method == "cq-ctt" else "")
                + "); its readout is defined at t ≤ T only", window=steps))
    for steps in sizes.peer_cq_steps:
        configs.append(Configuration(
            f"snnconv qcfs T={steps}", "snnconv", qcfs_build,
            "qcfs (Bu et al., ICLR 2022) at window T with the method's defaults: the same "
            f"weights fine-tuned {QCFS_EPOCHS} epochs on "
            f"{sizes.peer_finetune_samples or 'all the'} training images with the QCFS "
            "activation (L = min(T, 8) levels, one trainable clip λ per layer starting at the "
            f"{QCFS_PERCENTILE:g}th pct), then IF neurons θ = λ, reset by subtraction, "
            "u(0) = θ/2, direct input; its readout is defined at t ≤ T only", window=steps))
    configs += [Configuration(name, "SpikingJelly", spikingjelly_build(recipe),
                              RECIPES[recipe].notes) for name, recipe in SPIKINGJELLY_ROWS]
    configs += [
        Configuration("sinabs from_model", "sinabs", sinabs_build,
                      "normalize_weights(percentile=99.9) on the BN-fused net (percentile over "
                      "all activations); IAFSqueeze, SingleSpike, subtractive reset, no "
                      "membrane floor; all T steps in one call. normalize_weights leaves the "
                      "next layer's bias unscaled (its known limitation), which costs accuracy"),
    ]
    return configs


VERSIONS: dict[str, Callable[[], str]] = {"snnconv": snnconv_version,
                                          "SpikingJelly": spikingjelly_version,
                                          "sinabs": sinabs_version}


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _cost_steps(config: Configuration, sizes: Sizes) -> int:
    return config.window or sizes.peer_cost_steps


# --- peak memory, one child process per configuration ---------------------------------------

def _memory_in_this_process(request: dict) -> dict:
    from benchmarks.bench_memory import _reset_peak, _status_kb

    torch.set_num_threads(MEMORY_THREADS)
    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v
                     for k, v in request["sizes"].items()})
    # a CQ network's memory is set by its shapes and T, not by how well it was fine-tuned
    sizes = replace(sizes, peer_finetune_samples=min(sizes.peer_finetune_samples or
                                                     MEMORY_FINETUNE_SAMPLES,
                                                     MEMORY_FINETUNE_SAMPLES))
    config = {c.name: c for c in configurations(sizes)}[request["name"]]
    context = _context(Path(request["model_path"]), sizes, request["samples"])
    x, y = context.job.eval_x, context.job.eval_y
    network = config.build(context, _cost_steps(config, sizes))
    network.run(x[:2], y[:2])  # warm-up: lazy imports and allocator pools
    if _reset_peak():
        before = _status_kb("VmRSS")
        network.run(x, y)
        peak, how = (_status_kb("VmHWM") - before) / 1024, "VmHWM reset"
    else:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        network.run(x, y)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        how = "ru_maxrss"
    return {"peak_mb": peak, "how": how}


def measure_memory(config: Configuration, model_path: Path, sizes: Sizes) -> dict:
    request = {"name": config.name, "model_path": str(model_path), "sizes": asdict(sizes),
               "samples": BATCH}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_peers", "--memory-child",
                           json.dumps(request)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark ------------------------------------------------------------------------

def _context(model_path: Path, sizes: Sizes, samples: int,
             job: PreparedJob | None = None) -> Context:
    if job is None:
        job = prepare(JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET, device="cpu",
                              calib_samples=sizes.calib_samples))
    return Context(job=job.with_spec(eval_samples=samples), model=trained_module(model_path),
                   finetune_epochs=sizes.peer_finetune_epochs, ctt_batches=sizes.ctt_batches,
                   finetune_samples=sizes.peer_finetune_samples)


def run(job: PreparedJob, model_path: Path, sizes: Sizes, log=print,
        memory: bool = True) -> list[PeerResult]:
    context = _context(model_path, sizes, sizes.peer_eval_samples, job)
    x, y = context.job.eval_x, context.job.eval_y
    cost_x, cost_y = x[:sizes.peer_cost_samples], y[:sizes.peer_cost_samples]
    versions: dict[str, str] = {}
    results: list[PeerResult] = []
    cost_networks: dict[str, Network] = {}
    for config in configurations(sizes):
        result = PeerResult(name=config.name, library=config.library, window=config.window,
                            notes=config.notes, cost_steps=_cost_steps(config, sizes))
        results.append(result)
        try:
            if config.library not in versions:
                versions[config.library] = VERSIONS[config.library]()
            result.version = versions[config.library]
            began = time.perf_counter()
            accuracy = config.build(context, config.window or sizes.peer_steps)
            result.convert_seconds = time.perf_counter() - began
            result.top1 = accuracy.run(x, y).top1
            cost_networks[config.name] = (accuracy if accuracy.steps == result.cost_steps
                                          else config.build(context, result.cost_steps))
        except Exception as error:  # noqa: BLE001 - a failing peer is reported, not fatal
            result.error = _error(error)
        log(f"  peers: {config.name}: " + (result.error or f"top-1 {100 * result.top1[-1]:.1f}"))

    ann_seconds(context.model, cost_x[:2])  # warm-up: first calls pay for lazy set-up
    for network in cost_networks.values():
        network.run(cost_x[:2], cost_y[:2])
    rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cost_networks}
    for round_index in range(sizes.repeats):
        ann = ann_seconds(context.model, cost_x)
        for name, network in cost_networks.items():
            outcome = network.run(cost_x, cost_y)
            rounds[name].append((len(cost_x) * network.steps / outcome.seconds,
                                 outcome.seconds / (network.steps * ann),
                                 outcome.spikes_per_image))
        log(f"  peers: cost round {round_index + 1}/{sizes.repeats} (ANN {ann * 1e3:.1f} ms)")
    for result in results:
        if result.name in rounds:
            speeds, ratios, spikes = zip(*rounds[result.name], strict=True)
            result.steps_per_second, result.ann_ratio = median(speeds), median(ratios)
            result.spikes_per_image = median(spikes)

    if memory:
        by_name = {c.name: c for c in configurations(sizes)}
        measured_libraries: set[str] = set()
        for result in results:
            if result.error is None and (sizes.peer_memory_all or
                                         result.library not in measured_libraries):
                measured_libraries.add(result.library)
                measured = measure_memory(by_name[result.name], model_path, sizes)
                result.peak_mb = measured.get("peak_mb")
                result.memory_error = measured.get("error")
                log(f"  peers: {result.name} peak " + (result.memory_error or
                                                       f"+{result.peak_mb:.0f} MB"))
    return results


def table(results: list[PeerResult], sizes: Sizes, ann_top1: float | None = None) -> str:
    working = [r for r in results if r.error is None]
    shown = [t for t in sizes.peer_report_steps if t <= sizes.peer_steps]
    header = (["configuration", "version"] + [f"t={t}" for t in shown] +
              ["T (cost)", "spikes/image", "image·steps/s", "peak MB", "÷ T×ANN", "convert (s)"])

    def cell(r: PeerResult, t: int) -> str:
        return f"{100 * r.top1[t - 1]:.1f}" if t <= len(r.top1) else "–"

    body = [[r.name, r.version] + [cell(r, t) for t in shown] +
            [str(r.cost_steps), f"{r.spikes_per_image:,.0f}", f"{r.steps_per_second:,.0f}",
             f"{r.peak_mb:.0f}" if r.peak_mb is not None else "–",
             f"{r.ann_ratio:.2f}", f"{r.convert_seconds:.2f}"] for r in working]
    lines = [markdown_table(header, body), ""]
    verdict = t1_verdict(working)
    if verdict is not None:
        lines += [verdict, ""]
    ann = f" (ANN top-1 {100 * ann_top1:.1f} %)" if ann_top1 is not None else ""
    lines.append(
        f"Top-1 (%) after t steps: same trained {ARCH} weights{ann}, same "
        f"{sizes.peer_eval_samples} test images, direct input, batch {BATCH}, calibration on "
        f"the same first {sizes.calib_samples} training images; one run per configuration, "
        f"each run for T = {sizes.peer_steps} (a CQ or qcfs network for its own T; – : beyond "
        f"its window). Cost columns at T (cost), on the first {sizes.peer_cost_samples} test "
        f"images, medians of {sizes.repeats} interleaved rounds (each round times the ANN's "
        "forward pass, then every configuration once): spikes/image over all spiking layers "
        "and all T steps; image·steps/s of the whole run including readout; ÷ T×ANN is the "
        "SNN's time over T times the ANN's forward time on the same images in that round. "
        f"Peak MB: peak RSS increase of one simulation of {BATCH} images at T (cost) in a "
        f"child process with {MEMORY_THREADS} torch threads (VmHWM reset, as in benchmark 2, "
        "`bench_memory`; "
        f"a CQ or qcfs network's child fine-tunes on {MEMORY_FINETUNE_SAMPLES} images only: its "
        "memory depends on its shapes and T, not on its weights). "
        + ("" if sizes.peer_memory_all else "Peak MB of the first configuration of each "
                                             "library only (– : not measured). ")
        + "Convert: building the network for the accuracy run (calibration, fine-tune, CTT).")
    lines += ["", "What each configuration is:", ""]
    lines += [f"- **{r.name}**: {r.notes}" for r in working
              if r.window is None or r.window == min(sizes.peer_cq_steps)]
    for failed in (r for r in results if r.error is not None):
        lines.append(f"- **{failed.name}** could not be run: `{failed.error}`")
    for failed in (r for r in working if r.memory_error):
        lines.append(f"- **{failed.name}**: peak memory not measured: `{failed.memory_error}`")
    return "\n".join(lines)


DEFAULT_T1_RECIPE = "snnconv qcfs T=1"  # the qcfs method with its default (fast) preset


def t1_verdict(results: list[PeerResult]) -> str | None:
    """Whether snnconv's default T = 1 recipe beats every peer configuration at t = 1, in
    this run; None when either side is missing."""
    ours = next((r for r in results if r.name == DEFAULT_T1_RECIPE and r.top1), None)
    peers = [r for r in results if r.library != "snnconv" and r.top1]
    if ours is None or not peers:
        return None
    best = max(peers, key=lambda r: r.top1[0])
    answer = "yes" if ours.top1[0] > best.top1[0] else "no"
    return (f"At t = 1, snnconv's default T = 1 recipe (`qcfs`, fast preset) beats the best "
            f"peer configuration: **{answer}** ({100 * ours.top1[0]:.1f} % against "
            f"{best.name} {100 * best.top1[0]:.1f} %).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--samples", type=int, help="test images for the accuracy pass")
    parser.add_argument("--out", type=Path, help="write the section as markdown here")
    parser.add_argument("--workdir", type=Path, default=REPO / "out" / "benchmarks")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_memory_in_this_process(json.loads(args.memory_child))))
        return 0
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.samples:
        sizes = Sizes(**{**asdict(sizes), "peer_eval_samples": args.samples})
    began = time.perf_counter()
    host = machine()
    model_path = model_file(sizes, args.workdir, load_dataset(DATASET))
    job = prepare(JobSpec(model_path=model_path, arch=ARCH, dataset=DATASET, device="cpu",
                          calib_samples=sizes.calib_samples))
    results = run(job, model_path, sizes)
    text = table(results, sizes)
    if args.out:
        command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "-m",
                                                     "benchmarks.bench_peers", *sys.argv[1:]])
        minutes = (time.perf_counter() - began) / 60
        header = "\n".join([
            "# Peer comparison: snnconv, SpikingJelly and sinabs",
            "",
            "Generated by `benchmarks/bench_peers.py`; do not edit by hand.",
            "",
            f"- command: `{command}`",
            f"- date: {host['date']}, run {minutes:.1f} min",
            f"- machine: {host['cpu']}, {host['cores']} cores, {host['platform']}",
            f"- torch {host['torch']} ({host['torch threads']} threads), "
            f"Python {host['python']}",
            f"- model: {ARCH} on {DATASET}, " +
            ("the demo's trained weights (`core.demo.demo_model`)" if sizes.train_epochs is None
             else f"trained {sizes.train_epochs} epoch(s) here"),
            "- peers: installed by `make bench-peers` (the Makefile's `PEERS`) with `pip "
            "install --no-deps --target .bench-deps`, so they run on the project's torch",
            "- the machine was shared with other work: absolute times are noisy; the ratios "
            "are the result.",
        ])
        args.out.write_text(header + "\n\n" + text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
