"""The CUDA path end to end, as one script: train, export to ONNX, convert and simulate on
the GPU and on the CPU, compare the two reports.

    .venv/bin/python scripts/gpu_check.py                       # on a GPU machine (cuda vs cpu)
    .venv/bin/python scripts/gpu_check.py --device cpu --compare-with cpu --dataset digits
                                                                # CPU smoke test of the script

``scripts/gpu-check.sh`` sets up the interpreter and calls this.  Steps:

1. train a small CNN (conv-BN-ReLU-pool twice, then a linear layer) briefly on ``--device``;
2. export it with ``torch.onnx.export(model, (x,), "m.onnx")``, every option at its default
   (the weights go to ``m.onnx.data`` beside it);
3. for ``--device`` and for ``--compare-with``, two ``core.pipeline.run`` jobs on that file:
   the classic methods (robust-norm, channel-norm: import, calibrate, simulate) and the
   paper's methods (cq-asg, cq-ctt: import, fine-tune one epoch, CTT calibration, simulate);
4. check: the ANN's top-1 agrees within 0.2 pp between the devices; the classic methods'
   per-step top-1 within 1 pp and their SOPs within 1 %; on each device cq-asg's SNN equals
   its own CQ ANN exactly (the same top-1 and 100 % agreement); the CQ network was exported.
   The fine-tuned CQ networks are not compared across devices: GPU and CPU kernels round
   differently, so fine-tuning ends at different weights.

It prints the results, the checks and per-stage timings, writes ``summary.md`` and the
reports to ``--out`` (default: ``$OUT`` if set, else ``./out/gpu-check/``) and exits 0 when
every check passed, 1 when one failed, 2 when the device asked for is not there.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make ``core`` importable without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from core.datasets import Dataset, load_dataset  # noqa: E402
from core.pipeline import CQ_MODEL_FILES, run  # noqa: E402
from core.progress import ProgressEvent  # noqa: E402
from core.report import MethodResult, Report  # noqa: E402
from core.spec import CQOptions, JobSpec  # noqa: E402
from core.train import evaluate, fit  # noqa: E402

CLASSIC = ["robust-norm", "channel-norm"]
PAPER = ["cq-asg", "cq-ctt"]
ANN_TOLERANCE = 0.002  # 0.2 pp
STEP_TOLERANCE = 0.01  # 1 pp: a current that lands exactly on a threshold may round either way
SOPS_TOLERANCE = 0.01  # 1 %
TIME_BUDGET_S = 300.0
EXIT_OK, EXIT_MISMATCH, EXIT_NO_DEVICE = 0, 1, 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="the device under test (default cuda)")
    parser.add_argument("--compare-with", choices=["cpu", "cuda", "none"], default="cpu",
                        help="the oracle device whose reports the device's are compared with "
                             "(default cpu; none: only the per-device checks)")
    parser.add_argument("--dataset", choices=["mnist-5k", "digits"], default="mnist-5k")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--calib-samples", type=int, default=500)
    parser.add_argument("--classic-timesteps", type=int, default=16)
    parser.add_argument("--cq-timesteps", type=int, default=4)
    parser.add_argument("--ctt-batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="where summary.md and the reports go (default $OUT, else "
                             "./out/gpu-check)")
    return parser.parse_args(argv)


def output_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("out/gpu-check")


def log(message: str) -> None:
    print(message, flush=True)


# --- the device -----------------------------------------------------------------------------

def missing_cuda() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None); "
                "install a CUDA build of torch or point PYTHON at an interpreter that has one")
    return (f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no device: "
            "torch.cuda.is_available() is False; check nvidia-smi, the driver and "
            "CUDA_VISIBLE_DEVICES")


def describe_torch() -> list[str]:
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, "
             f"built for CUDA {torch.version.cuda}, cuDNN "
             f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}",
             f"torch.cuda.is_available() = {torch.cuda.is_available()}, "
             f"device count {torch.cuda.device_count()}"]
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        lines.append(f"cuda:{index} {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.1f} GiB")
    lines.append(f"CPU: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    return lines


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- the model ------------------------------------------------------------------------------

def small_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """conv-BN-ReLU-avgpool twice, then a linear classifier (BatchNorm is folded on import)."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), num_classes),
    )


def export_with_defaults(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> list[str]:
    """``torch.onnx.export`` as a user calls it, every option at its default; the files made."""
    model = model.cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    before = set(path.parent.iterdir())
    torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(path))
    return sorted(p.name for p in set(path.parent.iterdir()) - before)


# --- timing ---------------------------------------------------------------------------------

STAGE_NAMES = {"load": "import", "convert": "convert", "calibrate": "calibrate",
               "finetune": "fine-tune", "simulate": "simulate"}


@dataclass
class StageClock:
    """Seconds per (method, stage), from the pipeline's progress events."""

    device: str
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    current: tuple[str, str] | None = None
    since: float = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "report":  # the end of a job: nothing is timed after it
            self.close()
            return
        key = (event.method or "-", STAGE_NAMES.get(event.stage, event.stage))
        if event.method is not None and event.stage == "convert" and event.method in CLASSIC:
            key = (event.method, "calibrate")
        if key != self.current:
            self.close()
            self.current, self.since = key, time.perf_counter()

    def close(self) -> None:
        if self.current is not None:
            synchronize(self.device)
            elapsed = time.perf_counter() - self.since
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + elapsed
            self.current = None


# --- the jobs -------------------------------------------------------------------------------

@dataclass
class DeviceRun:
    device: str
    label: str  # the device, and "(oracle)" for the one compared with
    classic: Report
    paper: Report
    artifacts_dir: Path
    stages: dict[tuple[str, str], float]
    seconds: float

    def methods(self) -> list[MethodResult]:
        return self.classic.methods + self.paper.methods


def run_device(device: str, oracle: bool, model_path: Path, args: argparse.Namespace,
               out: Path) -> DeviceRun:
    common = {"model_path": model_path, "dataset": args.dataset, "device": device,
              "eval_samples": args.eval_samples, "calib_samples": args.calib_samples,
              "batch_size": args.batch_size, "seed": args.seed}
    classic_spec = JobSpec(methods=CLASSIC, timesteps=args.classic_timesteps, **common)
    paper_spec = JobSpec(methods=PAPER, timesteps=args.cq_timesteps,
                         cq=CQOptions(finetune_epochs=1, ctt_batches=args.ctt_batches), **common)
    label = f"{device} (oracle)" if oracle else device
    stem = f"{'oracle' if oracle else 'tested'}-{device}"
    clock = StageClock(device)
    began = time.perf_counter()
    log(f"[{label}] classic job: {', '.join(CLASSIC)} at T = {args.classic_timesteps}")
    classic = run(classic_spec, progress=clock)
    clock.close()
    log(f"[{label}] paper job: {', '.join(PAPER)} at T = {args.cq_timesteps}, "
        "fine-tuning 1 epoch")
    artifacts = out / f"cq-network-{stem}"
    artifacts.mkdir(parents=True, exist_ok=True)
    paper = run(paper_spec, progress=clock, artifacts_dir=artifacts)
    clock.close()
    seconds = time.perf_counter() - began
    for name, report in (("classic", classic), ("paper", paper)):
        (out / f"report-{stem}-{name}.json").write_text(report.model_dump_json(indent=2))
    log(f"[{label}] both jobs done in {seconds:.1f} s (report device: {classic.device})")
    return DeviceRun(device, label, classic, paper, artifacts, clock.seconds, seconds)


# --- the checks -----------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _pp(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def device_checks(result: DeviceRun) -> list[Check]:
    """What must hold on one device whatever the other does."""
    tag = f"[{result.label}]"
    want = "cuda" if result.device == "cuda" else "cpu"
    checks = [Check(f"{tag} the pipeline ran on {want}",
                    all(r.device.startswith(want) for r in (result.classic, result.paper)),
                    f"report.device = {result.classic.device}, {result.paper.device}")]
    asg = next(m for m in result.paper.methods if m.method == "cq-asg")
    checks.append(Check(f"{tag} cq-asg SNN equals its CQ ANN",
                        asg.top1[-1] == asg.reference_top1 and asg.agreement[-1] == 1.0,
                        f"SNN top-1 {_pp(asg.top1[-1])}, CQ ANN {_pp(asg.reference_top1 or 0)}, "
                        f"agreement {_pp(asg.agreement[-1])}"))
    files = {p.name for p in result.artifacts_dir.iterdir()}
    checks.append(Check(f"{tag} CQ network exported",
                        set(CQ_MODEL_FILES) <= files and set(result.paper.artifacts) ==
                        set(CQ_MODEL_FILES), ", ".join(sorted(files)) or "nothing"))
    return checks


def compare(tested: DeviceRun, oracle: DeviceRun) -> list[Check]:
    """The device under test against the oracle device, on the same ONNX weights."""
    pair = f"[{tested.label} vs {oracle.label}]"
    checks = []
    for job, ours, theirs in (("classic", tested.classic, oracle.classic),
                              ("paper", tested.paper, oracle.paper)):
        gap = abs(ours.ann.top1 - theirs.ann.top1)
        checks.append(Check(f"{pair} ANN top-1 ({job} job) within 0.2 pp", gap <= ANN_TOLERANCE,
                            f"{_pp(ours.ann.top1)} vs {_pp(theirs.ann.top1)}"))
    for ours, theirs in zip(tested.classic.methods, oracle.classic.methods, strict=True):
        steps = np.abs(np.subtract(ours.top1, theirs.top1))
        worst = int(steps.argmax())
        checks.append(Check(f"{pair} {ours.method} per-step top-1 within 1 pp",
                            ours.method == theirs.method and steps.max() <= STEP_TOLERANCE,
                            f"largest gap {100 * steps.max():.2f} pp at t = {worst + 1}"))
        sops = abs(ours.sops[-1] - theirs.sops[-1]) / max(abs(theirs.sops[-1]), 1e-12)
        checks.append(Check(f"{pair} {ours.method} SOPs at T within 1 %", sops <= SOPS_TOLERANCE,
                            f"{ours.sops[-1]:,.0f} vs {theirs.sops[-1]:,.0f} "
                            f"({100 * sops:.3f} %)"))
    return checks


# --- the output -----------------------------------------------------------------------------

def results_rows(runs: list[DeviceRun]) -> list[list[str]]:
    rows = []
    for result in runs:
        for m in result.methods():
            reference = "" if m.reference_top1 is None else _pp(m.reference_top1)
            rows.append([result.label, m.method, str(len(m.top1)), _pp(m.top1[0]),
                         _pp(m.top1[-1]), _pp(m.agreement[-1]), reference,
                         f"{m.sops[-1]:,.0f}", f"{m.seconds:.2f}"])
    return rows


RESULT_HEADER = ["device", "method", "T", "top-1 t=1", "top-1 t=T", "agreement t=T",
                 "reference top-1", "SOPs/sample t=T", "s"]


def timing_rows(runs: list[DeviceRun], preparation: dict[str, float]) -> list[list[str]]:
    rows = [["-", "-", step, f"{seconds:.2f}"] for step, seconds in preparation.items()]
    for result in runs:
        rows += [[result.label, method, stage, f"{seconds:.2f}"]
                 for (method, stage), seconds in result.stages.items()]
        rows.append([result.label, "all", "both jobs", f"{result.seconds:.2f}"])
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def summary_markdown(args: argparse.Namespace, environment: list[str], facts: list[str],
                     checks: list[Check], runs: list[DeviceRun], preparation: dict[str, float],
                     total: float) -> str:
    verdict = "PASSED" if all(c.passed for c in checks) else "FAILED"
    command = "python scripts/gpu_check.py " + " ".join(sys.argv[1:]) if sys.argv else ""
    parts = [
        f"# GPU check: {verdict}", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- device under test: {args.device}; oracle: {args.compare_with}",
        f"- command: `{command.strip()}`",
        *[f"- {line}" for line in environment + facts],
        f"- total: {total:.1f} s" + (" (over the 5-minute budget)" if total > TIME_BUDGET_S
                                     else ""),
        "", "## Checks", "",
        markdown_table(["check", "result", "detail"],
                       [[c.name, "pass" if c.passed else "**FAIL**", c.detail] for c in checks]),
        "", "## Results", "", markdown_table(RESULT_HEADER, results_rows(runs)),
        "", "## Timings (s)", "",
        markdown_table(["device", "method", "stage", "s"], timing_rows(runs, preparation)), "",
    ]
    return "\n".join(parts)


# --- main -----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    environment = describe_torch()
    for line in environment:
        log(line)
    if "cuda" in (args.device, args.compare_with):
        reason = missing_cuda()
        if reason is not None:
            print(f"no CUDA device: {reason}", file=sys.stderr, flush=True)
            return EXIT_NO_DEVICE
    out = output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preparation: dict[str, float] = {}

    tick = time.perf_counter()
    dataset: Dataset = load_dataset(args.dataset)
    preparation["load dataset"] = time.perf_counter() - tick
    torch.manual_seed(args.seed)
    model = small_cnn(tuple(dataset.input_shape), dataset.num_classes)
    tick = time.perf_counter()
    fit(model, dataset.train, epochs=args.train_epochs, lr=2e-3, batch_size=64, seed=args.seed,
        device=args.device)
    synchronize(args.device)
    trained_on = next(model.parameters()).device.type
    preparation[f"train ({args.device})"] = time.perf_counter() - tick
    ann_top1 = evaluate(model, dataset.test, device=args.device)
    log(f"trained the small CNN on {trained_on} for {args.train_epochs} epochs: test top-1 "
        f"{_pp(ann_top1)} on {len(dataset.test.y)} {args.dataset} images")
    tick = time.perf_counter()
    model_path = out / "model" / "m.onnx"
    made = export_with_defaults(model, tuple(dataset.input_shape), model_path)
    preparation["export ONNX"] = time.perf_counter() - tick
    log(f"exported with torch.onnx.export defaults: {', '.join(made)}")
    checks = [Check(f"[{args.device}] training ran on {args.device}", trained_on == args.device,
                    f"parameters on {trained_on}"),
              Check("ONNX export wrote m.onnx + m.onnx.data",
                    {"m.onnx", "m.onnx.data"} <= set(made), ", ".join(made) or "nothing")]
    facts = [f"dataset {args.dataset}: {len(dataset.train.y)} train / {len(dataset.test.y)} test "
             f"images; evaluation on {min(args.eval_samples, len(dataset.test.y))}",
             f"small CNN trained {args.train_epochs} epochs on {trained_on}: test top-1 "
             f"{_pp(ann_top1)}"]

    runs = [run_device(args.device, False, model_path, args, out)]
    if args.compare_with != "none":
        runs.append(run_device(args.compare_with, True, model_path, args, out))
    for result in runs:
        checks += device_checks(result)
    if len(runs) == 2:
        checks += compare(runs[0], runs[1])
    total = time.perf_counter() - began

    log("\nresults")
    log(text_table(RESULT_HEADER, results_rows(runs)))
    log("\ntimings (s)")
    log(text_table(["device", "method", "stage", "s"], timing_rows(runs, preparation)))
    log("\nchecks")
    log(text_table(["check", "result", "detail"],
                   [[c.name, "pass" if c.passed else "FAIL", c.detail] for c in checks]))
    summary = out / "summary.md"
    summary.write_text(summary_markdown(args, environment, facts, checks, runs, preparation,
                                        total))
    failed = [c for c in checks if not c.passed]
    log(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed in {total:.1f} s"
        + (f" (over the {TIME_BUDGET_S:.0f} s budget)" if total > TIME_BUDGET_S else "")
        + f"; summary: {summary}")
    if failed:
        log("FAILED: " + "; ".join(c.name for c in failed))
        return EXIT_MISMATCH
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
