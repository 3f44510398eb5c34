"""The CUDA path end to end: the same jobs on the GPU and on the CPU, the CPU as the oracle.

Skipped where torch sees no CUDA device (CI has none); run them on a GPU machine with
``python -m pytest tests/gpu``.  Training is seeded, but GPU and CPU kernels round
differently, so the fine-tuned CQ networks are compared with their own ANN (exactness)
and the training-free methods with the CPU run of the same weights (agreement).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import zoo
from core.datasets import load_dataset
from core.pipeline import CQ_MODEL_FILES, run
from core.spec import JobSpec
from core.train import evaluate, export_safetensors, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")

CLASSIC = ["max-norm", "robust-norm", "half-threshold", "channel-norm"]
PAPER = ["cq-asg", "cq-if", "cq-ctt"]


@pytest.fixture(scope="module")
def mnist_cnn_trained_on_cuda(tmp_path_factory):
    """cnn-small trained on the GPU; returns (weights file, its CPU test top-1)."""
    dataset = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = zoo.build("cnn-small")
    fit(model, dataset.train, epochs=3, lr=2e-3, batch_size=64, seed=0, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    path = tmp_path_factory.mktemp("models") / "cnn-small.safetensors"
    export_safetensors(model.cpu(), path)
    return path, evaluate(model, dataset.test)


def _job(path, device: str, methods: list[str], timesteps: int, **extra) -> JobSpec:
    return JobSpec(model_path=path, arch="cnn-small", dataset="mnist-5k", methods=methods,
                   timesteps=timesteps, eval_samples=500, device=device, **extra)


def test_training_on_cuda_learns(mnist_cnn_trained_on_cuda):
    _, top1 = mnist_cnn_trained_on_cuda
    assert top1 > 0.93


def test_classic_methods_on_cuda_agree_with_the_cpu(mnist_cnn_trained_on_cuda):
    path, _ = mnist_cnn_trained_on_cuda
    gpu = run(_job(path, "cuda", CLASSIC, 16))
    cpu = run(_job(path, "cpu", CLASSIC, 16))
    assert gpu.device.startswith("cuda") and cpu.device == "cpu"
    assert gpu.ann.top1 == pytest.approx(cpu.ann.top1, abs=0.002)
    for on_gpu, on_cpu in zip(gpu.methods, cpu.methods, strict=True):
        assert on_gpu.method == on_cpu.method
        # a current that lands on a threshold may round to the other side on another device
        assert np.max(np.abs(np.subtract(on_gpu.top1, on_cpu.top1))) <= 0.01, on_gpu.method
        assert on_gpu.sops[-1] == pytest.approx(on_cpu.sops[-1], rel=0.01), on_gpu.method
    robust = next(r for r in gpu.methods if r.method == "robust-norm")
    assert robust.top1[-1] >= gpu.ann.top1 - 0.02  # near the ANN at T = 16


@pytest.mark.parametrize("encoding", ["vr", "vr-ice"])
def test_paper_suite_on_cuda_keeps_asg_exact(mnist_cnn_trained_on_cuda, encoding, tmp_path):
    path, _ = mnist_cnn_trained_on_cuda
    report = run(_job(path, "cuda", PAPER, 4, cq={"finetune_epochs": 1, "encoding": encoding}),
                 artifacts_dir=tmp_path)
    asg, cq_if, ctt = report.methods
    assert asg.reference_top1 > 0.9, "the CQ ANN fine-tuned on the GPU should still classify"
    assert asg.top1[-1] == asg.reference_top1
    assert asg.agreement[-1] == 1.0
    for plain in (cq_if, ctt):
        assert plain.top1[-1] >= asg.reference_top1 - 0.05, plain.method
    assert {p.name for p in tmp_path.iterdir()} >= set(CQ_MODEL_FILES)


def test_poisson_input_on_cuda_is_reproducible(mnist_cnn_trained_on_cuda):
    path, _ = mnist_cnn_trained_on_cuda
    first = run(_job(path, "cuda", ["robust-norm"], 8, input_encoding="poisson", seed=3))
    second = run(_job(path, "cuda", ["robust-norm"], 8, input_encoding="poisson", seed=3))
    assert first.methods[0].top1 == second.methods[0].top1
    assert first.methods[0].sops == second.methods[0].sops
