"""The command line: one error line (never a traceback) and a non-zero status per failure,
and a default stated for every option."""

from __future__ import annotations

import random
import re

import pytest

from core import cli, pipeline
from core.spec import CQOptions, JobSpec

SUBCOMMANDS = ("convert", "inspect", "datasets", "demo", "serve", "worker", "migrate")


@pytest.fixture(autouse=True)
def state_home(tmp_path, monkeypatch):
    """Tracebacks of unexpected errors go under a temporary $XDG_STATE_HOME."""
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def random_onnx(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def _run(capsys, *argv) -> tuple[int, list[str]]:
    """Exit status and stderr lines; the progress bar is off, it is not part of the error."""
    status = cli.main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err.splitlines()


def _convert(capsys, tmp_path, model, *options) -> tuple[int, list[str]]:
    return _run(capsys, "convert", model, "--quiet", "--dataset", "digits",
                "--out", tmp_path / "out", *options)


def test_missing_model_file_names_the_path(capsys, tmp_path):
    missing = tmp_path / "missing.onnx"
    status, lines = _convert(capsys, tmp_path, missing, "--device", "cpu")
    assert status == cli.EXIT_USER_ERROR
    assert lines == [f"error: {missing}: No such file or directory"]


def test_a_directory_as_model_names_the_path(capsys, tmp_path):
    status, lines = _run(capsys, "inspect", tmp_path)
    assert status == cli.EXIT_USER_ERROR and len(lines) == 1 and str(tmp_path) in lines[0]


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_random_bytes_are_rejected_in_one_line(capsys, tmp_path, random_onnx, command):
    if command == "convert":
        status, lines = _convert(capsys, tmp_path, random_onnx, "--device", "cpu")
    else:
        status, lines = _run(capsys, "inspect", random_onnx)
    assert status == cli.EXIT_USER_ERROR
    assert len(lines) == 1 and lines[0].startswith("error (unrecognised-format): ")


def test_unknown_method_is_a_usage_error(capsys, tmp_path, random_onnx):
    status, lines = _convert(capsys, tmp_path, random_onnx, "--method", "bogus")
    assert status == cli.EXIT_USER_ERROR
    assert len(lines) == 1 and "bogus" in lines[0] and "snnconv convert --help" in lines[0]


@pytest.mark.parametrize("argv", [["--nonsense"], [], ["convert"], ["convert", "m", "--mean", "a"],
                                  ["convert", "m", "--timesteps", "x"], ["frobnicate"]])
def test_argparse_errors_are_one_line(capsys, argv):
    status, lines = _run(capsys, *argv)
    assert status == cli.EXIT_USER_ERROR and len(lines) == 1 and lines[0].startswith("error: ")


@pytest.mark.parametrize(("options", "line"), [
    (["--timesteps", "0"], "error: --timesteps: Input should be greater than or equal to 1"),
    (["--finetune-epochs", "-1"],
     "error: --finetune-epochs: Input should be greater than or equal to 0"),
    (["--cq-ice-grids", "0"], "error: --cq-ice-grids: Input should be greater than or equal to 1"),
    (["--batch-size", "0"], "error: --batch-size: Input should be greater than or equal to 1"),
    (["--mean", "0.5"], "error: give both mean and std, or neither"),
])
def test_invalid_spec_fields_name_the_option(capsys, tmp_path, random_onnx, options, line):
    status, lines = _convert(capsys, tmp_path, random_onnx, *options)
    assert status == cli.EXIT_USER_ERROR
    assert lines == [line]


def test_one_line_per_invalid_field(capsys, tmp_path, random_onnx):
    status, lines = _convert(capsys, tmp_path, random_onnx, "--timesteps", "0", "--seed", "-1")
    assert status == cli.EXIT_USER_ERROR
    assert [line.split(":")[1].strip() for line in lines] == ["--timesteps", "--seed"]


def test_demo_timesteps_are_validated_too(capsys, tmp_path, monkeypatch):
    import core.demo

    monkeypatch.setattr(core.demo, "demo_model", lambda quiet: tmp_path / "model.safetensors")
    status, lines = _run(capsys, "demo", "--timesteps", "0", "--out", tmp_path / "out")
    assert status == cli.EXIT_USER_ERROR
    assert lines == ["error: --timesteps: Input should be greater than or equal to 1"]


def test_cuda_without_cuda_is_one_line(capsys, tmp_path, random_onnx):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    status, lines = _convert(capsys, tmp_path, random_onnx, "--device", "cuda")
    assert status == cli.EXIT_USER_ERROR
    assert len(lines) == 1 and lines[0].startswith("error (invalid-spec): ")
    assert "CUDA" in lines[0]


def test_missing_dataset_files_are_one_line(capsys, tmp_path, digits_onnx):
    empty = tmp_path / "data"
    empty.mkdir()
    status, lines = _run(capsys, "convert", digits_onnx, "--quiet", "--device", "cpu",
                         "--dataset", "mnist", "--data-dir", empty, "--out", tmp_path / "out")
    assert status == cli.EXIT_USER_ERROR
    assert len(lines) == 1 and lines[0].startswith("error (dataset-unavailable): ")


def test_unconvertible_model_is_one_line(capsys, tmp_path, linear_onnx):
    status, lines = _convert(capsys, tmp_path, linear_onnx, "--device", "cpu")
    assert status == cli.EXIT_USER_ERROR
    assert len(lines) == 1 and lines[0].startswith("error (unsupported-model): ")


def _inspect(capsys, *argv) -> tuple[int, list[str], str]:
    """Exit status, stdout lines and stderr of `snnconv inspect`."""
    status = cli.main(["inspect", *(str(arg) for arg in argv)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err


def test_inspect_exits_zero_for_a_convertible_model(capsys, digits_onnx):
    status, lines, err = _inspect(capsys, digits_onnx)
    assert status == 0 and err == ""
    assert lines[0] == "format onnx, input shape [1, 8, 8], 1 spiking layers (0 CQ)"
    converted = [line for line in lines[1:-1] if line.split()[0] == "converted"]
    assert len(converted) == 1 and converted[0].endswith("ReLU → integrate-and-fire neuron")
    assert not any(line.startswith("problem:") for line in lines)
    assert lines[-1] == "convertible"


def test_inspect_exits_non_zero_for_a_model_it_cannot_convert(capsys, linear_onnx):
    status, lines, err = _inspect(capsys, linear_onnx)
    # a verdict, not an error: the report on stdout, nothing on stderr, status 1
    assert status == 1 and err == ""
    assert lines[0].startswith("format onnx, input shape [1, 8, 8], 0 spiking layers")
    assert "problem: no ReLU-like activation found: nothing would become a spiking neuron" in lines
    assert lines[-1] == "NOT convertible"


def test_inspect_passes_the_architecture_of_a_weights_file(capsys, tmp_path):
    from core import zoo
    from core.train import export_safetensors

    weights = tmp_path / "mlp.safetensors"
    export_safetensors(zoo.build("mlp-digits"), weights)
    status, lines, _ = _inspect(capsys, weights, "--arch", "mlp-digits")
    assert status == 0 and lines[0].startswith("format safetensors, input shape [1, 8, 8], ")
    assert lines[-1] == "convertible"
    status, lines, err = _inspect(capsys, weights)  # no --arch: a user error, in one line
    assert status == cli.EXIT_USER_ERROR and lines == []
    assert err.startswith("error (arch-required): ") and len(err.splitlines()) == 1


def _fail_with(error: BaseException):
    def run(*_args, **_kwargs):
        raise error
    return run


def test_unexpected_error_is_one_line_and_logs_the_traceback(capsys, tmp_path, random_onnx,
                                                             monkeypatch, state_home):
    monkeypatch.setattr(pipeline, "run", _fail_with(RuntimeError("boom")))
    status, lines = _convert(capsys, tmp_path, random_onnx, "--device", "cpu")
    assert status == cli.EXIT_UNEXPECTED and len(lines) == 1
    match = re.fullmatch(r"error: unexpected RuntimeError: boom; the traceback is in (.+)",
                         lines[0])
    assert match, lines[0]
    log = cli.log_dir() / match.group(1).rsplit("/", 1)[-1]
    assert match.group(1) == str(log) and log.parent == state_home / "snnconv" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert str(random_onnx) in text  # the command line, to reproduce it

    _convert(capsys, tmp_path, random_onnx, "--device", "cpu")
    assert len(list(log.parent.glob("error-*.log"))) == 2  # a new file per failure


def test_unwritable_log_directory_still_one_line(capsys, tmp_path, random_onnx, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))  # a file: no directory can go there
    monkeypatch.setattr(pipeline, "run", _fail_with(ValueError("")))
    status, lines = _convert(capsys, tmp_path, random_onnx, "--device", "cpu")
    assert status == cli.EXIT_UNEXPECTED
    assert len(lines) == 1 and lines[0].startswith(
        "error: unexpected ValueError; the traceback could not be saved")


def test_interrupt_is_one_line(capsys, tmp_path, random_onnx, monkeypatch):
    monkeypatch.setattr(pipeline, "run", _fail_with(KeyboardInterrupt()))
    status, lines = _convert(capsys, tmp_path, random_onnx, "--device", "cpu")
    assert status == cli.EXIT_INTERRUPTED and lines == ["error: interrupted"]


def test_options_not_given_leave_the_spec_defaults(tmp_path):
    args = cli.build_parser().parse_args(["convert", str(tmp_path / "m.onnx")])
    spec = cli.build_spec(args)
    assert spec.timesteps == JobSpec.model_fields["timesteps"].default
    assert spec.cq == CQOptions()
    assert spec.methods == ["robust-norm"] and spec.model_path == tmp_path / "m.onnx"


def test_cq_options_reach_the_spec(tmp_path):
    args = cli.build_parser().parse_args([
        "convert", "m.onnx", "--timesteps", "4", "--cq-encoding", "direct",
        "--finetune-epochs", "0", "--cq-augment", "--no-cq-keep-batchnorm",
        "--cq-optimizer", "sgd", "--cq-ctt-batches", "3", "--no-cq-fit-scale"])
    spec = cli.build_spec(args)
    assert spec.timesteps == 4
    assert (spec.cq.encoding, spec.cq.finetune_epochs, spec.cq.augment) == ("direct", 0, True)
    assert (spec.cq.keep_batchnorm, spec.cq.optimizer, spec.cq.ctt_batches) == (False, "sgd", 3)
    assert spec.cq.fit_scale is False


def _help_entries(text: str) -> dict[str, str]:
    """Option (or positional) -> its help text, from the argument sections of --help."""
    entries, name, in_section = {}, None, False
    for line in text.splitlines():
        if line in ("options:", "optional arguments:", "positional arguments:"):
            in_section, name = True, None
        elif not line.strip():
            in_section = False
        elif in_section and re.match(r"^  \S", line):
            name, _, rest = line.strip().partition("  ")
            entries[name] = rest
        elif in_section and name is not None:
            entries[name] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_option_states_its_default(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    entries.pop("-h, --help")
    assert entries, "no options found in the help text"
    undocumented = [name for name, text in entries.items() if "default" not in text]
    assert not undocumented
    if command == "convert":
        assert len(entries) > 20 and "(default: auto:" in entries["--timesteps TIMESTEPS"]
