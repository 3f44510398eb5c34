"""The ``snnconv`` command line: convert, inspect, datasets, demo (and the service commands)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from core.errors import SnnconvError
from core.progress import ProgressEvent
from core.report import REPORT_FILES, Report, accuracy_table, write_report_files
from core.spec import METHODS, JobSpec


class _ProgressBar:
    def __init__(self, quiet: bool):
        self.bar = None if quiet else _tqdm()

    def __call__(self, event: ProgressEvent) -> None:
        if self.bar is None:
            return
        self.bar.n = round(1000 * event.progress)
        label = f"{event.stage}" + (f" {event.method}" if event.method else "")
        self.bar.set_description(label[:28].ljust(28), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tqdm():
    from tqdm import tqdm

    return tqdm(total=1000, bar_format="{desc} {bar} {percentage:3.0f}% [{elapsed}]",
                file=sys.stderr)


def run_and_write(spec: JobSpec, out: Path, quiet: bool = False) -> Report:
    from core.pipeline import run

    bar = _ProgressBar(quiet)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = run(spec, bar, artifacts_dir=out)
    finally:
        bar.close()
    write_report_files(report, out)
    return report


def _convert(args: argparse.Namespace) -> int:
    spec = JobSpec(
        model_path=args.model, arch=args.arch, dataset=args.dataset, data_dir=args.data_dir,
        methods=args.method, timesteps=args.timesteps, batch_size=args.batch_size,
        calib_samples=args.calib_samples, eval_samples=args.eval_samples, seed=args.seed,
        device=args.device, input_encoding=args.input_encoding, reset=args.reset,
        percentile=args.percentile, mean=args.mean, std=args.std,
        cq={"encoding": args.cq_encoding, "finetune_epochs": args.finetune_epochs,
            "levels": args.levels, "clamp_max": args.clamp_max})
    report = run_and_write(spec, args.out, args.quiet)
    print(accuracy_table(report))
    files = ", ".join((*REPORT_FILES, *report.artifacts))
    print(f"\nreport files written to {args.out}/ ({files})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from core.pipeline import inspect

    report = inspect(args.model, args.arch)
    print(f"format {report.format}, input shape {report.input_shape}, "
          f"{report.spiking_layers} spiking layers ({report.cq_layers} CQ)")
    for node in report.nodes:
        print(f"  {node.status:<15} {node.op:<22} {node.name:<28} {node.detail}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print("convertible" if report.convertible else "NOT convertible")
    return 0 if report.convertible else 1


def _datasets(args: argparse.Namespace) -> int:
    from core.datasets import catalog

    for status in catalog(args.data_dir):
        state = "available" if status.available else "missing"
        print(f"{status.name:<22} {state:<10} {status.description}")
        if not status.available and status.reason:
            print(f"{'':<22} {status.reason}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from core.demo import run_demo

    report = run_demo(args.out, timesteps=args.timesteps, quiet=args.quiet)
    print(accuracy_table(report))
    print(f"\nreport files written to {args.out}/")
    return 0


def _methods(value: str) -> list[str]:
    methods = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {METHODS}")
    return methods


def _floats(value: str) -> list[float]:
    return [float(v) for v in value.split(",")]


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a model and report accuracy per step")
    p.add_argument("model", type=Path)
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--method", type=_methods, default=["robust-norm"],
                   help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--arch", help="zoo architecture for safetensors / state_dict files")
    p.add_argument("--out", type=Path, default=Path("out"))
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--calib-samples", type=int, default=1000)
    p.add_argument("--eval-samples", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-encoding", choices=["direct", "rate", "poisson"], default="direct")
    p.add_argument("--reset", choices=["subtract", "zero"], default="subtract")
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--mean", type=_floats)
    p.add_argument("--std", type=_floats)
    p.add_argument("--cq-encoding", choices=["direct", "vr", "vr-ice"], default="vr")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--levels", type=int, help="CQ levels L (default T/m)")
    p.add_argument("--clamp-max", type=float, help="CQ clamp m (default 0.25 at T=1, else 0.8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_convert)


def _add_service_commands(subparsers) -> None:
    """serve/worker/migrate live in the service package; core only forwards to it."""
    try:
        service = importlib.import_module("api.cli")
    except ImportError:
        return
    service.add_service_commands(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snnconv", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_convert(subparsers)
    inspect_parser = subparsers.add_parser("inspect", help="pre-flight compatibility report")
    inspect_parser.add_argument("model", type=Path)
    inspect_parser.add_argument("--arch")
    inspect_parser.set_defaults(handler=_inspect)
    datasets_parser = subparsers.add_parser("datasets", help="list datasets and availability")
    datasets_parser.add_argument("--data-dir", type=Path)
    datasets_parser.set_defaults(handler=_datasets)
    demo_parser = subparsers.add_parser("demo", help="train a small CNN on mnist-5k and convert")
    demo_parser.add_argument("--out", type=Path, default=Path("out/demo"))
    demo_parser.add_argument("--timesteps", type=int, default=32)
    demo_parser.add_argument("--quiet", action="store_true")
    demo_parser.set_defaults(handler=_demo)
    _add_service_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except SnnconvError as error:
        print(f"error ({error.code}): {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
