"""The job task's logic, run in-process on the real pipeline (Celery itself: integration)."""

from __future__ import annotations

import pytest

from api import job_state
from api.db import JobRecord, ModelRecord
from core import pipeline
from core.errors import JobCancelled
from core.progress import ProgressEvent
from worker.tasks import JobProgress, execute_job, job_spec


def _create(client, model_path, **options) -> str:
    model = client.post("/v1/models", files={"file": ("m.onnx", model_path.read_bytes())})
    assert model.status_code == 201, model.text
    job = {"model_id": model.json()["id"], "dataset": "digits", "methods": ["robust-norm"],
           "timesteps": 6, "eval_samples": 60, "calib_samples": 100, "batch_size": 30,
           **options}
    response = client.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_job_runs_to_the_same_report_as_the_pipeline(client, settings, sessions,
                                                       digits_onnx):
    job_id = _create(client, digits_onnx, methods=["max-norm", "robust-norm"])
    assert execute_job(job_id, settings, sessions) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["attempts"] == 1
    assert job["started_at"] <= job["finished_at"]
    served = client.get(f"/v1/jobs/{job_id}/report").json()
    with sessions() as session:
        spec = job_spec(session, session.get(JobRecord, job_id), settings)
    direct = pipeline.run(spec)
    assert served["ann"]["top1"] == direct.ann.top1
    assert [m["top1"] for m in served["methods"]] == [m.top1 for m in direct.methods]
    assert served["ann"]["top1"] > 0.5  # the fixture model learned something
    # Once finished, the job's accuracy per t is the report's complete curves.
    assert job["partial_top1"] == {m["method"]: m["top1"] for m in served["methods"]}


def test_an_unconvertible_model_fails_with_a_problem_detail(client, settings, sessions,
                                                            linear_onnx):
    job_id = _create(client, linear_onnx)
    assert execute_job(job_id, settings, sessions) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "unsupported-model" and job["error"]["status"] == 422
    assert job["error"]["instance"] == f"/v1/jobs/{job_id}"
    assert "activation" in job["error"]["detail"]
    assert not (settings.results_dir / job_id / "report.json").exists()


def test_a_deleted_model_fails_the_job(client, settings, sessions, digits_onnx):
    job_id = _create(client, digits_onnx)
    with sessions() as session:  # bypass the API's in-use guard, as a race would
        job = session.get(JobRecord, job_id)
        session.delete(session.get(ModelRecord, job.model_id))
        session.commit()
    assert execute_job(job_id, settings, sessions) == "failed"
    assert client.get(f"/v1/jobs/{job_id}").json()["error"]["code"] == "model-deleted"


def test_cancelled_before_it_ran_is_skipped(client, settings, sessions, digits_onnx):
    job_id = _create(client, digits_onnx)
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert execute_job(job_id, settings, sessions) == "skipped"
    assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 0


def test_attempt_cap(client, settings, sessions, digits_onnx):
    job_id = _create(client, digits_onnx)
    with sessions() as session:
        session.get(JobRecord, job_id).attempts = settings.max_attempts
        session.commit()
    assert execute_job(job_id, settings, sessions) == "failed"
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert error["code"] == "attempts-exhausted"


def test_progress_is_throttled_within_a_stage_and_cancel_raises(client, settings, sessions,
                                                                digits_onnx):
    job_id = _create(client, digits_onnx)
    with sessions() as session:
        job_state.claim(session, job_id, 3)
    progress = JobProgress(sessions, job_id, interval_s=3600)
    progress(ProgressEvent(stage="simulate", progress=0.5, method="max-norm",
                           partial_top1=[0.1]))
    progress(ProgressEvent(stage="simulate", progress=0.6, method="max-norm",
                           partial_top1=[0.1, 0.2]))  # throttled: same stage, too soon
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["stage"], job["progress"], job["partial_top1"]) == (
        "simulate", 0.5, {"max-norm": [0.1]})
    progress(ProgressEvent(stage="report", progress=0.97))  # a new stage is always written
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"] == 0.97 and job["partial_top1"] == {"max-norm": [0.1, 0.2]}

    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    with pytest.raises(JobCancelled):
        progress(ProgressEvent(stage="done", progress=1.0))
