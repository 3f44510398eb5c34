"""Core errors map to the documented HTTP statuses."""

from __future__ import annotations

import pytest

from api.problems import problem_from_error, status_for
from core.errors import (
    DatasetUnavailable,
    InvalidSpec,
    JobCancelled,
    ModelRejected,
    SnnconvError,
    TooLarge,
    UnsupportedModel,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ModelRejected("pickle refused"), 422),
        (TooLarge("too big"), 413),
        (UnsupportedModel("no activations"), 422),
        (DatasetUnavailable("no files"), 422),
        (InvalidSpec("bad mean"), 422),
        (SnnconvError("boom"), 500),
        (JobCancelled("stop"), 500),
    ],
)
def test_status_for(error, status):
    assert status_for(error) == status


def test_problem_carries_code_title_and_message():
    problem = problem_from_error(UnsupportedModel("Sigmoid cannot spike"), "/v1/jobs/x")
    assert problem.model_dump(exclude_none=True) == {
        "type": "urn:snnconv:problem:unsupported-model",
        "title": "Model cannot be converted",
        "status": 422,
        "detail": "Sigmoid cannot spike",
        "instance": "/v1/jobs/x",
        "code": "unsupported-model",
    }


def test_a_database_that_cannot_be_reached_is_a_503_to_retry(tmp_path, assert_problem):
    """Nothing listens on port 1: the key lookup's connection fails, and the client gets a
    problem it can act on (retry after Retry-After), not a 500."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url="postgresql://postgres@127.0.0.1:1/x")
    client = TestClient(create_app(settings))  # no lifespan: it would migrate the database
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer snk_" + "a" * 43})
    assert_problem(response, 503, "database-unavailable")
    assert response.headers["Retry-After"] == "5"
