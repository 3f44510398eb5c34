"""The low-latency suite against the classic methods on a user-style ResNet uploaded as ONNX.

A ResNet-style network (BasicBlocks with identity and 1×1 projection shortcuts, BN, global
average pooling; tests/battery/models.py) is trained briefly on mnist-5k, exported with
``torch.onnx.export``'s defaults (weights in m.onnx.data), and converted through
``core.pipeline.run`` exactly as a user's upload is.  Writes docs/residual-upload.md.

    .venv/bin/python benchmarks/residual_upload.py [--eval-samples 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make `core` and `tests` importable
    sys.path.insert(0, str(REPO))

from core.datasets import load_dataset  # noqa: E402
from core.pipeline import run  # noqa: E402
from core.report import Report  # noqa: E402
from core.spec import CLASSIC_METHODS, JobSpec  # noqa: E402
from tests.battery.models import ResNetStyle, UserModel, export  # noqa: E402

DOC = REPO / "docs" / "residual-upload.md"
SPEC = UserModel("resnet-style", ResNetStyle)


def train(epochs: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, data = ResNetStyle(), load_dataset("mnist-5k").train
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, 1, 0.7)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(y), 64):
            batch = order[first:first + 64]
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
        schedule.step()
    return model.eval()


def job(path: Path, methods: list[str], timesteps: int, samples: int, **cq) -> Report:
    return run(JobSpec(model_path=path, dataset="mnist-5k", methods=methods, timesteps=timesteps,
                       eval_samples=samples, device="cpu", cq=cq))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4, help="ANN training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=12)
    parser.add_argument("--lr-decay", type=float, default=0.85,
                        help="fine-tuning learning-rate factor per epoch (the job default is 0.7)")
    parser.add_argument("--classic-steps", type=int, default=128)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        sample = torch.from_numpy(load_dataset("mnist-5k").test.x[:1])
        path = export(train(args.epochs), SPEC, sample, Path(folder) / "m.onnx", "default")
        classic = job(path, list(CLASSIC_METHODS), args.classic_steps, args.eval_samples)
        tuning = {"finetune_epochs": args.finetune_epochs, "lr_decay": args.lr_decay}
        asg = job(path, ["cq-asg"], 4, args.eval_samples, **tuning)
        ctt = job(path, ["cq-ctt", "cq-if"], 8, args.eval_samples, **tuning)
    DOC.write_text(render(classic, asg, ctt, args, time.perf_counter() - began))
    print(DOC.read_text())


def _row(result, ann: float, points: list[int]) -> str:
    cells = " | ".join(f"{100 * result.top1[t - 1]:.1f}" if t <= len(result.top1) else ""
                       for t in points)
    return (f"| {result.method} | {result.latency.end_to_end_steps} | {cells} | "
            f"{100 * (ann - result.top1[-1]):+.1f} |")


def render(classic: Report, asg: Report, ctt: Report, args, seconds: float) -> str:
    ann = classic.ann.top1
    points = [1, 2, 4, 8, 16, 32, 64, 128]
    head = " | ".join(f"t={t}" for t in points)
    lines = [
        "# A ResNet-style upload: the paper's suite against the classic methods",
        "",
        "Produced by `.venv/bin/python benchmarks/residual_upload.py "
        f"--eval-samples {args.eval_samples} --epochs {args.epochs} "
        f"--finetune-epochs {args.finetune_epochs} --lr-decay {args.lr_decay}` "
        f"({seconds / 60:.1f} min on 2 CPU cores, "
        f"{classic.created_at:%Y-%m-%d}). The network (tests/battery/models.py `ResNetStyle`: "
        "stem, three BasicBlocks with identity and 1×1 projection shortcuts, BN, global "
        f"average pooling) is trained {args.epochs} epochs on mnist-5k and exported with "
        "`torch.onnx.export(model, (x,), \"m.onnx\")`'s defaults, so the BN arrives folded and "
        "the weights in `m.onnx.data`.",
        "",
        f"ANN top-1 {100 * ann:.2f} % on {classic.dataset.eval_samples} test images. "
        "Top-1 (%) after t steps; the last column is the ANN's accuracy minus the method's "
        "at its last step (its T).",
        "",
        f"| method | end-to-end steps | {head} | gap to ANN (pp) |",
        "|---|---|" + "---|" * len(points) + "---|",
    ]
    for report in (classic, asg, ctt):
        lines += [_row(result, ann, points) for result in report.methods]
    cq = asg.methods[0]
    finetune = cq.parameters["finetune"]
    lines += ["", f"CQ ANN (the network cq-asg converts exactly) at T = 4: "
              f"{100 * cq.reference_top1:.2f} %; at T = 8 (cq-ctt, cq-if): "
              f"{100 * ctt.methods[0].reference_top1:.2f} %. Fine-tuning: "
              f"{finetune['epochs']} epochs, learning rate × {finetune['lr_decay']} per epoch, "
              f"BatchNorm {finetune['batchnorm']}, "
              f"{finetune['seconds']:.0f} s.", "", "Against the targets of issue 8:", ""]
    lines += [_verdict(*target) for target in _targets(classic, asg, ctt)]
    return "\n".join(lines) + "\n"


def _targets(classic: Report, asg: Report, ctt: Report) -> list[tuple[str, float, float]]:
    """(what, gap to the ANN in pp, allowed gap in pp) for each acceptance target."""
    ann = classic.ann.top1
    best = max(classic.methods, key=lambda result: result.top1[-1])
    ctt_result = next(result for result in ctt.methods if result.method == "cq-ctt")
    return [
        (f"best classic method at T = {len(best.top1)} ({best.method})",
         100 * (ann - best.top1[-1]), 1.0),
        ("cq-asg at T = 4", 100 * (ann - asg.methods[0].top1[-1]), 1.0),
        ("cq-ctt at T = 8", 100 * (ann - ctt_result.top1[-1]), 2.0),
    ]


def _verdict(what: str, gap: float, allowed: float) -> str:
    met = "met" if round(gap, 1) <= allowed else "**not met**"
    return f"- {what}: {gap:.1f} pp below the ANN (target ≤ {allowed:.1f} pp: {met})"


if __name__ == "__main__":
    main()
