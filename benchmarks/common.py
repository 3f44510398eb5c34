"""Helpers shared by the reproduction scripts: base-ANN training with a cache, job runs, tables.

Every SNN number comes from ``core.pipeline.run``; this module only trains the full-precision
starting point, remembers it between runs and formats what the pipeline reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import BaseModel
from safetensors.torch import load_file

from core import zoo
from core.datasets import Dataset
from core.paths import cache_dir
from core.pipeline import run
from core.progress import ProgressEvent
from core.report import MethodResult, Report
from core.spec import CQOptions, JobSpec
from core.train import evaluate, export_safetensors, fit

DEFAULT_CACHE = cache_dir() / "bench"


class Recipe(BaseModel):
    """How a full-precision (ReLU) network is trained; its hash names the cached weights."""

    arch: str
    dataset: str
    epochs: int
    lr: float
    optimizer: str = "adam"
    lr_decay: float = 0.7
    loss: str = "ce"
    augment: bool = True
    batch_size: int = 64
    seed: int = 0

    def key(self) -> str:
        text = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        augment = "±2 px shifts + Gaussian noise σ = 0.01" if self.augment else "none"
        return (f"{self.arch} from scratch, {self.epochs} epochs, {self.optimizer} lr {self.lr} "
                f"× {self.lr_decay} per epoch, batch {self.batch_size}, {self.loss} loss, "
                f"augmentation: {augment}, seed {self.seed}")


# The base ANNs of the MNIST benchmarks: the default run and the --quick smoke run on digits
# (shifts of ±2 px mean nothing on 8×8 digits).  Shared, so the scripts share cached weights.
MNIST_BASE = Recipe(arch="mnist-7conv", dataset="mnist-5k", epochs=6, lr=1e-3)
DIGITS_BASE = Recipe(arch="mlp-digits", dataset="digits", epochs=20, lr=3e-3, augment=False)


class TrainedANN(BaseModel):
    """A trained ReLU network on disk and what its training measured."""

    path: Path
    recipe: Recipe
    test_top1: float
    train_seconds: float
    cached: bool


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine_description() -> str:
    """CPU/GPU, core count and library versions, for the report's header."""
    processor = platform.processor() or platform.machine()
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU only ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})")
    return (f"{platform.system()} {platform.release()}, {processor}; {device}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def train_base_ann(recipe: Recipe, dataset: Dataset, cache_dir: Path, *, reuse: bool = True,
                   device: str = "cpu") -> TrainedANN:
    """Train ``recipe`` (or, with ``reuse``, take its cached weights) and save as safetensors.

    The file name holds a hash of the recipe, so a changed recipe never reuses old weights.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    weights = cache_dir / f"{recipe.arch}-{recipe.dataset}-{recipe.key()}.safetensors"
    sidecar = weights.with_suffix(".json")
    if reuse and weights.is_file() and sidecar.is_file():
        stats = json.loads(sidecar.read_text())
        log(f"reusing cached base ANN {weights} (test top-1 {100 * stats['test_top1']:.2f} %)")
        return TrainedANN(path=weights, recipe=recipe, test_top1=stats["test_top1"],
                          train_seconds=stats["train_seconds"], cached=True)
    log(f"training the base ANN: {recipe.describe()}")
    torch.manual_seed(recipe.seed)  # weight initialisation
    model = zoo.build(recipe.arch, num_classes=dataset.num_classes,
                      in_channels=dataset.input_shape[0])
    result = fit(model, dataset.train, epochs=recipe.epochs, lr=recipe.lr,
                 batch_size=recipe.batch_size, optimizer=recipe.optimizer,
                 lr_decay=recipe.lr_decay, loss=recipe.loss, augment=recipe.augment,
                 seed=recipe.seed, device=device, progress=_epoch_logger(recipe.epochs))
    top1 = evaluate(model, dataset.test, device=device)
    log(f"base ANN trained in {result.seconds:.0f} s: test top-1 {100 * top1:.2f} %")
    export_safetensors(model, weights)
    sidecar.write_text(json.dumps({"test_top1": top1, "train_seconds": result.seconds,
                                   "recipe": recipe.model_dump()}, indent=2))
    return TrainedANN(path=weights, recipe=recipe, test_top1=top1,
                      train_seconds=result.seconds, cached=False)


def same_budget_relu_top1(ann: TrainedANN, dataset: Dataset, options: CQOptions, *, seed: int,
                          device: str = "cpu") -> float:
    """Test top-1 of the ReLU ANN trained further exactly as CQ fine-tuning trains it.

    The CQ network sees base + fine-tune epochs; this ReLU twin gets the same, so the
    comparison the paper suite is judged by ("same budget") differs only in the activation.
    The batch size is the pipeline's fine-tuning batch (JobSpec's default batch_size).
    """
    model = zoo.build(ann.recipe.arch, num_classes=dataset.num_classes,
                      in_channels=dataset.input_shape[0])
    model.load_state_dict(load_file(ann.path))  # our own file, written by train_base_ann
    fit(model, dataset.train, epochs=options.finetune_epochs, lr=options.learning_rate,
        batch_size=JobSpec.model_fields["batch_size"].default, optimizer=options.optimizer,
        lr_decay=options.lr_decay, augment=options.augment, seed=seed, device=device)
    return evaluate(model, dataset.test, device=device)


def _epoch_logger(epochs: int):
    last = {"epoch": 0}

    def report(fraction: float, message: str) -> None:
        epoch = int(fraction * epochs + 1e-9)
        if epoch > last["epoch"]:
            last["epoch"] = epoch
            log(f"  {message}")

    return report


def _job_logger(label: str):
    last = {"key": None}

    def report(event: ProgressEvent) -> None:
        key = (event.stage, event.method)
        if key != last["key"] and event.stage in ("finetune", "convert", "simulate"):
            last["key"] = key
            log(f"  {label}: {event.stage} {event.method or ''} {event.message}")

    return report


def run_job(spec: JobSpec, label: str) -> Report:
    """``core.pipeline.run`` with progress lines on stderr and the wall time logged."""
    began = time.perf_counter()
    report = run(spec, _job_logger(label))
    scores = ", ".join(f"{r.method} {percent(final_top1(r))} %" for r in report.methods)
    log(f"{label}: done in {time.perf_counter() - began:.0f} s: {scores}")
    return report


def method(report: Report, name: str) -> MethodResult:
    return next(r for r in report.methods if r.method == name)


def final_top1(result: MethodResult) -> float:
    """Top-1 after the whole window T (the last element of the per-step curve)."""
    return result.top1[-1]


def percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
