"""The app: routes under /v1, readable unique operation ids, OpenAPI that builds."""

from __future__ import annotations


def test_operation_ids_are_unique_and_tagged(client):
    schema = client.get("/openapi.json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert "models-upload" in ids and "jobs-create_job" in ids and "health-readyz" in ids
    assert all(op_id.split("-", 1)[0] in op["tags"] for op_id, op in zip(ids, operations,
                                                                         strict=True))


def test_every_resource_is_versioned(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths == {
        "/v1/models", "/v1/models/{model_id}", "/v1/datasets", "/v1/datasets/{name}",
        "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/report",
        "/v1/jobs/{job_id}/report.csv", "/v1/jobs/{job_id}/plot.svg",
        "/v1/jobs/{job_id}/plot.png", "/v1/jobs/{job_id}/early-exit.csv",
        "/v1/jobs/{job_id}/cq-model.onnx",
        "/v1/jobs/{job_id}/cq-model.safetensors", "/healthz", "/readyz",
        "/v1/examples", "/v1/examples/{name}/import",
        *(f"/v1/jobs/{{job_id}}/{method}-model.{kind}" for method in ("cq-if", "cq-ctt")
          for kind in ("onnx", "safetensors")),
    }


def test_unknown_route_is_a_problem(client, assert_problem):
    assert_problem(client.get("/v1/nothing"), 404, "not-found")


def test_serve_moves_the_start_up_objects_out_of_the_collectors_sight():
    import gc

    from api.cli import freeze_start_up_objects

    try:
        freeze_start_up_objects()
        assert gc.get_freeze_count() > 10_000  # at least the imported modules' objects
    finally:
        gc.unfreeze()  # the test process keeps collecting as before
