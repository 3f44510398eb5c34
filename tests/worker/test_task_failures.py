"""A failed job says which pipeline stage it failed in, in one line and without internals."""

from __future__ import annotations

import logging

import pytest

from api import job_state
from api.db import JobRecord, ModelRecord
from core import pipeline
from core.errors import UnsupportedModel
from core.progress import ProgressEvent
from worker.tasks import execute_job

SECRET_PATH = "/srv/snnconv/secret/worker_internals.py"


@pytest.fixture
def job_id(client, digits_onnx) -> str:
    model = client.post("/v1/models", files={"file": ("m.onnx", digits_onnx.read_bytes())})
    assert model.status_code == 201, model.text
    job = client.post("/v1/jobs", json={"model_id": model.json()["id"], "dataset": "digits",
                                        "methods": ["cq-asg"], "timesteps": 4})
    assert job.status_code == 202, job.text
    return job.json()["id"]


def _failing_run(stages: list[str], error: BaseException):
    """A stand-in for pipeline.run that reports ``stages`` and then raises ``error``."""
    def run(spec, progress, artifacts_dir=None):
        for index, stage in enumerate(stages):
            progress(ProgressEvent(stage=stage, progress=index / 10, method="cq-asg"))
        raise error
    return run


def _failed_job(client, settings, sessions, job_id) -> dict:
    assert execute_job(job_id, settings, sessions) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert "Traceback" not in job["error"]["detail"] and "\n" not in job["error"]["detail"]
    assert job["message"] == job["error"]["detail"]
    return job


def test_a_core_error_names_the_stage_it_happened_in(client, settings, sessions, job_id,
                                                     monkeypatch):
    error = UnsupportedModel("the fine-tuned network\n  lost its activations")
    monkeypatch.setattr(pipeline, "run", _failing_run(["load", "convert", "finetune"], error))
    job = _failed_job(client, settings, sessions, job_id)
    assert job["stage"] == "finetune"
    problem = {key: value for key, value in job["error"].items() if value is not None}
    assert problem == {
        "type": "urn:snnconv:problem:unsupported-model", "title": "Model cannot be converted",
        "status": 422, "detail": "the fine-tuned network lost its activations",
        "instance": f"/v1/jobs/{job_id}", "code": "unsupported-model", "stage": "finetune"}


def test_an_unexpected_error_keeps_its_internals_in_the_log(client, settings, sessions, job_id,
                                                            monkeypatch, caplog):
    error = RuntimeError(f"boom in {SECRET_PATH}")
    monkeypatch.setattr(pipeline, "run", _failing_run(["load", "convert", "simulate"], error))
    with caplog.at_level(logging.ERROR, logger="worker.tasks"):
        job = _failed_job(client, settings, sessions, job_id)
    problem = job["error"]
    assert (problem["status"], problem["code"], problem["stage"]) == (
        500, "internal-error", "simulate")
    assert "simulate" in problem["detail"] and "RuntimeError" in problem["detail"]
    assert SECRET_PATH not in str(job) and "boom" not in str(job)
    logged = [record for record in caplog.records if record.exc_info]
    assert logged and logged[-1].exc_info[1] is error  # the traceback is logged server-side


def test_a_failure_before_any_progress_is_in_the_load_stage(client, settings, sessions, job_id):
    with sessions() as session:  # bypass the API's in-use guard, as a race would
        session.delete(session.get(ModelRecord, session.get(JobRecord, job_id).model_id))
        session.commit()
    problem = _failed_job(client, settings, sessions, job_id)["error"]
    assert (problem["code"], problem["stage"]) == ("model-deleted", "load")


def test_a_killed_job_names_the_stage_its_row_reached(client, settings, sessions, job_id,
                                                      monkeypatch):
    from celery.exceptions import TimeLimitExceeded

    from api.settings import get_settings
    from worker.tasks import run_job

    with sessions() as session:
        job_state.claim(session, job_id, 3)
        job_state.record_progress(session, job_id, stage="calibrate", progress=0.3,
                                  message="CTT", partial_top1={})
    monkeypatch.setenv("SNNCONV_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        run_job.on_failure(TimeLimitExceeded(5), "task-id", [job_id], {}, None)
    finally:
        get_settings.cache_clear()
    job = client.get(f"/v1/jobs/{job_id}").json()
    problem = job["error"]
    assert job["status"] == "failed"
    assert (problem["code"], problem["stage"]) == ("time-limit", "calibrate")
    assert "during calibrate" in problem["detail"]
