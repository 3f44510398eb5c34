"""The embedded demo: a small CNN trained on 4,000 real MNIST digits, then converted.

Two jobs on the same trained CNN and the same 1,000 test images: the classic methods at
T = 32, and the paper's low-latency suite (cq-asg, cq-ctt) at T = 4 after a short CQ
fine-tuning.  Each job writes its own report files; one table shows both, grouped by neuron
class.  The trained weights are cached as safetensors, so later runs skip training; the
conversion goes through the same pipeline (and the same safetensors ingestion) as any
user's job.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from core import zoo
from core.datasets import load_dataset
from core.paths import atomic_write_bytes, cache_dir
from core.pipeline import run_into
from core.progress import ProgressCallback, ignore_progress
from core.report import REPORT_FILES, Report, accuracy_table
from core.spec import CLASSIC_METHODS, JobSpec
from core.train import evaluate, export_safetensors, fit

DEMO_ARCH = "cnn-small"
DEMO_DATASET = "mnist-5k"
DEMO_EPOCHS = 4
DEMO_SEED = 0
SUITE_METHODS = ("cq-asg", "cq-ctt")
SUITE_TIMESTEPS = 4
# CQ fine-tuning epochs of the suite job: a few seconds each on 2 cores, so the demo stays
# well inside 3 minutes; `make demo` prints what they give (README: cq-asg 96.4 % at T = 4).
SUITE_FINETUNE_EPOCHS = 4
TABLE_FILE = "table.txt"


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


@dataclass
class DemoResult:
    """The demo's two reports, their combined table and the files written (relative paths)."""

    classic: Report
    suite: Report
    table: str
    files: list[str]

    @property
    def reports(self) -> tuple[Report, Report]:
        return self.classic, self.suite

    def files_text(self) -> str:
        """The files by folder: "classic/ (report.json, …), suite/ (…), table.txt"."""
        folders: dict[str, list[str]] = {}
        for name in self.files:
            folder, _, leaf = name.rpartition("/")
            folders.setdefault(folder, []).append(leaf)
        return ", ".join(f"{folder}/ ({', '.join(leaves)})" if folder else ", ".join(leaves)
                         for folder, leaves in folders.items())


def demo_specs(model_path: Path, timesteps: int = 32) -> tuple[JobSpec, JobSpec]:
    """The classic job (T = ``timesteps``) and the suite job (T = 4): same model, data, seed."""
    common = {"model_path": model_path, "arch": DEMO_ARCH, "dataset": DEMO_DATASET,
              "seed": DEMO_SEED, "device": "cpu"}
    classic = JobSpec(**common, methods=list(CLASSIC_METHODS), timesteps=timesteps)
    suite = JobSpec(**common, methods=list(SUITE_METHODS), timesteps=SUITE_TIMESTEPS,
                    cq={"finetune_epochs": SUITE_FINETUNE_EPOCHS, "encoding": "vr"})
    return classic, suite


ProgressPerJob = Callable[[], AbstractContextManager[ProgressCallback]]


def no_progress() -> AbstractContextManager[ProgressCallback]:
    return nullcontext(ignore_progress)


def run_demo(out: Path, *, timesteps: int = 32, quiet: bool = False,
             job_progress: ProgressPerJob = no_progress) -> DemoResult:
    """Run both demo jobs, write out/classic/, out/suite/ and out/table.txt.

    ``job_progress()`` is entered around each job and gives its progress callback (the CLI's
    progress bar); ``quiet`` silences the training output.
    """
    out = Path(out)
    classic_spec, suite_spec = demo_specs(demo_model(quiet), timesteps)
    with job_progress() as progress:
        classic = run_into(classic_spec, out / "classic", progress)
    with job_progress() as progress:
        suite = run_into(suite_spec, out / "suite", progress)
    table = accuracy_table(classic, suite)
    atomic_write_bytes(out / TABLE_FILE, (table + "\n").encode())
    files = [f"{job}/{name}" for job, report in (("classic", classic), ("suite", suite))
             for name in (*REPORT_FILES, *report.artifacts)]
    return DemoResult(classic=classic, suite=suite, table=table, files=[*files, TABLE_FILE])
