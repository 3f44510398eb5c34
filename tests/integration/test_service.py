"""The whole service over HTTP: upload → job → poll → reports; cancel; a failing model.

Runs against both stacks of ``conftest.service`` (Redis + PostgreSQL + a Celery worker
process, and the embedded single-command stack).  Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from core import pipeline
from core.spec import JobSpec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

POLL_TIMEOUT_S = 90
FLOW_OPTIONS = {"dataset": "digits", "methods": ["max-norm", "robust-norm"], "timesteps": 12,
                "eval_samples": 200, "calib_samples": 200, "batch_size": 50, "seed": 7}
# Long enough to be caught running: every t up to 4096 over the whole test split.
LONG_OPTIONS = {"dataset": "digits", "methods": ["robust-norm"], "timesteps": 4096,
                "batch_size": 20}


def _upload(http, path) -> dict:
    response = http.post("/v1/models", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()


def _submit(http, model_id: str, options: dict) -> str:
    response = http.post("/v1/jobs", json={"model_id": model_id, **options})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return response.json()["id"]


def _poll(http, service, job_id: str, until: set[str]) -> dict:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job_id} still {job['status']} after {POLL_TIMEOUT_S} s\n"
                f"{service.log_tail()}")


def test_upload_run_and_fetch_every_report(service, digits_onnx):
    with service.client() as http:
        model = _upload(http, digits_onnx)
        assert model["format"] == "onnx" and model["preflight"]["convertible"]
        job_id = _submit(http, model["id"], FLOW_OPTIONS)
        job = _poll(http, service, job_id, {"succeeded", "failed", "cancelled"})
        assert job["status"] == "succeeded", (job, service.log_tail())
        assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None

        report = http.get(f"/v1/jobs/{job_id}/report")
        assert report.headers["content-type"] == "application/json"
        report = report.json()
        rows = list(csv.DictReader(io.StringIO(http.get(f"/v1/jobs/{job_id}/report.csv").text)))
        svg = http.get(f"/v1/jobs/{job_id}/plot.svg")
        png = http.get(f"/v1/jobs/{job_id}/plot.png")
        listed = http.get("/v1/jobs", params={"status": "succeeded"}).json()

    assert len(rows) == len(FLOW_OPTIONS["methods"]) * FLOW_OPTIONS["timesteps"]
    assert {row["method"] for row in rows} == set(FLOW_OPTIONS["methods"])
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert job_id in [j["id"] for j in listed["data"]]

    # The service's report equals the library's for the same spec and seed.
    direct = pipeline.run(JobSpec(model_path=digits_onnx, **FLOW_OPTIONS))
    assert report["ann"]["top1"] == direct.ann.top1
    assert [m["method"] for m in report["methods"]] == FLOW_OPTIONS["methods"]
    assert [m["top1"] for m in report["methods"]] == [m.top1 for m in direct.methods]
    assert report["ann"]["top1"] > 0.5
    assert job["partial_top1"] == {m["method"]: m["top1"] for m in report["methods"]}


def test_cancel_a_running_job(service, digits_onnx):
    with service.client() as http:
        model = _upload(http, digits_onnx)
        job_id = _submit(http, model["id"], LONG_OPTIONS)
        running = _poll(http, service, job_id, {"running", "succeeded", "failed"})
        assert running["status"] == "running", running
        response = http.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 202 and response.json()["cancel_requested"]
        job = _poll(http, service, job_id, {"cancelled", "succeeded", "failed"})
        assert job["status"] == "cancelled", (job, service.log_tail())
        assert job["finished_at"] and job["progress"] < 1.0
        assert http.get(f"/v1/jobs/{job_id}/report").status_code == 409


def test_an_unconvertible_model_fails_with_a_problem_detail(service, linear_onnx):
    with service.client() as http:
        model = _upload(http, linear_onnx)
        assert model["preflight"]["convertible"] is False
        job_id = _submit(http, model["id"], FLOW_OPTIONS)
        job = _poll(http, service, job_id, {"succeeded", "failed", "cancelled"})
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "unsupported-model"
    assert job["error"]["type"] == "urn:snnconv:problem:unsupported-model"
    assert "activation" in job["error"]["detail"]


def test_readiness_and_datasets(service):
    with service.client() as http:
        ready = http.get("/readyz").json()
        datasets = http.get("/v1/datasets").json()
    assert {"database": "ok", "broker": "ok"}.items() <= ready["checks"].items()
    assert any(d["name"] == "digits" and d["available"] for d in datasets["data"])


def test_embedded_serve_stops_its_worker_on_sigterm(embedded_env, free_port, tmp_path):
    """`snnconv serve` must not leave an orphaned Celery worker behind when it is stopped."""
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(free_port),
             "--log-level", "warning"], cwd=ROOT, env=embedded_env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_ready(f"http://127.0.0.1:{free_port}")
        children = Path(f"/proc/{serve.pid}/task/{serve.pid}/children").read_text().split()
        assert children, "serve started no worker process"
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        assert not [child for child in children if Path(f"/proc/{child}").exists()], (
            "the worker outlived serve:\n" + (tmp_path / "serve.log").read_text())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()


def _wait_until_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"{url} not ready after 60 s")
