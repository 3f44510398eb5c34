"""Why plain IF neurons fail on the narrow ResNet-style upload (the numbers in docs/methods.md).

Trains and exports the network exactly as benchmarks/residual_upload.py does, builds its CQ
network at T = 8 with that benchmark's IF recipe (CQ part only, no spike-aware fine-tuning),
and measures:

- the CQ ANN's accuracy with its floor-quantised activation and with a plain clamp in its
  place (what IF rates approach over a long window);
- per spiking layer, IF counts against the ASG teacher's on the same images: the fraction of
  neurons that fire more often, and the mean |count difference| (T = 8);
- the untuned IF network's top-1 with the VR-coded input as a constant current, for a window
  of 8 and 256 steps, from u(0) = 0 and u(0) = θ/2.

    .venv/bin/python benchmarks/if_error_diagnosis.py [--eval-samples 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `core`, `benchmarks` and `tests` importable
    sys.path.insert(0, str(REPO))

from benchmarks.residual_upload import IF_RECIPE, SPEC, train  # noqa: E402
from core.datasets import load_dataset  # noqa: E402
from core.graph.modules import CQActivation  # noqa: E402
from core.graph.spiking import to_spiking  # noqa: E402
from core.methods.cq import build_cq_network  # noqa: E402
from core.neurons import ASGNeuron, IFNeuron, neurons_of, reset_state, set_steps  # noqa: E402
from core.pipeline import prepare  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from tests.battery.models import export  # noqa: E402

WINDOW = 8
CQ_PART = {key: value for key, value in IF_RECIPE.items()
           if key in ("finetune_epochs", "learning_rate", "lr_decay")}


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def clamp_instead_of_floor(cq_model, images: torch.Tensor) -> torch.Tensor:
    """The CQ ANN's logits with each CQ activation replaced by clamp(z, 0, m)."""
    original = CQActivation.forward
    CQActivation.forward = lambda self, z: z.clamp(0.0, self.clamp_max)
    try:
        return cq_model(images)
    finally:
        CQActivation.forward = original


def if_logits(cq, coded: torch.Tensor, steps: int, start: float, batch: int = 50
              ) -> torch.Tensor:
    """Mean output current of the untuned IF network (θ = m) over ``steps`` constant steps."""
    network = to_spiking(cq.body, lambda _n, _a: IFNeuron(cq.clamp_max,
                                                          initial_fraction=start))
    outputs = []
    for rows in coded.split(batch):
        reset_state(network)
        set_steps(network, steps, batch=len(rows))
        outputs.append(network(rows).view(steps, len(rows), -1).mean(0))
    return torch.cat(outputs)


def layer_errors(cq, coded: torch.Tensor) -> list[tuple[str, float, float]]:
    """(layer, fraction of neurons firing more than ASG, mean |count difference|) at T = 8."""
    student = to_spiking(cq.body, lambda _n, _a: IFNeuron(cq.clamp_max))
    teacher = to_spiking(cq.body, lambda _n, _a: ASGNeuron(cq.clamp_max, cq.levels))
    reset_state(student)
    reset_state(teacher)
    set_steps(student, WINDOW, batch=len(coded))
    student(coded)
    teacher(coded)
    asg = neurons_of(teacher)
    return [(name, float((neuron.spike_count > asg[name].spike_count).float().mean()),
             float((neuron.spike_count - asg[name].spike_count).abs().mean()))
            for name, neuron in neurons_of(student).items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=12, help="ANN training epochs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sample = torch.from_numpy(load_dataset("mnist-5k").test.x[:1])
        path = export(train(args.epochs), SPEC, sample, Path(folder) / "m.onnx", "default")
        job = prepare(JobSpec(model_path=path, dataset="mnist-5k", methods=["cq-if"],
                              timesteps=WINDOW, eval_samples=args.eval_samples, device="cpu",
                              cq=CQ_PART))
        cq = build_cq_network(job.ctx)
    images = torch.from_numpy(job.evaluation.x)
    labels = torch.from_numpy(job.evaluation.y)
    with torch.no_grad():
        report(job.ctx.ann, cq, images, labels)


def report(ann, cq, images: torch.Tensor, labels: torch.Tensor) -> None:
    coded = cq.coding(images) if cq.coding is not None else images
    clamped = top1(clamp_instead_of_floor(cq.model, images), labels)
    print(f"ANN {top1(ann(images), labels):.3f}; CQ ANN (T = {WINDOW}, m = {cq.clamp_max}, "
          f"L = {cq.levels}) {top1(cq.model(images), labels):.3f}, with clamp instead of "
          f"floor {clamped:.3f}")
    for name, more, difference in layer_errors(cq, coded[:250]):
        print(f"  {name}: IF fires more than ASG in {more:.1%} of neurons, "
              f"mean |count difference| {difference:.2f} of at most {WINDOW}")
    for steps in (WINDOW, 256):
        results = ", ".join(
            f"u(0) = {start}·θ: {top1(if_logits(cq, coded, steps, start), labels):.3f}"
            for start in (0.0, 0.5))
        print(f"untuned IF, constant VR-coded input, {steps} steps: {results}")

if __name__ == "__main__":
    main()
