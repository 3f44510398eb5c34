"""Benchmark 5: the same trained cnn-small converted by snnconv, SpikingJelly and sinabs.

All three get the same weights, the same calibration images and the same test images, with
direct (analog) input at every step and each library's own robust (99.9th percentile)
normalisation, and are read out by accumulating the output layer's current.  A library
that does not install or import is reported with its error and left out.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from benchmarks.bench_common import ARCH, PreparedJob, Sizes, convert_and_simulate
from benchmarks.common import markdown_table
from core import zoo

PERCENTILE = 99.9
BATCH = 100


@dataclass
class PeerResult:
    name: str
    version: str = ""
    top1: list[float] = field(default_factory=list)   # element t-1: accuracy after t steps
    convert_seconds: float = 0.0
    simulate_seconds: float = 0.0
    error: str | None = None
    notes: str = ""


def trained_module(model_path: Path) -> nn.Module:
    """The zoo cnn-small with the benchmark's weights, as a plain eval-mode nn.Module."""
    model = zoo.build(ARCH)
    model.load_state_dict(load_file(str(model_path)))
    return model.eval()


def _accuracy_per_step(step_outputs: Callable[[torch.Tensor], torch.Tensor],
                       x: np.ndarray, y: np.ndarray, steps: int) -> tuple[list[float], float]:
    """``step_outputs(batch)`` gives output currents [steps, B, K]; top-1 of the running sum."""
    correct = np.zeros(steps)
    began = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(x), BATCH):
            images = torch.from_numpy(x[first:first + BATCH])
            labels = torch.from_numpy(y[first:first + BATCH])
            running = step_outputs(images).cumsum(0)
            correct += (running.argmax(-1) == labels).sum(-1).numpy()
    return list(correct / len(x)), time.perf_counter() - began


def snnconv_result(job: PreparedJob, steps: int) -> PeerResult:
    sized = job.with_spec(timesteps=steps, percentile=PERCENTILE)
    began = time.perf_counter()
    result = convert_and_simulate(sized, "robust-norm", 1024)
    total = time.perf_counter() - began
    from core import __version__

    return PeerResult(name="snnconv robust-norm", version=__version__, top1=result.top1,
                      convert_seconds=total - result.seconds, simulate_seconds=result.seconds,
                      notes="layer-wise θ = 99.9th pct of positive activations; reset by "
                            "subtraction; SOP counting and layer statistics included")


def spikingjelly_result(model: nn.Module, calib: np.ndarray, x: np.ndarray, y: np.ndarray,
                        steps: int) -> PeerResult:
    try:
        import spikingjelly
        from spikingjelly.activation_based import ann2snn, functional
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        return PeerResult(name="SpikingJelly", error=f"{type(error).__name__}: {error}")
    os.environ.setdefault("TQDM_DISABLE", "1")  # its calibration prints a progress bar
    loader = [(torch.from_numpy(calib[i:i + BATCH]), None) for i in range(0, len(calib), BATCH)]
    began = time.perf_counter()
    recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode=f"{PERCENTILE}%")
    snn = ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(model)).eval()
    converted = time.perf_counter() - began

    def outputs(images: torch.Tensor) -> torch.Tensor:
        functional.reset_net(snn)
        return torch.stack([snn(images) for _ in range(steps)])

    top1, seconds = _accuracy_per_step(outputs, x, y, steps)
    return PeerResult(name="SpikingJelly ann2snn", version=getattr(spikingjelly, "__version__",
                                                                   "2.0.0"),
                      top1=top1, convert_seconds=converted, simulate_seconds=seconds,
                      notes="RateCodingRecipe(mode='99.9%'): Conv-BN fused, scale = EMA over "
                            "batches of the 99.9th pct of all activations; IFNode, one "
                            "forward call per step")


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


def sinabs_result(model: nn.Module, calib: np.ndarray, x: np.ndarray, y: np.ndarray,
                  steps: int) -> PeerResult:
    try:
        import sinabs
        from sinabs.activation import SingleSpike
        from sinabs.from_torch import from_model
        from sinabs.utils import normalize_weights
    except Exception as error:  # noqa: BLE001 - any import failure is the finding
        return PeerResult(name="sinabs", error=f"{type(error).__name__}: {error}")
    began = time.perf_counter()
    fused = _fused_sequential(copy.deepcopy(model))
    relus = [str(i) for i, layer in enumerate(fused) if isinstance(layer, nn.ReLU)]
    params = [str(int(name) - 1) for name in relus]
    normalize_weights(fused, torch.from_numpy(calib), output_layers=relus, param_layers=params,
                      percentile=PERCENTILE)
    with torch.no_grad():
        normalised_top1 = float((fused(torch.from_numpy(x)).argmax(1) ==
                                 torch.from_numpy(y)).float().mean())
    network = from_model(fused, input_shape=tuple(x.shape[1:]), num_timesteps=steps,
                         spike_fn=SingleSpike, min_v_mem=None)
    converted = time.perf_counter() - began

    def outputs(images: torch.Tensor) -> torch.Tensor:
        network.reset_states()
        repeated = images.unsqueeze(1).expand(len(images), steps, *images.shape[1:])
        out = network(repeated.reshape(-1, *images.shape[1:]))
        return out.view(len(images), steps, -1).transpose(0, 1)

    top1, seconds = _accuracy_per_step(outputs, x, y, steps)
    return PeerResult(name="sinabs", version=getattr(sinabs, "__version__", "?"), top1=top1,
                      convert_seconds=converted, simulate_seconds=seconds,
                      notes="normalize_weights(percentile=99.9) on the BN-fused net "
                            "(percentile over all activations); IAFSqueeze, SingleSpike, "
                            "subtractive reset, no membrane floor; all T steps in one call. "
                            "normalize_weights leaves the next layer's bias unscaled, so the "
                            f"normalised ANN itself scores {100 * normalised_top1:.1f} %")


def run(job: PreparedJob, model_path: Path, sizes: Sizes, log=print) -> list[PeerResult]:
    steps = sizes.peer_steps
    sized = job.with_spec(eval_samples=sizes.peer_eval_samples)
    model = trained_module(model_path)
    calib = sized.ctx.calib_x
    results = [snnconv_result(sized, steps)]
    log(f"  peers: snnconv {results[-1].simulate_seconds:.1f} s")
    for peer in (spikingjelly_result, sinabs_result):
        try:
            results.append(peer(model, calib, sized.eval_x, sized.eval_y, steps))
        except Exception as error:  # noqa: BLE001 - a failing peer is reported, not fatal
            name = peer.__name__.removesuffix("_result")
            results.append(PeerResult(name=name, error=f"{type(error).__name__}: {error}"))
        log(f"  peers: {results[-1].name} "
            f"{results[-1].error or f'{results[-1].simulate_seconds:.1f} s'}")
    return results


def table(results: list[PeerResult], sizes: Sizes, ann_top1: float | None = None) -> str:
    working = [r for r in results if r.error is None]
    shown = [t for t in sizes.peer_report_steps if t <= sizes.peer_steps]
    header = ["library", "version"] + [f"top-1 t={t}" for t in shown] + \
        ["convert (s)", "simulate (s)", "samples·steps/s"]
    work = sizes.peer_eval_samples * sizes.peer_steps
    body = [[r.name, r.version] + [f"{100 * r.top1[t - 1]:.1f}" for t in shown] +
            [f"{r.convert_seconds:.2f}", f"{r.simulate_seconds:.2f}",
             f"{work / r.simulate_seconds:,.0f}"] for r in working]
    lines = [markdown_table(header, body), ""]
    ann = f" (ANN top-1 {100 * ann_top1:.1f} %)" if ann_top1 is not None else ""
    lines.append(f"Same trained {ARCH} weights{ann}, same {sizes.peer_eval_samples} test "
                 f"images, T = {sizes.peer_steps}, direct input, batch {BATCH}, calibration on "
                 "the same first training images. Single run (not a median).")
    lines += ["", "What each column means per library:", ""]
    lines += [f"- **{r.name}**: {r.notes}" for r in working]
    for failed in (r for r in results if r.error is not None):
        lines.append(f"- **{failed.name}** could not be run: `{failed.error}`")
    return "\n".join(lines)
