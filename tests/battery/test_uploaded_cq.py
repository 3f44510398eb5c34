"""CQ-trained uploads are recognised and converted exactly with default options; the CLI
fine-tunes a plain ONNX upload.  Oracle: the uploaded CQ ANN's own top-1 on the same images."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.cli import main
from core.datasets import load_dataset
from core.errors import InvalidSpec
from core.pipeline import run
from core.spec import JobSpec
from tests.battery.models import BATTERY, UserModel, export, train_briefly

M, L = 0.8, 5  # T = m·L = 4


def cq(z: torch.Tensor) -> torch.Tensor:
    return torch.floor(torch.clamp(z, 0.0, M) * L) / L


class HandWrittenCQ(nn.Module):
    """A CQ network as users write it: Clip → Mul → Floor → Div after each hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        return self.fc(torch.flatten(cq(self.conv2(cq(self.conv1(x)))), 1))


@pytest.fixture(scope="module")
def cq_upload(tmp_path_factory):
    torch.manual_seed(0)
    model = HandWrittenCQ()
    train = load_dataset("digits").train
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):  # a straight-through estimator is the user's business; floor has grad 0
        for first in range(0, len(y), 64):
            optimiser.zero_grad()
            z = model.conv1(x[first:first + 64])
            h = torch.clamp(z, 0, M) + (cq(z) - torch.clamp(z, 0, M)).detach()
            z = model.conv2(h)
            h = torch.clamp(z, 0, M) + (cq(z) - torch.clamp(z, 0, M)).detach()
            F.cross_entropy(model.fc(torch.flatten(h, 1)), y[first:first + 64]).backward()
            optimiser.step()
    spec = UserModel("cq", HandWrittenCQ)
    sample = torch.from_numpy(load_dataset("digits").test.x[:1])
    return export(model.eval(), spec, sample, tmp_path_factory.mktemp("cq") / "m.onnx", "default")


def test_cq_upload_with_default_options_equals_its_ann_exactly(cq_upload):
    report = run(JobSpec(model_path=cq_upload, dataset="digits", methods=["cq-asg"],
                         device="cpu"))

    asg = report.methods[0]
    assert report.model.detected == {"cq": True, "L": L, "m": pytest.approx(M), "T": 4,
                                     "coding": "direct"}
    assert len(asg.top1) == 4 and asg.parameters["finetune"]["epochs"] == 0
    assert asg.top1[-1] == report.ann.top1 == asg.reference_top1  # same images, exact
    assert set(report.model.defaults) == {"timesteps", "finetune_epochs", "encoding"}
    assert "read from the uploaded CQ graph" in report.model.defaults["timesteps"]


def test_timesteps_contradicting_a_cq_upload_is_a_clear_error(cq_upload):
    with pytest.raises(InvalidSpec, match="T = m·L = 4"):
        run(JobSpec(model_path=cq_upload, dataset="digits", methods=["cq-asg"],
                    timesteps=8, device="cpu"))


def test_other_coding_without_fine_tuning_is_a_clear_error(cq_upload):
    with pytest.raises(InvalidSpec, match="trained with direct input"):
        run(JobSpec(model_path=cq_upload, dataset="digits", methods=["cq-asg"],
                    device="cpu", cq={"encoding": "vr"}))


def test_fine_tuning_a_cq_upload_keeps_its_own_levels(cq_upload):
    report = run(JobSpec(model_path=cq_upload, dataset="digits", methods=["cq-asg"],
                         eval_samples=100, device="cpu", cq={"finetune_epochs": 1}))
    parameters = report.methods[0].parameters
    assert (parameters["T"], parameters["L"], parameters["encoding"]) == (4, L, "direct")
    assert parameters["finetune"]["epochs"] == 1


def test_exported_cq_network_reuploaded_is_detected_with_its_vr_coding(tmp_path):
    spec = BATTERY["lenet5-maxpool"]
    sample = torch.from_numpy(load_dataset("digits").test.x[:1])
    path = export(train_briefly(spec), spec, sample, tmp_path / "m.onnx", "legacy-13")
    first = run(JobSpec(model_path=path, dataset="digits", methods=["cq-asg"], timesteps=2,
                        eval_samples=100, device="cpu", cq={"finetune_epochs": 1}),
                artifacts_dir=tmp_path)

    again = run(JobSpec(model_path=tmp_path / "cq-model.onnx", dataset="digits",
                        methods=["cq-asg"], eval_samples=100, device="cpu"))

    assert again.model.detected["coding"] == "vr" and again.model.detected["T"] == 2
    assert again.methods[0].top1 == first.methods[0].top1
    assert again.methods[0].reference_top1 == first.methods[0].reference_top1


def test_cli_fine_tunes_a_plain_onnx_upload(tmp_path, capsys):
    spec = BATTERY["mlp"]
    sample = torch.from_numpy(load_dataset("digits").test.x[:1])
    path = export(train_briefly(spec), spec, sample, tmp_path / "m.onnx", "default")

    status = main(["convert", str(path), "--dataset", "digits", "--method", "cq-asg,cq-ctt",
                   "--timesteps", "2", "--eval-samples", "60", "--finetune-epochs", "1",
                   "--cq-spike-finetune-epochs", "1", "--cq-initial-membrane", "0.5",
                   "--out", str(tmp_path / "out"), "--quiet", "--device", "cpu"])

    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    asg, ctt = report["methods"]
    assert asg["parameters"]["finetune"]["epochs"] == 1
    assert asg["top1"][-1] == pytest.approx(asg["reference_top1"])
    assert "spike_finetune" not in asg["parameters"]
    assert ctt["parameters"]["spike_finetune"]["epochs"] == 1
    assert ctt["parameters"]["initial_membrane"] == 0.5
    assert "Traceback" not in capsys.readouterr().err


def test_exported_ice_network_reuploaded_is_detected_with_its_grids(tmp_path):
    spec = BATTERY["lenet5-maxpool"]
    sample = torch.from_numpy(load_dataset("digits").test.x[:1])
    path = export(train_briefly(spec), spec, sample, tmp_path / "m.onnx", "legacy-13")
    first = run(JobSpec(model_path=path, dataset="digits", methods=["cq-asg"], timesteps=2,
                        eval_samples=100, device="cpu",
                        cq={"finetune_epochs": 1, "encoding": "vr-ice", "ice_copies": 2}),
                artifacts_dir=tmp_path)

    again = run(JobSpec(model_path=tmp_path / "cq-model.onnx", dataset="digits",
                        methods=["cq-asg"], eval_samples=100, device="cpu"))

    detected = again.model.detected
    assert (detected["coding"], detected["ice_grids"], detected["ice_copies"]) == ("vr-ice", 3, 2)
    assert again.methods[0].top1 == first.methods[0].top1
