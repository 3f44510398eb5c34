"""The example models the hosted demo offers beside uploads.

Two files built from the embedded demo (``core.demo``): its CNN trained on mnist-5k, as
safetensors weights of the zoo's ``cnn-small``; and the same CNN after the paper's CQ
fine-tuning for the suite job's window, as the ONNX file that job exports, whose clamp+floor
activations (and VR input coding) an upload recognises.  Building them trains and
fine-tunes (about a minute on 2 cores), so it happens once, ahead of serving
(``snnconv examples``), never inside a request.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.demo import DEMO_ARCH, DEMO_DATASET, SUITE_TIMESTEPS, demo_model, demo_specs
from core.paths import atomic_write_bytes
from core.pipeline import CQ_MODEL_FILES, run_into

# the suite job is run only for the network it exports: a few test images are enough
EVAL_SAMPLES_FOR_EXPORT = 100


@dataclass(frozen=True)
class Example:
    name: str
    title: str
    description: str
    filename: str
    format: str
    arch: str | None = None


EXAMPLES = (
    Example("demo-cnn", "Demo CNN (MNIST)",
            f"The demo's {DEMO_ARCH} (two convolutions, two linear layers) trained on "
            f"{DEMO_DATASET}: try the classic methods at T = 32 or the paper's suite.",
            "demo-cnn.safetensors", "safetensors", DEMO_ARCH),
    Example("demo-cnn-cq", f"Demo CNN, CQ-trained for T = {SUITE_TIMESTEPS}",
            "The same CNN after the paper's clamp-and-floor fine-tuning (VR input coding), "
            "as ONNX: the cq-* methods use its trained activations as they are.",
            "demo-cnn-cq.onnx", "onnx"),
)


def find_example(name: str) -> Example | None:
    return next((example for example in EXAMPLES if example.name == name), None)


def example_path(directory: Path, example: Example) -> Path:
    return Path(directory) / example.filename


def build_examples(directory: Path, quiet: bool = False) -> list[Path]:
    """Write every example missing from ``directory`` (each file appears whole, or not at
    all); returns the paths of all of them, in ``EXAMPLES`` order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = demo_model(quiet)
    contents = {"demo-cnn": weights.read_bytes, "demo-cnn-cq": lambda: _cq_network_bytes(weights)}
    paths = []
    for example in EXAMPLES:
        path = example_path(directory, example)
        if not path.exists():
            atomic_write_bytes(path, contents[example.name]())
        paths.append(path)
    return paths


def _cq_network_bytes(weights: Path) -> bytes:
    """The ONNX file the demo's suite job exports for its CQ network."""
    _, suite = demo_specs(weights)
    spec = suite.model_copy(update={"methods": ["cq-asg"],
                                    "eval_samples": EVAL_SAMPLES_FOR_EXPORT})
    scratch = Path(tempfile.mkdtemp(prefix="snnconv-example-"))
    try:
        run_into(spec, scratch)
        return (scratch / CQ_MODEL_FILES[0]).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
