"""Sharded evaluation: partial results of slices of the evaluation split, merged exactly (the
converted networks the shards share are stored by ``core.network_files``).

A job's evaluation split is cut into slices [start, stop); every slice is simulated with the
same converted networks (built once, ``core.network_files``) and summarised as a
:class:`ShardResult`.  :func:`merge` adds the slices up into the MethodResults one run over the
whole split gives.  What merges how:

- exact (integer counts): ``top1``, ``top5``, ``agreement`` and ``reference_top1``.  A
  MethodResult's fraction is ``count / samples``, so ``round(fraction · samples)`` recovers the
  count; the merged fraction is the summed count over the summed samples, the same division
  the unsharded run does, so these lists are bit-identical to it.
- sample-weighted means (equal to the unsharded value up to float rounding): ``sops``,
  ``energy_uj`` and the per-layer ``firing_rate``, ``saturated_fraction``,
  ``silent_fraction`` and ``rate_error`` (each layer has the same neurons per sample, so the
  per-neuron mean over the whole split is the sample-weighted mean of the slices' means).
- early exit: per threshold, the correct samples and the exit steps add up exactly, SOPs
  and energy as sample-weighted means; the thresholds and the calibration numbers come from
  the job's plan (chosen once, ``core.pipeline.share_networks``), so every slice has the
  same ones (checked), and the operating point is chosen again from them.
- taken from the first slice (the same in every slice): ``latency``, ``parameters``,
  ``analog_input`` and each layer's name, kind, channels and threshold statistics.
- ``seconds``: the simulation seconds of all slices added up (work, not wall time).

Slices should start at multiples of the job's batch size (``shard_bounds`` does that), so each
slice simulates exactly the batches the unsharded run does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from core.early_exit import ExitCounts, calibration_of, slice_counts, summarise
from core.paths import atomic_write_bytes
from core.report import EarlyExit, LayerAttribution, LayerStats, MethodResult

# Progress of a sharded job: conversion up to SHARDS_START, the shards up to SHARDS_END.
SHARDS_START, SHARDS_END = 0.30, 0.95


class ShardMethod(BaseModel):
    """One method's result on one slice, as counts (exact) and sample-weighted sums."""

    method: str
    samples: int
    top1_correct: list[int]
    top5_correct: list[int]
    agreement_count: list[int]
    reference_correct: int | None
    sops_sum: list[float]
    energy_uj_sum: list[float]
    layers: list[LayerStats] = Field(description="the slice's own means (weighted on merge)")
    attribution_correct: dict[str, list[int]] = Field(
        default_factory=dict, description="per attributed layer (in order): its hybrid's "
                                          "correct samples per t")
    exit_counts: ExitCounts | None = Field(
        None, description="with early exit: the slice's sums at each threshold")
    template: MethodResult = Field(description="the slice's MethodResult (fields copied)")


class ShardResult(BaseModel):
    """Every method's result on the slice [start, stop) of the evaluation split."""

    index: int
    start: int
    stop: int
    methods: list[ShardMethod]


def shard_bounds(samples: int, shard_size: int, batch_size: int = 1) -> list[tuple[int, int]]:
    """[start, stop) slices of at most ``shard_size`` samples (rounded up to a multiple of
    ``batch_size``, so a slice holds whole batches of the unsharded run)."""
    if shard_size <= 0:
        return [(0, samples)]
    size = -(-shard_size // batch_size) * batch_size
    return [(start, min(start + size, samples)) for start in range(0, samples, size)]


def shard_progress(done: int, total: int) -> float:
    """The job's overall progress once ``done`` of ``total`` shards have finished."""
    return SHARDS_START + (SHARDS_END - SHARDS_START) * done / max(total, 1)


def _count(fraction: float, samples: int) -> int:
    return round(fraction * samples)


def to_shard(result: MethodResult, samples: int) -> ShardMethod:
    """Counts and sums of one slice's MethodResult (``samples``: the slice's length)."""
    return ShardMethod(
        method=result.method, samples=samples,
        top1_correct=[_count(f, samples) for f in result.top1],
        top5_correct=[_count(f, samples) for f in result.top5],
        agreement_count=[_count(f, samples) for f in result.agreement],
        reference_correct=(None if result.reference_top1 is None
                           else _count(result.reference_top1, samples)),
        sops_sum=[s * samples for s in result.sops],
        energy_uj_sum=[e * samples for e in result.energy_uj],
        layers=result.layers,
        attribution_correct={a.layer: [_count(f, samples) for f in a.top1]
                             for a in result.error_attribution},
        exit_counts=(None if result.early_exit is None
                     else slice_counts(result.early_exit, samples)),
        template=result.model_copy(update={"layers": [], "error_attribution": []}))


def _fractions(counts: Sequence[float], samples: int) -> list[float]:
    return [float(c) / max(samples, 1) for c in counts]


def _column_sums(rows: list[list[float]]) -> list[float]:
    if len({len(row) for row in rows}) > 1:
        raise ValueError("the shards simulated different numbers of steps")
    return [sum(column) for column in zip(*rows, strict=True)]


_WEIGHTED_LAYER_FIELDS = ("firing_rate", "saturated_fraction", "silent_fraction", "rate_error",
                          "spikes_per_sample")


def _merge_layers(parts: list[ShardMethod], samples: int) -> list[LayerStats]:
    first = parts[0].layers
    if any([layer.name for layer in part.layers] != [layer.name for layer in first]
           for part in parts):
        raise ValueError("the shards report different layers")
    merged = []
    for index, layer in enumerate(first):
        weighted = {name: sum(getattr(part.layers[index], name) * part.samples
                              for part in parts) / max(samples, 1)
                    for name in _WEIGHTED_LAYER_FIELDS}
        merged.append(layer.model_copy(update=weighted))
    return merged


def _merge_attribution(parts: list[ShardMethod], samples: int,
                       top1: list[float]) -> list[LayerAttribution]:
    """Each layer's hybrid accuracy from the slices' counts; the shares from those."""
    merged, previous = [], top1
    for layer in parts[0].attribution_correct:
        accuracy = _fractions(_column_sums([p.attribution_correct[layer] for p in parts]),
                              samples)
        merged.append(LayerAttribution(
            layer=layer, top1=accuracy,
            recovered=[a - b for a, b in zip(accuracy, previous, strict=True)]))
        previous = accuracy
    return merged


def _merge_early_exit(parts: list[ShardMethod]) -> EarlyExit | None:
    """The early exit at the plan's thresholds from the slices' summed counts."""
    first = parts[0].template.early_exit
    if first is None:
        return None
    calibration = calibration_of(first)
    if any(part.template.early_exit is None
           or calibration_of(part.template.early_exit) != calibration for part in parts):
        raise ValueError("the shards exited early at different thresholds")
    total = parts[0].exit_counts
    for part in parts[1:]:
        total = total + part.exit_counts
    return summarise(calibration, total)


def merge_method(parts: list[ShardMethod]) -> MethodResult:
    """One method's MethodResult over all its slices (see the module docstring)."""
    if not parts:
        raise ValueError("nothing to merge")
    if len({part.method for part in parts}) > 1:
        raise ValueError("cannot merge different methods")
    samples = sum(part.samples for part in parts)
    template = parts[0].template
    references = [part.reference_correct for part in parts]
    top1 = _fractions(_column_sums([p.top1_correct for p in parts]), samples)
    return template.model_copy(update={
        "top1": top1,
        "error_attribution": _merge_attribution(parts, samples, top1),
        "top5": _fractions(_column_sums([p.top5_correct for p in parts]), samples),
        "agreement": _fractions(_column_sums([p.agreement_count for p in parts]), samples),
        "sops": _fractions(_column_sums([p.sops_sum for p in parts]), samples),
        "energy_uj": _fractions(_column_sums([p.energy_uj_sum for p in parts]), samples),
        "layers": _merge_layers(parts, samples),
        "early_exit": _merge_early_exit(parts),
        "reference_top1": (None if None in references
                           else sum(references) / max(samples, 1)),
        "seconds": sum(part.template.seconds for part in parts),
    })


def merge(shards: Sequence[ShardResult]) -> list[MethodResult]:
    """The MethodResults of the whole split from the ShardResults of its slices (any order;
    the slices must tile [0, samples) without gaps or overlaps)."""
    ordered = sorted(shards, key=lambda shard: shard.start)
    if not ordered:
        raise ValueError("nothing to merge")
    position = ordered[0].start
    for shard in ordered:
        if shard.start != position:
            raise ValueError(f"the shards do not tile the split: a gap or overlap at {position}")
        position = shard.stop
    names = [m.method for m in ordered[0].methods]
    if any([m.method for m in shard.methods] != names for shard in ordered):
        raise ValueError("the shards evaluated different methods")
    return [merge_method([shard.methods[i] for shard in ordered]) for i in range(len(names))]


def partial_top1(shards: Sequence[ShardResult]) -> dict[str, list[float]]:
    """Top-1 per t over the slices finished so far (the live curve of a sharded job)."""
    curves: dict[str, list[float]] = {}
    for index, part in enumerate(shards[0].methods if shards else []):
        parts = [shard.methods[index] for shard in shards]
        samples = sum(p.samples for p in parts)
        curves[part.method] = _fractions(_column_sums([p.top1_correct for p in parts]), samples)
    return curves


def claim_rank(directory: Path, total: int) -> int:
    """The number 1..total of a finished shard, each handed out once across every process
    that shares ``directory`` (an exclusive create per number): the shard that finishes
    k-th gets k, so progress counts shards without a shared counter."""

    for rank in range(1, total + 1):
        try:
            os.close(os.open(Path(directory) / f"done-{rank:05d}",
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return rank
    return total  # a retried shard whose first try had already counted itself


def write_shard(shard: ShardResult, path: Path) -> None:
    atomic_write_bytes(Path(path), shard.model_dump_json().encode())


def read_shard(path: Path) -> ShardResult:
    return ShardResult.model_validate_json(Path(path).read_bytes())
