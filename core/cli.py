"""The ``snnconv`` command line: convert, inspect, datasets, demo (and the service commands)."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
import traceback
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from core import __version__
from core.errors import SnnconvError, one_line
from core.progress import ProgressEvent
from core.report import REPORT_FILES, Report, accuracy_table, write_report_files
from core.spec import METHODS, CQOptions, JobSpec

EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EPILOG = """\
Every failure is reported as one line on stderr. Exit status: 0 done; 1 an unexpected error
(or, for inspect, a model that cannot be converted); 2 a bad file, option, model or dataset;
130 interrupted. For an unexpected error the full traceback is written to a new file
error-<UTC time>-<random>.log in $XDG_STATE_HOME/snnconv/logs/ (default:
~/.local/state/snnconv/logs/), and the error line names it."""

# JobSpec fields that a `convert` option of another name sets; the others share their name.
_SPEC_DESTS = {"model_path": "model", "methods": "method"}
_SPEC_FIELDS = ("model_path", "arch", "dataset", "data_dir", "methods", "timesteps",
                "batch_size", "calib_samples", "eval_samples", "seed", "device",
                "input_encoding", "reset", "percentile", "mean", "std")
# CQOptions fields with a generic --cq-<field> option: field -> argparse keywords.
_CQ_EXTRA = {
    "ice_grids": {"type": int}, "ice_copies": {"type": int},
    "learning_rate": {"type": float}, "surrogate_margin": {"type": float},
    "optimizer": {"choices": typing.get_args(CQOptions.model_fields["optimizer"].annotation)},
    "lr_decay": {"type": float}, "augment": {"action": argparse.BooleanOptionalAction},
    "keep_batchnorm": {"action": argparse.BooleanOptionalAction},
    "fit_scale": {"action": argparse.BooleanOptionalAction},
    "ctt_eta": {"type": float}, "ctt_batches": {"type": int},
}
# Help for the CQOptions fields whose spec has no description.
_CQ_ABOUT = {"learning_rate": "CQ fine-tuning learning rate",
             "optimizer": "CQ fine-tuning optimizer",
             "augment": "augment the training batches while fine-tuning",
             "ctt_batches": "training batches that CTT calibrates the thresholds on"}
# CQOptions field -> the `convert` option (argparse dest) that sets it.
_CQ_DESTS = {"encoding": "cq_encoding", "finetune_epochs": "finetune_epochs",
             "levels": "levels", "clamp_max": "clamp_max",
             **{field: f"cq_{field}" for field in _CQ_EXTRA}}
_POSITIONALS = frozenset({"model"})
# Validation errors of these models come from the user's options, not from a bug.
_SPEC_MODELS = frozenset({"JobSpec", "CQOptions"})
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class _UsageError(Exception):
    """An argparse error: raised, not printed with the usage text, so main prints one line."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already states its default
    (an automatic or "none" default reads better in words than as ``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)parser: one-line usage errors, defaults in the help, the shared epilog."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        raise _UsageError(f"{one_line(message)} (see '{self.prog} --help')")


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

    def close(self, clear: bool = False) -> None:
        if self.bar is not None:
            self.bar.leave = not clear
            self.bar.close()


def _tqdm():
    from tqdm import tqdm

    return tqdm(total=1000, bar_format="{desc} {bar} {percentage:3.0f}% [{elapsed}]",
                file=sys.stderr)


def run_and_write(spec: JobSpec, out: Path, quiet: bool = False) -> Report:
    from core.pipeline import run

    out.mkdir(parents=True, exist_ok=True)
    bar = _ProgressBar(quiet)
    try:
        report = run(spec, bar, artifacts_dir=out)
    except BaseException:
        bar.close(clear=True)  # on failure the error line, not a half-full bar, should remain
        raise
    bar.close()
    write_report_files(report, out)
    return report


def _given(values: dict) -> dict:
    """The options the user gave: None means "not given", so the spec's default applies."""
    return {key: value for key, value in values.items() if value is not None}


def build_spec(args: argparse.Namespace) -> JobSpec:
    """The JobSpec of a `convert` command line; raises pydantic.ValidationError."""
    fields = {field: getattr(args, _SPEC_DESTS.get(field, field)) for field in _SPEC_FIELDS}
    cq = {field: getattr(args, dest) for field, dest in _CQ_DESTS.items()}
    return JobSpec(**_given(fields), cq=_given(cq))


def _check_before_running(spec: JobSpec) -> None:
    """Fail at once, before the progress bar and the dataset load, on the commonest mistakes:
    a model path that cannot be read, and CUDA asked for where there is none."""
    from core.pipeline import resolve_device

    resolve_device(spec.device)
    with spec.model_path.open("rb"):  # FileNotFoundError etc. name the path
        pass


def _convert(args: argparse.Namespace) -> int:
    spec = build_spec(args)
    _check_before_running(spec)
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

    demo = run_demo(args.out, timesteps=args.timesteps, quiet=args.quiet)
    print(demo.table)
    print(f"\nfiles written to {args.out}/: {demo.files_text()}")
    return 0


def _methods(value: str) -> list[str]:
    methods = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {METHODS}")
    return methods


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {value!r}") from None


def _cq_help(field: str) -> str:
    """Help for a --cq-<field> option: the spec's description and default, so they agree."""
    info = CQOptions.model_fields[field]
    default = "auto" if info.default is None else info.default
    about = (info.description or _CQ_ABOUT.get(field, field)).replace("%", "%%")
    return f"{about} (default: {default})"


_DATA_DIR_HELP = "folder with the dataset files (default: none; the bundled datasets need none)"
_ARCH_HELP = "zoo architecture of a safetensors / state_dict file (default: none; ONNX needs none)"


def _add_convert_cq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cq-encoding", choices=["direct", "vr", "vr-ice"], default=None,
                   help="input coding of the cq-* methods (default: auto: the coding detected "
                        "in an uploaded CQ-trained model, else vr)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="CQ fine-tuning epochs; 0 converts the model as it is (default: auto: "
                        "0 for an already CQ-trained upload, else 2)")
    p.add_argument("--levels", type=int, help="CQ quantisation levels L (default: T/m)")
    p.add_argument("--clamp-max", type=float,
                   help="CQ clamp maximum m (default: 0.25 at T=1, else 0.8)")
    for field, keywords in _CQ_EXTRA.items():
        p.add_argument(f"--cq-{field.replace('_', '-')}", default=None, help=_cq_help(field),
                       **keywords)


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a model and report accuracy per step")
    p.add_argument("model", type=Path,
                   help="model file: .onnx, .safetensors or a torch.save state_dict "
                        "(required, no default)")
    p.add_argument("--dataset", default="mnist-5k", help="dataset name; see 'snnconv datasets'")
    p.add_argument("--data-dir", type=Path, help=_DATA_DIR_HELP)
    p.add_argument("--method", type=_methods, default=["robust-norm"],
                   help=f"comma-separated, from {', '.join(METHODS)} (default: robust-norm)")
    p.add_argument("--timesteps", type=int, default=None,
                   help="T: the report gives the accuracy at every t <= T (default: auto: "
                        "T = m·L for an uploaded CQ-trained model, else 32)")
    p.add_argument("--arch", help=_ARCH_HELP)
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the report files")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="auto: CUDA when available")
    p.add_argument("--batch-size", type=int, default=100, help="samples per batch")
    p.add_argument("--calib-samples", type=int, default=1000,
                   help="training samples that calibrate the thresholds")
    p.add_argument("--eval-samples", type=int,
                   help="test samples to evaluate (default: the whole test split)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--input-encoding", choices=["direct", "rate", "poisson"], default="direct",
                   help="input coding of the classic methods")
    p.add_argument("--reset", choices=["subtract", "zero"], default="subtract",
                   help="membrane reset after a spike")
    p.add_argument("--percentile", type=float, default=99.9, help="robust-norm percentile")
    p.add_argument("--mean", type=_floats,
                   help="comma-separated per-channel input mean, with --std (default: none)")
    p.add_argument("--std", type=_floats,
                   help="comma-separated per-channel input std, with --mean (default: none)")
    _add_convert_cq_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_convert)


def _add_small_commands(subparsers) -> None:
    inspect_parser = subparsers.add_parser("inspect", help="pre-flight compatibility report")
    inspect_parser.add_argument("model", type=Path, help="model file (required, no default)")
    inspect_parser.add_argument("--arch", help=_ARCH_HELP)
    inspect_parser.set_defaults(handler=_inspect)
    datasets_parser = subparsers.add_parser("datasets", help="list datasets and availability")
    datasets_parser.add_argument("--data-dir", type=Path, help=_DATA_DIR_HELP)
    datasets_parser.set_defaults(handler=_datasets)
    demo_parser = subparsers.add_parser("demo", help="train a small CNN on mnist-5k and convert")
    demo_parser.add_argument("--out", type=Path, default=Path("out/demo"),
                             help="folder for the report files")
    demo_parser.add_argument("--timesteps", type=int, default=32,
                             help="T of the classic methods (the paper's suite runs at T = 4)")
    demo_parser.add_argument("--quiet", action="store_true", help="no progress output")
    demo_parser.set_defaults(handler=_demo)


def _add_service_commands(subparsers) -> None:
    """serve/worker/migrate live in the service package; core only forwards to it."""
    try:
        service = importlib.import_module("api.cli")
    except ImportError:
        return
    service.add_service_commands(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="snnconv", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_convert(subparsers)
    _add_small_commands(subparsers)
    _add_service_commands(subparsers)
    return parser


def log_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where tracebacks of unexpected errors go: $XDG_STATE_HOME/snnconv/logs."""
    environ = os.environ if environ is None else environ
    state = Path(environ.get("XDG_STATE_HOME") or "")
    if not state.is_absolute():  # the XDG spec says to ignore a relative value
        state = Path.home() / ".local" / "state"
    return state / "snnconv" / "logs"


def write_traceback(error: BaseException, argv: list[str]) -> Path:
    """Write the traceback of ``error`` to a new, uniquely named file; returns its path."""
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # mkstemp: unique even for two failures in the same second, and readable by the user only
    handle, name = tempfile.mkstemp(prefix=f"error-{stamp}-", suffix=".log", dir=directory)
    with os.fdopen(handle, "w", encoding="utf-8") as log:
        log.write(f"snnconv {__version__}, python {sys.version.split()[0]}\n")
        log.write(f"command: snnconv {shlex.join(argv)}\n\n")
        traceback.print_exception(error, file=log)
    return Path(name)


def _say(lines: list[str], status: int) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return status


def _option_name(loc: tuple, args: argparse.Namespace) -> str:
    """The option that set the spec field at ``loc``; the field's dotted name if none did."""
    if not loc:
        return ""
    is_cq = loc[0] == "cq" and len(loc) > 1
    dest = _CQ_DESTS.get(loc[1]) if is_cq else _SPEC_DESTS.get(loc[0], loc[0])
    if dest is None or dest not in vars(args):
        return ".".join(str(part) for part in loc)
    return dest if dest in _POSITIONALS else "--" + dest.replace("_", "-")


def _validation_lines(error: ValidationError, args: argparse.Namespace) -> list[str]:
    lines = []
    for item in error.errors():
        name = _option_name(tuple(item.get("loc", ())), args)
        message = one_line(item.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"error: {name}: {message}" if name else f"error: {message}")
    return lines


def _known_failure(error: Exception, args: argparse.Namespace) -> list[str] | None:
    """The error lines for a failure the user can fix, or None for an unexpected one."""
    if isinstance(error, SnnconvError):
        return [f"error ({error.code}): {one_line(error)}"]
    if isinstance(error, ValidationError) and error.title in _SPEC_MODELS:
        return _validation_lines(error, args)
    if isinstance(error, _FILE_ERRORS) and error.filename is not None:
        return [f"error: {error.filename}: {error.strerror or one_line(error)}"]
    return None


def _unexpected(error: Exception, argv: list[str]) -> int:
    message = one_line(error, limit=300)
    summary = f"unexpected {type(error).__name__}" + (f": {message}" if message else "")
    try:
        where = f"the traceback is in {write_traceback(error, argv)}"
    except OSError as failure:  # still one line: say why there is no log
        where = f"the traceback could not be saved ({one_line(failure)})"
    return _say([f"error: {summary}; {where}"], EXIT_UNEXPECTED)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every failure ends in one error line and a non-zero status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as error:
        return _say([f"error: {error}"], EXIT_USER_ERROR)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return _say(["error: interrupted"], EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the user sees one line, never a traceback
        lines = _known_failure(error, args)
        if lines is None:
            return _unexpected(error, argv)
        return _say(lines, EXIT_USER_ERROR)


if __name__ == "__main__":
    sys.exit(main())
