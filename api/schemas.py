"""Request and response models of the REST API (one per role: Create, Public, lists)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.db import JobStatus
from api.problems import Problem
from core.preflight import PreflightReport
from core.spec import JobSpec

T = TypeVar("T")

# JobSpec fields the server fills: where the files are, and the model's architecture (given
# once, when the model was uploaded).
SERVER_FILLED_FIELDS = frozenset({"model_path", "data_dir", "arch"})


class ListPublic(BaseModel, Generic[T]):
    """A page of a collection and the total number of items matching the query."""

    data: list[T]
    count: int


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    format: str
    arch: str | None
    input_shape: list[int]
    size_bytes: int
    sha256: str
    created_at: datetime
    preflight: PreflightReport


class _ModelReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                          description="id from POST /v1/models")


def _job_option_fields() -> dict:
    """JobSpec's own fields (types, defaults, limits, descriptions), less the server-filled."""
    return {
        name: (field.annotation, field)
        for name, field in JobSpec.model_fields.items()
        if name not in SERVER_FILLED_FIELDS
    }


JobCreate = create_model(
    "JobCreate",
    __base__=_ModelReference,
    __doc__="A job request: a model id plus the core.spec.JobSpec options.",
    **_job_option_fields(),
)


def job_options(job: BaseModel) -> dict:
    """The JobSpec options of a JobCreate, as JSON-safe data for the job row."""
    return job.model_dump(mode="json", exclude={"model_id"})


def build_spec(options: dict, model_path: Path, arch: str | None,
               data_dir: Path | None) -> JobSpec:
    """The JobSpec of a stored job; raises pydantic.ValidationError on inconsistent options."""
    return JobSpec(**options, model_path=model_path, arch=arch, data_dir=data_dir)


class JobAccepted(BaseModel):
    id: str
    status: JobStatus


class JobSummary(BaseModel):
    """A job in a list: its state, without its options and partial results."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str | None
    status: JobStatus
    stage: str | None = Field(
        description="queued | load | calibrate | finetune | convert | simulate | report")
    progress: float = Field(ge=0, le=1)
    message: str | None
    created_at: datetime
    finished_at: datetime | None


class JobPublic(JobSummary):
    options: dict = Field(description="the JobSpec options the job runs with")
    partial_top1: dict[str, list[float]] = Field(
        description="method -> accuracy per t computed so far (element t-1 after t steps)"
    )
    error: Problem | None = Field(description="problem detail when the job failed")
    attempts: int
    cancel_requested: bool
    started_at: datetime | None
    updated_at: datetime


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
