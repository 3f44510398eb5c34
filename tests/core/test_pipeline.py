"""The pipeline end to end on real data, with the ANN as the oracle."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from core import zoo
from core.datasets import load_dataset
from core.errors import InvalidSpec, ModelRejected, UnsupportedModel
from core.methods import ConversionContext, convert
from core.pipeline import CQ_MODEL_FILES, inspect, run, run_into
from core.report import REPORT_FILES, write_report_files
from core.spec import JobSpec
from core.train import export_onnx, export_safetensors, fit, to_cq


@pytest.fixture(scope="session")
def mnist_cnn(tmp_path_factory):
    """The demo CNN trained on mnist-5k's 4,000 training images (safetensors file)."""
    dataset = load_dataset("mnist-5k")
    torch.manual_seed(0)
    model = zoo.build("cnn-small")
    fit(model, dataset.train, epochs=4, lr=2e-3, batch_size=64, seed=0)
    path = tmp_path_factory.mktemp("models") / "cnn-small.safetensors"
    export_safetensors(model, path)
    return path


@pytest.fixture(scope="session")
def digits_cq_onnx(tmp_path_factory):
    """An MLP trained on digits, fine-tuned with CQ (T = 4, L = 5) and exported to ONNX."""
    dataset = load_dataset("digits")
    torch.manual_seed(0)
    model = zoo.build("mlp-digits")
    fit(model, dataset.train, epochs=15, lr=3e-3, seed=0)
    cq = to_cq(model, 0.8, 5)
    fit(cq, dataset.train, epochs=3, lr=1e-3, seed=0)
    path = tmp_path_factory.mktemp("models") / "digits-cq.onnx"
    export_onnx(cq.cpu().eval(), (1, 1, 8, 8), path, dynamo=False)
    return path


@pytest.mark.slow
def test_robust_norm_reaches_the_ann_at_256_steps_on_mnist(mnist_cnn, tmp_path):
    report = run(JobSpec(model_path=mnist_cnn, arch="cnn-small", dataset="mnist-5k",
                         methods=["robust-norm"], timesteps=256, device="cpu"))
    result = report.methods[0]
    assert report.dataset.eval_samples == 1000
    assert report.ann.top1 > 0.95
    assert abs(result.top1[-1] - report.ann.top1) <= 0.005
    agreement = [result.agreement[t - 1] for t in (4, 16, 64, 256)]
    assert agreement == sorted(agreement) and agreement[-1] > agreement[0]
    assert result.agreement[-1] >= 0.99
    files = write_report_files(report, tmp_path)
    document = json.loads(files["report.json"].read_text())
    assert document["ann"]["top1"] == report.ann.top1
    assert document["methods"][0]["method"] == "robust-norm"
    assert len(document["methods"][0]["top1"]) == 256
    rows = list(csv.DictReader(io.StringIO(files["report.csv"].read_text())))
    assert len(rows) == 256 and rows[-1]["t"] == "256"
    assert float(rows[-1]["top1"]) == pytest.approx(result.top1[-1], abs=1e-6)
    assert files["accuracy.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in files["accuracy.svg"].read_bytes()[:400]


def test_all_classic_methods_in_one_job_share_samples(mnist_cnn):
    report = run(JobSpec(model_path=mnist_cnn, arch="cnn-small", methods=[
        "max-norm", "robust-norm", "half-threshold", "channel-norm"], timesteps=16,
        eval_samples=200, calib_samples=300, device="cpu"))
    assert [m.method for m in report.methods] == ["max-norm", "robust-norm",
                                                  "half-threshold", "channel-norm"]
    assert all(m.reference_top1 == report.ann.top1 for m in report.methods)
    assert report.dataset.eval_samples == 200 and report.dataset.calib_samples == 300
    # the energy estimate grows with every step and starts from the analog first layer
    for result in report.methods:
        assert result.energy_uj[0] > 0 and result.analog_input
        assert all(b >= a for a, b in zip(result.energy_uj, result.energy_uj[1:], strict=False))
    repeated = run(JobSpec(model_path=mnist_cnn, arch="cnn-small", methods=["robust-norm"],
                           timesteps=16, eval_samples=200, calib_samples=300, device="cpu"))
    assert repeated.methods[0].top1 == report.methods[1].top1


def test_oversized_sample_counts_use_the_whole_split(mnist_cnn):
    report = run(JobSpec(model_path=mnist_cnn, arch="cnn-small", dataset="mnist-5k",
                         methods=["robust-norm"], timesteps=2, eval_samples=10**6,
                         calib_samples=10**6, device="cpu"))
    assert report.dataset.eval_samples == 1000 and report.dataset.calib_samples == 4000


def test_mismatched_dataset_is_a_clear_error(mnist_cnn):
    with pytest.raises(InvalidSpec, match=r"\[1, 28, 28\].*\[1, 8, 8\]"):
        run(JobSpec(model_path=mnist_cnn, arch="cnn-small", dataset="digits",
                    timesteps=2, device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("dataset, arch, epochs", [("digits", "mlp-digits", 15),
                                                   ("mnist-5k", "cnn-small", 2)])
def test_asg_is_exact_on_the_whole_evaluation_split(dataset, arch, epochs, tmp_path):
    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = zoo.build(arch)
    fit(model, data.train, epochs=epochs, lr=2e-3, seed=0)
    from core.graph import canonicalize, trace

    spec = JobSpec(model_path=tmp_path / "unused.onnx", dataset=dataset, methods=["cq-asg"],
                   timesteps=4, cq={"finetune_epochs": 1, "encoding": "vr"})
    ctx = ConversionContext(ann=canonicalize(model), trainable=trace(model), spec=spec,
                            device=torch.device("cpu"), sample_shape=data.input_shape,
                            train_x=data.train.x,
                            train_y=data.train.y, calib_x=data.train.x[:500],
                            progress=lambda *_: None)
    snn = convert("cq-asg", ctx)
    x = torch.from_numpy(data.test.x)
    with torch.no_grad():
        expected = snn.reference(x)
        snn.encoder.begin(x)
        got = snn.network(snn.encoder.window_mean(4))
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_cq_onnx_upload_converts_without_fine_tuning(digits_cq_onnx):
    report = run(JobSpec(model_path=digits_cq_onnx, dataset="digits", methods=["cq-asg"],
                         timesteps=4, cq={"finetune_epochs": 0, "encoding": "direct"},
                         device="cpu"))
    result = report.methods[0]
    assert result.parameters["T"] == 4 and result.parameters["L"] == 5
    assert result.top1[-1] == report.ann.top1
    assert result.agreement[-1] == 1.0
    assert inspect(digits_cq_onnx).cq_layers == 2


def test_cq_network_is_exported_for_the_user(mnist_cnn, tmp_path):
    from core.ingest import load_model

    report = run(JobSpec(model_path=mnist_cnn, arch="cnn-small", methods=["cq-asg"],
                         timesteps=2, eval_samples=50, cq={"finetune_epochs": 1,
                                                          "encoding": "vr"}, device="cpu"),
                 artifacts_dir=tmp_path)
    assert report.artifacts == ["cq-model.onnx", "cq-model.safetensors"]
    reimported = load_model(tmp_path / "cq-model.onnx")
    x = torch.from_numpy(load_dataset("mnist-5k").test.x[:20])
    exported_top1 = (reimported.module(x).argmax(1).numpy()
                     == load_dataset("mnist-5k").test.y[:20]).mean()
    assert exported_top1 >= 0.8
    # the re-imported graph is recognised as CQ throughout, VR input included
    preflight_report = inspect(tmp_path / "cq-model.onnx")
    assert preflight_report.convertible
    assert preflight_report.cq_layers == preflight_report.spiking_layers >= 4


@pytest.mark.parametrize(("methods", "cq_files"), [(["robust-norm"], []),
                                                   (["cq-asg"], list(CQ_MODEL_FILES))])
def test_run_into_writes_the_report_files_and_the_cq_model(digits_cq_onnx, tmp_path, methods,
                                                           cq_files):
    """What the CLI, the demo and the worker hand the user: the report files, plus the CQ
    network when a paper method built one; the folder is created."""
    out = tmp_path / "new" / "folder"
    report = run_into(JobSpec(model_path=digits_cq_onnx, dataset="digits", methods=methods,
                              timesteps=4, eval_samples=50, device="cpu",
                              cq={"finetune_epochs": 0, "encoding": "direct"}), out)
    assert report.artifacts == cq_files
    assert sorted(path.name for path in out.iterdir()) == sorted([*REPORT_FILES, *cq_files])
    assert json.loads((out / "report.json").read_text()) == json.loads(report.model_dump_json())


def test_finetune_epochs_zero_needs_a_cq_model(mnist_cnn):
    with pytest.raises(InvalidSpec, match="CQ-trained"):
        run(JobSpec(model_path=mnist_cnn, arch="cnn-small", methods=["cq-asg"], timesteps=4,
                    eval_samples=10, cq={"finetune_epochs": 0}, device="cpu"))


def test_model_without_activations_fails_loudly(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10),
                                torch.nn.Linear(10, 10))
    path = tmp_path / "linear.onnx"
    export_onnx(model.eval(), (1, 1, 8, 8), path, dynamo=False)
    report = inspect(path)
    assert not report.convertible and report.spiking_layers == 0
    with pytest.raises(UnsupportedModel, match="no ReLU-like activation"):
        run(JobSpec(model_path=path, dataset="digits", timesteps=2, device="cpu"))


def test_unsupported_operator_is_refused_at_import(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Sigmoid(),
                                torch.nn.Linear(10, 10))
    path = tmp_path / "sigmoid.onnx"
    export_onnx(model.eval(), (1, 1, 8, 8), path, dynamo=False)
    with pytest.raises(ModelRejected, match=r"Sigmoid \(") as raised:
        run(JobSpec(model_path=path, dataset="digits", timesteps=2, device="cpu"))
    assert raised.value.code == "unsupported-ops"


def test_progress_reaches_one_and_partial_accuracy_is_a_fraction(mnist_cnn):
    events = []
    run(JobSpec(model_path=mnist_cnn, arch="cnn-small", methods=["robust-norm"], timesteps=8,
                eval_samples=300, device="cpu"), events.append)
    fractions = [e.progress for e in events]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    partial = [e.partial_top1 for e in events if e.partial_top1]
    assert partial and all(0 <= a <= 1 for values in partial for a in values)
    assert {e.stage for e in events} >= {"load", "convert", "simulate", "report"}
