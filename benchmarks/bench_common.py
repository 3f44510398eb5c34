"""What every benchmark shares: the machine description, the model, a prepared job, medians.

A benchmark measures variants side by side: each repeat runs every variant once, in turn,
so a load spike from other work on the machine hits all variants of that repeat alike.
Ratios are taken within a repeat and summarised by their median.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from core import pipeline, zoo
from core.datasets import Dataset, load_dataset, take
from core.encoders import InputEncoder
from core.methods import ConversionContext, convert
from core.report import MethodResult
from core.simulate import simulate
from core.snn import SpikingNetwork
from core.spec import METHODS, JobSpec
from core.train import export_safetensors, fit

ARCH = "cnn-small"
DATASET = "mnist-5k"
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is; ``quick()`` is the smoke test's version."""

    repeats: int = 3
    calib_samples: int = 1000
    throughput_steps: tuple[int, ...] = (8, 32, 128)
    throughput_samples: int = 50
    memory_budgets_mb: tuple[float, ...] = (1, 64, 256, 1024, 4096)
    memory_steps: int = 64
    memory_samples: int = 100
    methods: tuple[str, ...] = METHODS
    method_steps: int = 8
    method_eval_samples: int = 300
    finetune_epochs: int = 1
    ctt_batches: int = 20
    latency_steps: int = 256
    latency_eval_samples: int = 200
    peer_steps: int = 128                     # the accuracy pass runs every network this long
    peer_eval_samples: int = 1000
    peer_report_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    peer_cost_steps: int = 32                 # time, spikes and peak memory are measured here
    peer_cost_samples: int = 100              # one batch
    peer_cq_steps: tuple[int, ...] = (1, 2, 4, 8)   # the paper's suite, one network per T
    peer_finetune_epochs: int = 1             # its short CQ fine-tune
    peer_finetune_samples: int | None = None  # on this many training images; None: all
    peer_memory_all: bool = True              # False: peak memory of one per library only
    train_epochs: int | None = None  # None: the demo's cached, fully trained weights

    @classmethod
    def quick(cls) -> Sizes:
        return cls(repeats=1, calib_samples=32, throughput_steps=(2,), throughput_samples=8,
                   memory_budgets_mb=(64,), memory_steps=4, memory_samples=8,
                   methods=("max-norm",), method_steps=2, method_eval_samples=16,
                   finetune_epochs=1, ctt_batches=1,
                   latency_steps=4, latency_eval_samples=16, peer_steps=4,
                   peer_eval_samples=16, peer_report_steps=(1, 2, 4), peer_cost_steps=4,
                   peer_cost_samples=8, peer_cq_steps=(2,), peer_finetune_samples=64,
                   peer_memory_all=False,
                   train_epochs=0)


def machine() -> dict[str, str]:
    """CPU model, cores, torch version and threads, for the header of the results."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch": torch.__version__,
            "torch threads": str(torch.get_num_threads()),
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """(wall seconds, result) of one call."""
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def model_file(sizes: Sizes, workdir: Path, dataset: Dataset | None = None) -> Path:
    """cnn-small weights as safetensors: the demo's trained model, or a briefly trained one."""
    if sizes.train_epochs is None:
        from core.demo import demo_model

        return demo_model(quiet=True)
    torch.manual_seed(0)
    model = zoo.build(ARCH)
    if sizes.train_epochs > 0:
        data = dataset or load_dataset(DATASET)
        fit(model, data.train, epochs=sizes.train_epochs, lr=2e-3, batch_size=64, seed=0)
    workdir.mkdir(parents=True, exist_ok=True)
    return export_safetensors(model.eval(), workdir / f"{ARCH}-e{sizes.train_epochs}.safetensors")


@dataclass
class PreparedJob:
    """A conversion context built once, so repeated conversions skip loading and tracing."""

    ctx: ConversionContext
    dataset: Dataset
    eval_x: np.ndarray
    eval_y: np.ndarray

    def with_spec(self, **changes) -> PreparedJob:
        """The same model and data under a changed spec (fresh method cache)."""
        spec = self.ctx.spec.model_copy(update=changes)
        ctx = ConversionContext(ann=self.ctx.ann, trainable=self.ctx.trainable, spec=spec,
                                device=self.ctx.device,
                                sample_shape=self.ctx.sample_shape, train_x=self.ctx.train_x,
                                train_y=self.ctx.train_y,
                                calib_x=take(self.dataset.train, spec.calib_samples).x,
                                progress=self.ctx.progress)
        evaluation = take(self.dataset.test, spec.eval_samples)
        return PreparedJob(ctx=ctx, dataset=self.dataset, eval_x=evaluation.x,
                           eval_y=evaluation.y)


def prepare(spec: JobSpec) -> PreparedJob:
    """Load and canonicalise the spec's model exactly as ``core.pipeline.run`` does."""
    job = pipeline.prepare(spec)
    return PreparedJob(ctx=job.ctx, dataset=job.dataset, eval_x=job.evaluation.x,
                       eval_y=job.evaluation.y)


def convert_once(job: PreparedJob, method: str) -> SpikingNetwork:
    torch.manual_seed(job.ctx.spec.seed)
    return convert(method, job.ctx)


def simulate_again(job: PreparedJob, snn: SpikingNetwork, memory_budget_mb: float,
                   encoder: InputEncoder | None = None) -> MethodResult:
    """Simulate an already converted network on the job's evaluation samples.

    ``encoder`` replaces the network's input encoder (to benchmark an encoding variant).
    """
    if encoder is not None:
        snn.encoder = encoder
    return simulate(snn, job.eval_x, job.eval_y, sample_shape=job.dataset.input_shape,
                    batch_size=job.ctx.spec.batch_size, device=torch.device("cpu"),
                    memory_budget_mb=memory_budget_mb)


def convert_and_simulate(job: PreparedJob, method: str, memory_budget_mb: float,
                         encoder: InputEncoder | None = None) -> MethodResult:
    """Convert with ``method`` and simulate on the job's evaluation samples."""
    return simulate_again(job, convert_once(job, method), memory_budget_mb, encoder)
