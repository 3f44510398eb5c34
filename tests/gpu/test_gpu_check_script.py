"""scripts/gpu_check.py, the driver of scripts/gpu-check.sh, run on the CPU at tiny sizes.

The script is written for a CUDA machine; ``--device cpu --compare-with cpu`` runs every step
(training, ONNX export with the defaults, both pipeline jobs, the comparison, the summary) on
the CPU, so that the script itself is checked where there is no GPU.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
TINY = ["--dataset", "digits", "--train-epochs", "1", "--eval-samples", "100",
        "--calib-samples", "100", "--classic-timesteps", "4", "--cq-timesteps", "2",
        "--ctt-batches", "1"]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.slow
def test_cpu_run_passes_and_writes_the_summary(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--compare-with", "cpu", *TINY,
                           "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# GPU check: PASSED")
    assert "**FAIL**" not in summary
    for method in ("robust-norm", "channel-norm", "cq-asg", "cq-ctt"):
        assert f"| {method} |" in summary
    assert {"m.onnx", "m.onnx.data"} <= {p.name for p in (tmp_path / "model").iterdir()}
    assert (tmp_path / "report-tested-cpu-paper.json").is_file()
    assert (tmp_path / "report-oracle-cpu-classic.json").is_file()
    assert "checks passed" in capsys.readouterr().out


def test_out_defaults_to_the_environment(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.output_dir(None) == tmp_path
    monkeypatch.delenv("OUT")
    assert gpu_check.output_dir(None) == Path("out/gpu-check")
    assert gpu_check.output_dir(tmp_path / "x") == tmp_path / "x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_without_cuda_it_fails_fast_with_one_line(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_NO_DEVICE == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("no CUDA device: ")
    assert not (tmp_path / "summary.md").exists()
