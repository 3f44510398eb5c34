"""JobCreate is derived from JobSpec, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from api.schemas import SERVER_FILLED_FIELDS, JobCreate, build_spec, job_options
from core.spec import JobSpec


def test_job_create_has_every_client_option_of_jobspec_and_a_model_id():
    expected = set(JobSpec.model_fields) - SERVER_FILLED_FIELDS | {"model_id"}
    assert set(JobCreate.model_fields) == expected
    for name in expected - {"model_id"}:
        ours, theirs = JobCreate.model_fields[name], JobSpec.model_fields[name]
        assert ours.annotation == theirs.annotation, name
        assert ours.get_default(call_default_factory=True) == theirs.get_default(
            call_default_factory=True), name


def test_build_spec_round_trips_the_options():
    job = JobCreate(model_id="m", dataset="digits", methods=["max-norm", "cq-if"], timesteps=7,
                    cq={"levels": 4})
    spec = build_spec(job_options(job), Path("/data/m.onnx"), "mlp", Path("/datasets"))
    assert spec.model_path == Path("/data/m.onnx") and spec.arch == "mlp"
    assert spec.methods == ["max-norm", "cq-if"] and spec.timesteps == 7
    assert spec.cq.levels == 4 and spec.data_dir == Path("/datasets")
