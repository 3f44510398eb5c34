"""SpikingJelly's ANN→SNN recipes on any trained torch module, as a peer baseline.

SpikingJelly is not a project dependency: ``make bench-peers`` installs it (pinned in the
Makefile's ``PEERS``) with ``pip install --no-deps --target .bench-deps``; importing this
module appends ``.bench-deps`` to ``sys.path`` (appended, so nothing there can shadow the
project's own torch).

The recipes (``RECIPES``, by name):

- ``"max"``, ``"99.9%"``, ``"channel-wise 99.9%"``: ``ann2snn.RateCodingRecipe`` with
  ``mode="max"`` / ``mode="99.9%"`` / ``mode="99.9%", channel_wise=True`` and its other
  options at their defaults;
- ``"ltb"``: ``ann2snn.LocalThresholdBalancingRecipe`` (Bu, Li & Yu, CVPR 2025) with its
  defaults.

Every recipe gets the calibration images in batches of ``batch_size`` (one calibration pass,
as SpikingJelly's recipes do), the converted network is called once per time step on the
analog image (direct input), and the readout is the output accumulated from step 1
(``delay_start=0``; SpikingJelly's LTB example instead starts it at
``ann2snn.estimate_delay_start``, which ``delay_start="auto"`` reproduces).

    from benchmarks.peer_recipes import spikingjelly_top1_per_step
    top1 = spikingjelly_top1_per_step(model, calib_x, test_x, test_y, steps=8, recipe="ltb")
    # top1[t - 1]: top-1 accuracy (a fraction) after t steps, t = 1..8
    run = spikingjelly_run(model, calib_x, test_x, test_y, steps=8, recipe="ltb")
    # run.top1 as above; run.spikes_per_image[t - 1]: spikes per image of all spiking
    # layers (every SpikingJelly neuron) over steps 1..t
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
BENCH_DEPS = REPO / ".bench-deps"
if BENCH_DEPS.is_dir() and str(BENCH_DEPS) not in sys.path:
    # appended, so nothing in .bench-deps can shadow the project's own packages
    sys.path.append(str(BENCH_DEPS))

BATCH = 100
PERCENTILE = 99.9

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class SpikingJellyRecipe:
    """One of SpikingJelly's conversion recipes with the options the benchmarks use."""

    name: str
    kind: str                  # "rate" (RateCodingRecipe) or "ltb" (LocalThresholdBalancing)
    notes: str                 # what it does, for a benchmark's table
    mode: str = "max"          # RateCodingRecipe's statistic
    channel_wise: bool = False  # RateCodingRecipe: one scale per channel

    def build(self, loader: list) -> object:
        """The SpikingJelly recipe object, calibrating on ``loader``."""
        from spikingjelly.activation_based import ann2snn
        from spikingjelly.activation_based.ann2snn.recipes import (
            local_threshold_balancing,
            rate_coding,
        )

        # their calibration loops would print a progress bar
        rate_coding.tqdm = local_threshold_balancing.tqdm = iter
        if self.kind == "ltb":
            return ann2snn.LocalThresholdBalancingRecipe(dataloader=loader)
        return ann2snn.RateCodingRecipe(dataloader=loader, mode=self.mode,
                                        channel_wise=self.channel_wise)


_RATE_NOTES = ("RateCodingRecipe: Conv-BN fused, scale = EMA over calibration batches of {what}; "
               "IFNode (soft reset, u(0) = 0), one forward call per step")

RECIPES: dict[str, SpikingJellyRecipe] = {recipe.name: recipe for recipe in (
    SpikingJellyRecipe("max", "rate", _RATE_NOTES.format(what="the layer's maximum activation"),
                       mode="max"),
    SpikingJellyRecipe(f"{PERCENTILE}%", "rate",
                       _RATE_NOTES.format(what="the 99.9th pct of all the layer's activations"),
                       mode=f"{PERCENTILE}%"),
    SpikingJellyRecipe(f"channel-wise {PERCENTILE}%", "rate",
                       _RATE_NOTES.format(what="the 99.9th pct per channel (channel_wise=True, "
                                               "ChannelVoltageScaler before and after each "
                                               "IFNode)"),
                       mode=f"{PERCENTILE}%", channel_wise=True),
    SpikingJellyRecipe(
        "ltb", "ltb",
        "LocalThresholdBalancingRecipe with its defaults (fuse_flag=True, channel_dim=1, "
        "eps=1e-6; Bu, Li & Yu, CVPR 2025): Conv-BN fused; training-free, the ANN's weights "
        "are kept; one pass over the calibration batches learns a threshold θ per channel of "
        "each ReLU, starting at 0 and raised after every batch by 2 × the batch mean of "
        "relu(a − θ) (the activation clipped at the current θ downstream while it learns); "
        "HalfThresholdIFNode (threshold 1 between ChannelVoltageScalers 1/θ and θ, soft "
        "reset, u(0) = θ/2); one forward call per step, readout from step 1 (no "
        "estimate_delay_start)"),
)}


def version() -> str:
    """SpikingJelly's installed version (ImportError when it is not installed)."""
    from importlib.metadata import version as installed

    import spikingjelly  # noqa: F401 - the import is the check

    return installed("spikingjelly")


def _tensor(x: ArrayLike) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _recipe(recipe: str | SpikingJellyRecipe) -> SpikingJellyRecipe:
    if isinstance(recipe, SpikingJellyRecipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown SpikingJelly recipe {recipe!r}; one of {sorted(RECIPES)}")
    return RECIPES[recipe]


class SpikingJellyNetwork:
    """A model converted by one SpikingJelly recipe, with a spike count on every neuron."""

    def __init__(self, model: nn.Module, calib_x: ArrayLike,
                 recipe: str | SpikingJellyRecipe, batch_size: int = BATCH,
                 device: str | torch.device = "cpu") -> None:
        from spikingjelly.activation_based import ann2snn, neuron

        self.recipe = _recipe(recipe)
        self.device = torch.device(device)
        calib = _tensor(calib_x)
        # batches as (input, target) pairs, the form SpikingJelly's loaders yield
        self.calibration = [(calib[i:i + batch_size].to(self.device), None)
                            for i in range(0, len(calib), batch_size)]
        ann = copy.deepcopy(model).eval()
        self.snn = ann2snn.Converter(recipe=self.recipe.build(self.calibration),
                                     device=self.device).convert(ann).eval()
        self._fired = 0.0
        for module in self.snn.modules():
            if isinstance(module, neuron.BaseNode):
                module.register_forward_hook(self._count)

    def _count(self, _module, _inputs, out) -> None:
        self._fired += float(out.sum())

    def delay_start(self, steps: int) -> int:
        """SpikingJelly's ``estimate_delay_start`` for a run of ``steps`` on the calibration
        batches (its LTB example's readout start)."""
        from spikingjelly.activation_based import ann2snn

        return int(ann2snn.estimate_delay_start(self.snn, self.calibration, self.device, steps))

    def step_outputs(self, images: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
        """The output of each step, [steps, B, K], and the spikes of all neurons over them."""
        outputs, fired = self.step_outputs_per_step(images, steps)
        return outputs, float(fired[-1])

    def step_outputs_per_step(self, images: torch.Tensor, steps: int
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output of each step, [steps, B, K], and the spikes of all neurons over steps
        1..t for each t, [steps] (float64, cumulative)."""
        from spikingjelly.activation_based import functional

        functional.reset_net(self.snn)
        self._fired = 0.0
        outputs, fired = [], []
        with torch.no_grad():
            images = images.to(self.device)
            for _ in range(steps):
                outputs.append(self.snn(images))
                fired.append(self._fired)
        return torch.stack(outputs), torch.tensor(fired, dtype=torch.float64)


def top1_per_step(step_outputs: Callable[[torch.Tensor], tuple[torch.Tensor, float]],
                  test_x: ArrayLike, test_y: ArrayLike, batch_size: int = BATCH,
                  delay_start: int = 0) -> tuple[list[float], float]:
    """Top-1 after each step of ``step_outputs(batch) -> (outputs [steps, B, K], spikes)``,
    reading the outputs accumulated from step ``delay_start + 1`` (NaN before it), and the
    spikes per image."""
    top1, spikes = _readout(step_outputs, test_x, test_y, batch_size, delay_start)
    return top1, float(spikes)


def _readout(step_outputs: Callable, test_x: ArrayLike, test_y: ArrayLike, batch_size: int,
             delay_start: int):
    """The loop of ``top1_per_step`` and ``spikingjelly_run``: top-1 per step and the
    batches' spikes (a float, or a [steps] tensor of cumulative counts) summed, per image."""
    x, y = _tensor(test_x), _tensor(test_y)
    correct, spikes = None, 0.0
    with torch.no_grad():
        for first in range(0, len(x), batch_size):
            labels = y[first:first + batch_size]
            outputs, fired = step_outputs(x[first:first + batch_size])
            outputs = outputs.detach().cpu()
            summed = outputs[delay_start:].cumsum(0)
            hits = (summed.argmax(-1) == labels).sum(-1).to(torch.float64)
            correct = hits if correct is None else correct + hits
            spikes += fired
    top1 = [float("nan")] * delay_start + (correct / len(x)).tolist()
    return top1, spikes / len(x)


def spikingjelly_top1_per_step(model: nn.Module, calib_x: ArrayLike, test_x: ArrayLike,
                               test_y: ArrayLike, steps: int,
                               recipe: str | SpikingJellyRecipe = "ltb", *,
                               batch_size: int = BATCH, device: str | torch.device = "cpu",
                               delay_start: int | str = 0) -> list[float]:
    """Convert a trained ANN with one of SpikingJelly's recipes and return its top-1 per step.

    :param model: the trained ANN, any torch ``nn.Module`` that ``torch.fx`` traces and whose
        activations are ``nn.ReLU`` modules (it is deep-copied, never changed).
    :param calib_x: calibration images, [N, C, H, W] (numpy array or tensor, float32, the
        model's preprocessing already applied); one pass in batches of ``batch_size``.
    :param test_x: test images, as ``calib_x``.
    :param test_y: their integer labels, [M].
    :param steps: T, the number of time steps simulated (one forward call each).
    :param recipe: a name in ``RECIPES`` (``"max"``, ``"99.9%"``, ``"channel-wise 99.9%"``,
        ``"ltb"``) or a ``SpikingJellyRecipe``.
    :param batch_size: images per calibration batch and per simulated batch.
    :param device: where SpikingJelly converts and simulates.
    :param delay_start: the readout accumulates the outputs of steps ``delay_start + 1..T``:
        0 (every step; the benchmarks' anytime readout), an int, or ``"auto"`` (SpikingJelly's
        ``estimate_delay_start`` for this T, as its LTB example does).
    :return: ``top1[t - 1]`` is the fraction of test images classified correctly by the
        output accumulated up to step t, for t = 1..steps (NaN for t ≤ ``delay_start``).
    """
    return spikingjelly_run(model, calib_x, test_x, test_y, steps, recipe,
                            batch_size=batch_size, device=device, delay_start=delay_start).top1


@dataclass(frozen=True)
class PeerRun:
    """What one run of a converted network measured, per step t = 1..steps."""

    top1: list[float]              # [t - 1]: top-1 (a fraction) of the readout after t steps
    spikes_per_image: list[float]  # [t - 1]: spikes per image of every neuron over steps 1..t


def spikingjelly_run(model: nn.Module, calib_x: ArrayLike, test_x: ArrayLike,
                     test_y: ArrayLike, steps: int,
                     recipe: str | SpikingJellyRecipe = "ltb", *,
                     batch_size: int = BATCH, device: str | torch.device = "cpu",
                     delay_start: int | str = 0) -> PeerRun:
    """``spikingjelly_top1_per_step`` (same parameters), also counting the spikes per image
    of all the converted network's neurons (every SpikingJelly ``BaseNode``) after each step.
    """
    network = SpikingJellyNetwork(model, calib_x, recipe, batch_size=batch_size, device=device)
    start = network.delay_start(steps) if delay_start == "auto" else int(delay_start)
    if not 0 <= start < steps:
        raise ValueError(f"delay_start must be in [0, {steps}), not {start}")
    top1, spikes = _readout(lambda images: network.step_outputs_per_step(images, steps),
                            test_x, test_y, batch_size, start)
    return PeerRun(top1=top1, spikes_per_image=spikes.tolist())


def recipe_names() -> Sequence[str]:
    """The names ``spikingjelly_top1_per_step`` accepts."""
    return tuple(RECIPES)
