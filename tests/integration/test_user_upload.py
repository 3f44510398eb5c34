"""A user's plain ONNX export (m.onnx + m.onnx.data) through REST, fine-tuned by the real worker.

Both stacks of ``conftest.service``: Redis + PostgreSQL + a Celery worker process, and the
embedded one.  The oracle for cq-asg is the CQ ANN it converts: the SNN reproduces it at T.
"""

from __future__ import annotations

import time

import onnx
import pytest
import torch

from core.datasets import load_dataset
from tests.battery.models import BATTERY, export, train_briefly

pytestmark = pytest.mark.integration
POLL_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    spec = BATTERY["resnet-style"]
    folder = tmp_path_factory.mktemp("user-export")
    sample = torch.from_numpy(load_dataset("digits").test.x[:1])
    path = export(train_briefly(spec), spec, sample, folder / "m.onnx", "default")
    return path, folder / "m.onnx.data"


def test_default_export_pair_is_fine_tuned_and_converted_by_the_worker(service, default_export):
    graph, weights = default_export
    with service.client() as http:
        upload = http.post("/v1/models", files=[("file", ("m.onnx", graph.read_bytes())),
                                                ("file", ("m.onnx.data", weights.read_bytes()))])
        assert upload.status_code == 201, upload.text
        submitted = http.post("/v1/jobs", json={
            "model_id": upload.json()["id"], "dataset": "digits", "methods": ["cq-asg", "cq-if"],
            "timesteps": 2, "eval_samples": 60, "calib_samples": 64,
            "cq": {"finetune_epochs": 1, "spike_finetune_epochs": 1, "initial_membrane": 0.5}})
        assert submitted.status_code == 202, submitted.text
        job = _poll(http, service, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        report = http.get(f"/v1/jobs/{job['id']}/report").json()
        tuned = http.get(f"/v1/jobs/{job['id']}/cq-if-model.onnx")
        untuned = http.get(f"/v1/jobs/{job['id']}/cq-ctt-model.onnx")
    assert tuned.status_code == 200
    assert onnx.load_from_string(tuned.content).graph.node  # a whole ONNX graph
    assert untuned.status_code == 404
    assert "spike-aware fine-tuning" in untuned.json()["detail"]
    assert report["artifacts"] == ["cq-model.onnx", "cq-model.safetensors", "cq-if-model.onnx",
                                   "cq-if-model.safetensors"]
    asg, plain_if = report["methods"]
    assert asg["parameters"]["finetune"]["epochs"] == 1
    assert plain_if["parameters"]["spike_finetune"]["epochs"] == 1
    assert plain_if["parameters"]["initial_membrane"] == 0.5
    assert len(asg["top1"]) == 2 and asg["top1"][-1] == pytest.approx(asg["reference_top1"])
    assert report["model"]["detected"] == {"cq": False}


def test_onnx_without_its_data_file_is_refused_with_the_missing_name(service, default_export):
    graph, _ = default_export
    with service.client() as http:
        response = http.post("/v1/models", files={"file": ("m.onnx", graph.read_bytes())})
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "m.onnx.data" in response.json()["detail"]


def _poll(http, service, job_id: str) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still {job['status']}\n{service.log_tail()}")
