"""Per-sample early exit: each sample stops at the first t at which its output is decided.

With O_k(t) the output current of class k accumulated over steps 1 … t, the exit statistic
is the margin of the mean output per step,

    m(t) = (O_(1)(t) − O_(2)(t)) / t,

O_(1) and O_(2) the largest and the second-largest class (ASG: the readout after t steps is
already a mean per step, so m(t) = O_(1)(t) − O_(2)(t)).  It is in the units of the ANN's
logits and tends to their margin as t grows.  At threshold τ a sample exits at

    t_exit(τ) = min {t ≤ T : m(t) ≥ τ}   (T when there is none),

is classified by argmax O(t_exit), and costs t_exit steps and the synaptic operations up to
t_exit.  The thresholds come from the first ``EXIT_CALIB_SAMPLES`` calibration images (the
training split): the quantiles ``EXIT_QUANTILES`` of m(t) over all those images and all t,
without repeats, and τ = ∞ (``None``: the plain readout at T).  The operating point is the τ
with the fewest calibration mean steps whose calibration top-1 is at most ``tolerance`` below
the calibration top-1 at τ = ∞.  The test split is then counted at every τ as sums over its
samples (``ExitCounts``), which slices of the split add up exactly; no test image chooses
anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, Field

from core.report import EarlyExit, ExitPoint

EXIT_CALIB_SAMPLES = 1000
# 0, 0.05, …, 0.95, then finer near the top, where the thresholds that keep accuracy lie
EXIT_QUANTILES = (*(k / 20 for k in range(20)), 0.975, 0.99, 0.995)
# a fraction's own rounding: 197/200 is not below 0.99 − 0.005
_ROUNDING = 1e-12


def output_margin(output: torch.Tensor) -> torch.Tensor:
    """Largest minus second-largest entry over the last dimension (+∞ with one class)."""
    if output.shape[-1] < 2:
        return torch.full(output.shape[:-1], float("inf"), device=output.device)
    top = output.topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


@dataclass
class BatchTrace:
    """One batch's per-sample readout after every step t = 1 … T (rows t − 1)."""

    prediction: np.ndarray  # [T, B] argmax of the output after t steps
    margin: np.ndarray      # [T, B] m(t)
    sops: np.ndarray        # [T, B] synaptic operations up to the readout after t steps
    energy_uj: np.ndarray   # [T, B] energy up to that readout
    labels: np.ndarray      # [B]


def join(traces: list[BatchTrace]) -> BatchTrace:
    """The batches as one (samples in order)."""
    return BatchTrace(*(np.concatenate([getattr(t, name) for t in traces], axis=-1)
                        for name in ("prediction", "margin", "sops", "energy_uj", "labels")))


class ExitCounts(BaseModel):
    """Sums over samples at each threshold (in ``thresholds`` order): slices add up."""

    samples: int = 0
    correct: list[int]
    steps: list[int] = Field(description="exit steps added up")
    sops: list[float] = Field(description="synaptic operations up to each exit, added up")
    energy_uj: list[float] = Field(description="energy up to each exit, added up")

    @classmethod
    def empty(cls, thresholds: int) -> ExitCounts:
        return cls(correct=[0] * thresholds, steps=[0] * thresholds,
                   sops=[0.0] * thresholds, energy_uj=[0.0] * thresholds)

    def __add__(self, other: ExitCounts) -> ExitCounts:
        if len(self.correct) != len(other.correct):
            raise ValueError("early-exit counts of different thresholds")
        return ExitCounts(samples=self.samples + other.samples,
                          **{name: [a + b for a, b in zip(getattr(self, name),
                                                          getattr(other, name), strict=True)]
                             for name in ("correct", "steps", "sops", "energy_uj")})


def exit_steps(margin: np.ndarray, threshold: float | None) -> np.ndarray:
    """Each sample's exit index (t_exit − 1) at ``threshold``, from its margins [T, B]."""
    last = np.full(margin.shape[1], margin.shape[0] - 1)
    if threshold is None:
        return last
    reached = margin >= threshold
    return np.where(reached.any(0), reached.argmax(0), last)


def count_exits(trace: BatchTrace, thresholds: list[float | None]) -> ExitCounts:
    """What exiting at each threshold gives on the samples of ``trace``."""
    counts = ExitCounts.empty(0)
    samples = np.arange(trace.labels.shape[0])
    for threshold in thresholds:
        index = exit_steps(trace.margin, threshold)
        counts.correct.append(int((trace.prediction[index, samples] == trace.labels).sum()))
        counts.steps.append(int((index + 1).sum()))
        counts.sops.append(float(trace.sops[index, samples].sum()))
        counts.energy_uj.append(float(trace.energy_uj[index, samples].sum()))
    counts.samples = len(samples)
    return counts


def candidate_thresholds(margin: np.ndarray) -> list[float | None]:
    """The quantiles ``EXIT_QUANTILES`` of the finite margins (values that occur, so the
    comparison m(t) ≥ τ is exact), increasing and without repeats, then None (τ = ∞)."""
    finite = margin[np.isfinite(margin)]
    if finite.size == 0:
        return [None]
    values = np.quantile(finite.astype(np.float64), EXIT_QUANTILES, method="inverted_cdf")
    return [*sorted({float(v) for v in values}), None]


class ExitCalibration(BaseModel):
    """What the calibration images decide: the thresholds and their counts there.  Stored
    in a sharded job's plan, so that every slice uses the same thresholds."""

    thresholds: list[float | None]
    counts: ExitCounts
    tolerance: float


def calibrate(trace: BatchTrace, tolerance: float) -> ExitCalibration:
    thresholds = candidate_thresholds(trace.margin)
    return ExitCalibration(thresholds=thresholds, counts=count_exits(trace, thresholds),
                           tolerance=tolerance)


def cheapest_within(points: list[ExitPoint], drop: float) -> int | None:
    """The point with the fewest calibration mean steps whose calibration top-1 is at most
    ``drop`` below the last point's (τ = ∞), the higher top-1 breaking a tie; None when the
    drop is negative (not even τ = ∞ is within it)."""
    if drop < -_ROUNDING:
        return None
    floor = points[-1].calib_top1 - drop - _ROUNDING
    eligible = [i for i, point in enumerate(points) if point.calib_top1 >= floor]
    if not eligible:
        return None
    return min(eligible, key=lambda i: (points[i].calib_mean_steps, -points[i].calib_top1))


def _mean(total: float, samples: int) -> float:
    return total / max(samples, 1)


def summarise(calibration: ExitCalibration, counts: ExitCounts) -> EarlyExit:
    """The report's early exit from the calibration and the test split's counts."""
    calib = calibration.counts
    points = [ExitPoint(threshold=threshold,
                        calib_top1=_mean(calib.correct[i], calib.samples),
                        calib_mean_steps=_mean(calib.steps[i], calib.samples),
                        top1=_mean(counts.correct[i], counts.samples),
                        mean_steps=_mean(counts.steps[i], counts.samples),
                        sops=_mean(counts.sops[i], counts.samples),
                        energy_uj=_mean(counts.energy_uj[i], counts.samples))
              for i, threshold in enumerate(calibration.thresholds)]
    return EarlyExit(calib_samples=calib.samples, tolerance=calibration.tolerance,
                     points=points, chosen=cheapest_within(points, calibration.tolerance))


def calibration_of(early_exit: EarlyExit) -> ExitCalibration:
    """The calibration an EarlyExit was summarised from (its counts are whole numbers)."""
    samples = early_exit.calib_samples
    points = early_exit.points
    counts = ExitCounts(samples=samples,
                        correct=[round(p.calib_top1 * samples) for p in points],
                        steps=[round(p.calib_mean_steps * samples) for p in points],
                        sops=[0.0] * len(points), energy_uj=[0.0] * len(points))
    return ExitCalibration(thresholds=[p.threshold for p in points], counts=counts,
                           tolerance=early_exit.tolerance)


def slice_counts(early_exit: EarlyExit, samples: int) -> ExitCounts:
    """The test split's counts behind an EarlyExit of ``samples`` samples: exact for the
    correct samples and the steps (whole numbers), sample-weighted sums for SOPs and energy."""
    points = early_exit.points
    return ExitCounts(samples=samples, correct=[round(p.top1 * samples) for p in points],
                      steps=[round(p.mean_steps * samples) for p in points],
                      sops=[p.sops * samples for p in points],
                      energy_uj=[p.energy_uj * samples for p in points])


@dataclass
class TraceCollector:
    """A simulation's per-sample sink that keeps every batch (for the calibration images)."""

    traces: list[BatchTrace] = field(default_factory=list)

    def __call__(self, trace: BatchTrace) -> None:
        self.traces.append(trace)

    def joined(self) -> BatchTrace:
        return join(self.traces)


@dataclass
class ExitCounter:
    """A simulation's per-sample sink that keeps only the counts at fixed thresholds (for
    the test split, whose traces need not fit in memory)."""

    thresholds: list[float | None]
    counts: ExitCounts = field(init=False)

    def __post_init__(self):
        self.counts = ExitCounts.empty(len(self.thresholds))

    def __call__(self, trace: BatchTrace) -> None:
        self.counts = self.counts + count_exits(trace, self.thresholds)
