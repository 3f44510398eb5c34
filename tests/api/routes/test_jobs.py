"""POST/GET /v1/jobs and cancel: validation as problem+json, 202 + Location, state changes.

No worker runs here: jobs stay queued on the embedded broker (tests/integration runs them).
"""

from __future__ import annotations

import pytest

from core.spec import JobSpec


@pytest.fixture
def model_id(client, digits_onnx) -> str:
    response = client.post("/v1/models", files={"file": ("m.onnx", digits_onnx.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job(model_id: str, **options) -> dict:
    return {"model_id": model_id, "dataset": "digits", "methods": ["robust-norm"],
            "timesteps": 8, **options}


def test_create_returns_202_location_and_a_queued_job(client, model_id):
    response = client.post("/v1/jobs", json=_job(model_id, eval_samples=50, seed=3))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert response.json()["status"] == "queued"

    job = client.get(response.headers["location"]).json()
    assert job["status"] == "queued" and job["progress"] == 0 and job["attempts"] == 0
    assert job["model_id"] == model_id and job["error"] is None
    # The stored options are JobSpec's, with its defaults filled in.
    defaults = JobSpec(model_path="x").model_dump(mode="json")
    assert job["options"]["eval_samples"] == 50 and job["options"]["seed"] == 3
    assert job["options"]["batch_size"] == defaults["batch_size"]
    assert job["options"]["cq"] == defaults["cq"]


def test_list_is_paginated_and_filters_by_status(client, model_id):
    ids = [client.post("/v1/jobs", json=_job(model_id)).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["count"] == 3 and len(page["data"]) == 2
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert queued["count"] == 2 and {j["id"] for j in queued["data"]} == set(ids[1:])
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[0]]


def test_cancel_a_queued_job_then_again(client, model_id, assert_problem):
    job_id = client.post("/v1/jobs", json=_job(model_id)).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"]
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409, "job-finished")


@pytest.mark.parametrize("suffix", ["report", "report.csv", "plot.svg", "plot.png"])
def test_reports_of_an_unfinished_job_are_409(client, model_id, suffix, assert_problem):
    job_id = client.post("/v1/jobs", json=_job(model_id)).json()["id"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/{suffix}"), 409, "report-not-ready")


def test_unknown_ids_are_404(client, assert_problem):
    assert_problem(client.get("/v1/jobs/nope"), 404, "job-not-found")
    assert_problem(client.post("/v1/jobs/nope/cancel"), 404, "job-not-found")
    assert_problem(client.get("/v1/jobs/nope/report"), 404, "job-not-found")
    assert_problem(client.post("/v1/jobs", json=_job("nope")), 404, "model-not-found")


def test_unknown_dataset_is_422(client, model_id, assert_problem):
    body = assert_problem(client.post("/v1/jobs", json=_job(model_id, dataset="imagenet-21k")),
                          422, "unknown-dataset")
    assert "digits" in body["detail"]  # the message lists what is available
    assert client.get("/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [({"methods": ["magic"]}, "methods"),
     ({"methods": []}, "methods"),
     ({"timesteps": 0}, "timesteps"),
     ({"model_path": "/etc/passwd"}, "model_path"),  # server-filled: refused from clients
     ({"data_dir": "/"}, "data_dir"),
     ({"cq": {"levels": 0}}, "cq"),
     ({"methods": ["max-norm", "max-norm"]}, "methods")],
)
def test_invalid_options_list_the_fields(client, model_id, options, field, assert_problem):
    body = assert_problem(client.post("/v1/jobs", json=_job(model_id, **options)), 422,
                          "validation-error")
    assert field in body["detail"]
    assert any(field in [str(part) for part in error["loc"]] for error in body["errors"])
    assert client.get("/v1/jobs").json()["count"] == 0


def test_cross_field_rules_of_jobspec_apply(client, model_id, assert_problem):
    body = assert_problem(client.post("/v1/jobs", json=_job(model_id, mean=[0.5])), 422,
                          "validation-error")
    assert "mean and std" in str(body["errors"])
    assert client.get("/v1/jobs").json()["count"] == 0


def test_malformed_json_is_a_validation_problem(client, assert_problem):
    response = client.post("/v1/jobs", content=b"{not json",
                           headers={"content-type": "application/json"})
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["type"] == "json_invalid"
