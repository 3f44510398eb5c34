"""The embedded demo: a small CNN trained on 4,000 real MNIST digits, then converted.

The trained weights are cached as safetensors, so later runs skip training; the conversion
goes through the same pipeline (and the same safetensors ingestion) as any user's job.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core import zoo
from core.datasets import load_dataset
from core.report import Report
from core.spec import CLASSIC_METHODS, JobSpec
from core.train import evaluate, export_safetensors, fit

DEMO_ARCH = "cnn-small"
DEMO_DATASET = "mnist-5k"
DEMO_EPOCHS = 4
DEMO_SEED = 0


def cache_dir() -> Path:
    return Path(os.environ.get("SNNCONV_CACHE", Path.home() / ".cache" / "snnconv"))


def demo_model(quiet: bool = False) -> Path:
    """The cached demo weights, training them first when they are missing."""
    path = cache_dir() / f"demo-{DEMO_ARCH}-{DEMO_DATASET}-e{DEMO_EPOCHS}-s{DEMO_SEED}.safetensors"
    if path.exists():
        return path
    dataset = load_dataset(DEMO_DATASET)
    torch.manual_seed(DEMO_SEED)
    model = zoo.build(DEMO_ARCH)

    def report(fraction: float, message: str) -> None:
        if not quiet:
            print(f"\rtraining {DEMO_ARCH} on {DEMO_DATASET}: {100 * fraction:5.1f} % {message}",
                  end="", flush=True)

    fit(model, dataset.train, epochs=DEMO_EPOCHS, lr=2e-3, batch_size=64, seed=DEMO_SEED,
        progress=report)
    if not quiet:
        accuracy = evaluate(model, dataset.test)
        print(f"\ntrained: test top-1 {100 * accuracy:.2f} %; cached at {path}")
    export_safetensors(model, path)
    return path


def run_demo(out: Path, *, timesteps: int = 32, quiet: bool = False) -> Report:
    """Convert the demo CNN with every classic method and write the report files."""
    from core.cli import run_and_write

    spec = JobSpec(model_path=demo_model(quiet), arch=DEMO_ARCH, dataset=DEMO_DATASET,
                   methods=list(CLASSIC_METHODS), timesteps=timesteps, seed=DEMO_SEED,
                   device="cpu")
    return run_and_write(spec, out, quiet)
