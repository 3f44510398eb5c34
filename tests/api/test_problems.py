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
