"""The ``snnconv`` command line: convert, inspect, datasets, demo (and the service commands)."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import tempfile
import traceback
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from core import __version__
from core.datasets import catalog
from core.errors import SnnconvError, one_line
from core.latency_choice import choice_lines
from core.progress import ProgressEvent
from core.report import (
    accuracy_table,
    attribution_lines,
    early_exit_heading,
    early_exit_lines,
    report_files,
)
from core.spec import METHODS, CQOptions, JobSpec, QCFSOptions

EXIT_UNEXPECTED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EPILOG = """\
Every failure is reported as one line on stderr. Exit status: 0 done; 1 an unexpected error
(or, for inspect, a model that cannot be converted); 2 a bad file, option, model or dataset;
130 interrupted. For an unexpected error the full traceback is written to a new file
error-<UTC time>-<random>.log in $XDG_STATE_HOME/snnconv/logs/ (default:
~/.local/state/snnconv/logs/), and the error line names it."""

# The `convert` options set JobSpec and CQOptions fields.  Their defaults, choices and types
# come from the fields: an option not given is absent from the parsed namespace
# (argparse.SUPPRESS), so the spec's own default applies, and its help shows that default.

# JobSpec fields that a `convert` option of another name sets; the others share their name.
_SPEC_DESTS = {"model_path": "model", "methods": "method"}
# CQOptions fields with a generic --cq-<field> option, its help the field's description.
_CQ_EXTRA = ("ice_grids", "ice_copies", "learning_rate", "surrogate_margin", "optimizer",
             "lr_decay", "augment", "keep_batchnorm", "fit_scale", "initial_membrane",
             "spike_finetune_epochs", "spike_learning_rate", "ctt_eta", "ctt_batches")
# Help for the CQOptions fields whose spec has no description.
_CQ_ABOUT = {"learning_rate": "CQ fine-tuning learning rate",
             "optimizer": "CQ fine-tuning optimizer",
             "augment": "augment the training batches while fine-tuning",
             "ctt_batches": "training batches that CTT calibrates the thresholds on"}
# CQOptions field -> the `convert` option (argparse dest) that sets it.
_CQ_DESTS = {"encoding": "cq_encoding", "finetune_epochs": "finetune_epochs",
             "levels": "levels", "clamp_max": "clamp_max",
             **{field: f"cq_{field}" for field in _CQ_EXTRA}}
# QCFSOptions field -> its `convert` option --qcfs-<field>, its help the field's description.
_QCFS_DESTS = {field: f"qcfs_{field}" for field in QCFSOptions.model_fields}
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
    """One job's progress bar on stderr, used as a context manager: left on screen when the job
    is done, cleared when it fails (the error line, not a half-full bar, should remain)."""

    def __init__(self, quiet: bool):
        self.bar = None if quiet else _tqdm()

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, kind, *_) -> None:
        self.close(clear=kind is not None)

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


def build_spec(args: argparse.Namespace) -> JobSpec:
    """The JobSpec of a `convert` command line, from the options given (the namespace holds
    only those); raises pydantic.ValidationError."""
    given = vars(args)
    fields = {field: given[dest] for field in JobSpec.model_fields
              if (dest := _SPEC_DESTS.get(field, field)) in given}
    cq = {field: given[dest] for field, dest in _CQ_DESTS.items() if dest in given}
    qcfs = {field: given[dest] for field, dest in _QCFS_DESTS.items() if dest in given}
    return JobSpec(**fields, cq=cq, qcfs=qcfs)


# The handlers of convert, inspect and demo import core.pipeline or core.demo when they run:
# those import torch (about 1.5 s), which `snnconv --help` and the service commands skip.


def _convert(args: argparse.Namespace) -> int:
    from core import pipeline  # torch: see above

    spec = build_spec(args)
    # fail at once, before the progress bar and the dataset load, on the commonest mistakes:
    pipeline.resolve_device(spec.device)  # CUDA asked for where there is none
    with spec.model_path.open("rb"):  # a model path that cannot be read: the error names it
        pass
    with _ProgressBar(args.quiet) as bar:
        report = pipeline.run_into(spec, args.out, bar)
    print(accuracy_table(report))
    if report.latency_choice is not None:
        print("\n" + "\n".join(choice_lines(report.latency_choice)))
    attributed = [line for result in report.methods for line in attribution_lines(result)]
    if attributed:
        print("\nerror attribution: top-1 each IF layer costs, recovered when it and the layers "
              "before it run as ideal rate neurons")
        print("\n".join(attributed))
    exiting = [result for result in report.methods if result.early_exit is not None]
    if exiting:
        print("\n" + early_exit_heading(exiting[0]))
        print("\n".join(line for result in exiting for line in early_exit_lines(result)))
    files = ", ".join((*report_files(report), *report.artifacts))
    print(f"\nreport files written to {args.out}/ ({files})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from core.pipeline import inspect  # torch: see above

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
    for status in catalog(args.data_dir):
        state = "available" if status.available else "missing"
        print(f"{status.name:<22} {state:<10} {status.description}")
        if not status.available and status.reason:
            print(f"{'':<22} {status.reason}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from core.demo import run_demo  # torch: see above

    demo = run_demo(args.out, timesteps=args.timesteps, quiet=args.quiet,
                    job_progress=lambda: _ProgressBar(args.quiet))
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


def _shown(default: object) -> str:
    """A field's default as the help shows it: a list comma-separated, like the option takes it."""
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    return str(default)


def _value_keywords(annotation: object) -> dict:
    """argparse keywords for a field of this type (``X`` or ``X | None``): a Literal's choices,
    a --x/--no-x pair for a bool, else the type that parses the value."""
    kind = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kind, *others = (part for part in typing.get_args(annotation) if part is not type(None))
        if others:
            raise TypeError(f"no option type for {annotation}")
    if typing.get_origin(kind) is typing.Literal:
        return {"choices": list(typing.get_args(kind))}
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind in (int, float, Path):
        return {"type": kind}
    if kind is str:
        return {}
    raise TypeError(f"no option type for {annotation}; pass type= to _add_field_option")


def _add_field_option(p: argparse.ArgumentParser, dest: str, info: FieldInfo, about: str,
                      unset: str = "auto", **keywords) -> None:
    """The option --<dest> for the spec field ``info``: absent from the namespace unless given,
    its help ``about`` and the field's default (``unset`` says what a None default means)."""
    default = info.get_default(call_default_factory=True)
    shown = unset if default is None else _shown(default)
    if "type" not in keywords:  # the list fields (methods, mean, std) bring their own parser
        keywords = {**_value_keywords(info.annotation), **keywords}
    p.add_argument("--" + dest.replace("_", "-"), default=argparse.SUPPRESS,
                   help=f"{about} (default: {shown})".replace("%", "%%"), **keywords)


def _add_spec_option(p: argparse.ArgumentParser, field: str, about: str, **keywords) -> None:
    _add_field_option(p, _SPEC_DESTS.get(field, field), JobSpec.model_fields[field], about,
                      **keywords)


def _add_cq_option(p: argparse.ArgumentParser, field: str, about: str | None = None,
                   **keywords) -> None:
    info = CQOptions.model_fields[field]
    about = about or info.description or _CQ_ABOUT[field]
    _add_field_option(p, _CQ_DESTS[field], info, about, **keywords)


_DATA_DIR_HELP = "folder with the dataset files"
_DATA_DIR_UNSET = "none; the bundled datasets need none"
_ARCH_HELP = "zoo architecture of a safetensors / state_dict file"
_ARCH_UNSET = "none; ONNX needs none"


def _add_convert_cq_options(p: argparse.ArgumentParser) -> None:
    _add_cq_option(p, "encoding", "input coding of the cq-* methods",
                   unset="auto: the coding detected in an uploaded CQ-trained model, else vr")
    _add_cq_option(p, "finetune_epochs", "CQ fine-tuning epochs; 0 converts the model as it is",
                   unset="auto: 0 for an already CQ-trained upload, else 2")
    _add_cq_option(p, "levels", "CQ quantisation levels L", unset="T/m")
    _add_cq_option(p, "clamp_max", "CQ clamp maximum m", unset="0.25 at T=1, else 0.8")
    for field in _CQ_EXTRA:
        _add_cq_option(p, field)
    for field, info in QCFSOptions.model_fields.items():
        _add_field_option(p, _QCFS_DESTS[field], info, f"qcfs: {info.description}",
                          unset="min(T, 8)" if field == "levels" else "the preset's")


def _add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a model and report accuracy per step")
    p.add_argument("model", type=Path,
                   help="model file: .onnx, .safetensors or a torch.save state_dict "
                        "(required, no default)")
    _add_spec_option(p, "dataset", "dataset name; see 'snnconv datasets'")
    _add_spec_option(p, "data_dir", _DATA_DIR_HELP, unset=_DATA_DIR_UNSET)
    _add_spec_option(p, "methods", f"comma-separated, from {', '.join(METHODS)}", type=_methods)
    _add_spec_option(p, "timesteps", "T: the report gives the accuracy at every t <= T",
                     unset="auto: T = m·L for an uploaded CQ-trained model, else 32")
    _add_spec_option(p, "arch", _ARCH_HELP, unset=_ARCH_UNSET)
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the report files")
    _add_spec_option(p, "device", "auto: CUDA when available")
    _add_spec_option(p, "batch_size", "samples per batch")
    _add_spec_option(p, "calib_samples", "training samples that calibrate the thresholds")
    _add_spec_option(p, "eval_samples", "test samples to evaluate",
                     unset="the whole test split")
    _add_spec_option(p, "seed", "random seed")
    _add_spec_option(p, "input_encoding", "input coding of the classic methods")
    _add_spec_option(p, "reset", "membrane reset after a spike")
    _add_spec_option(p, "percentile", "robust-norm percentile")
    _add_spec_option(p, "potential_correction_batches",
                     "post-conversion calibration of IF methods: batches that correct each "
                     "layer's initial membrane (0: off)")
    _add_spec_option(p, "error_attribution", "per IF layer, the accuracy it costs at every t "
                     "(L more simulations)")
    _add_spec_option(p, "early_exit", "per-sample early exit: accuracy against mean steps and "
                     "SOPs, thresholds chosen on the calibration images")
    _add_spec_option(p, "early_exit_tolerance", "early exit: top-1 (a fraction) the operating "
                     "point may lose on the calibration images against T")
    _add_spec_option(p, "energy_profile", "hardware of the energy estimate (Horowitz, 45 nm)")
    _add_spec_option(p, "target_accuracy", "choice of T: report each method's smallest t "
                     "reaching this top-1 (a fraction, e.g. 0.97) and recommend a method",
                     unset="none")
    _add_spec_option(p, "max_gap", "choice of T against the ANN: the target is its top-1 "
                     "less this gap (a fraction, e.g. 0.01)", unset="none")
    _add_spec_option(p, "mean", "comma-separated per-channel input mean, with --std",
                     unset="none", type=_floats)
    _add_spec_option(p, "std", "comma-separated per-channel input std, with --mean",
                     unset="none", type=_floats)
    _add_convert_cq_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_convert)


def _add_small_commands(subparsers) -> None:
    inspect_parser = subparsers.add_parser("inspect", help="pre-flight compatibility report")
    inspect_parser.add_argument("model", type=Path, help="model file (required, no default)")
    inspect_parser.add_argument("--arch", help=f"{_ARCH_HELP} (default: {_ARCH_UNSET})")
    inspect_parser.set_defaults(handler=_inspect)
    datasets_parser = subparsers.add_parser("datasets", help="list datasets and availability")
    datasets_parser.add_argument("--data-dir", type=Path,
                                 help=f"{_DATA_DIR_HELP} (default: {_DATA_DIR_UNSET})")
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
    nested = {"cq": _CQ_DESTS, "qcfs": _QCFS_DESTS}.get(loc[0]) if len(loc) > 1 else None
    dest = nested.get(loc[1]) if nested is not None else _SPEC_DESTS.get(loc[0], loc[0])
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
