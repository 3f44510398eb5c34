"""Hostile requests: each is a clear 4xx problem+json, stores nothing, and is never a 500.

Wrong types and bounds in a job, bodies over the size caps (declared or chunked), client
file names that try to choose the stored suffix, and safetensors headers built to crash or
exhaust the reader.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from api import files
from api.limits import RequestLimitsMiddleware, upload_body_limit_bytes
from core.spec import METHODS
from tests.core.test_spec_strict import HOSTILE_HEADERS, tiny_onnx_bytes

MIB = 1024 * 1024
BOUNDARY = "hostileboundary"
TINY_ONNX = tiny_onnx_bytes()


@pytest.fixture
def model_id() -> str:
    """Any id: options are validated before the model is looked up, and nothing is stored."""
    return "0" * 32


def _job(model_id: str, **options) -> dict:
    return {"model_id": model_id, "dataset": "digits", "methods": ["robust-norm"],
            "timesteps": 8, **options}


def _multipart(filename: str, payload: bytes, **fields: str) -> bytes:
    """A multipart body written by hand: the file name goes out exactly as given (httpx
    would percent-escape a NUL in it)."""
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
             f"{value}\r\n".encode() for key, value in fields.items()]
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + payload + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


# --- job options: strict, finite, bounded ---------------------------------------------------

# (options, the error's loc, words of its msg); one client for all: app start-up is the cost
BAD_OPTIONS = [({"timesteps": True}, ["body", "timesteps"], "valid integer"),
     ({"timesteps": "8"}, ["body", "timesteps"], "valid integer"),
     ({"batch_size": 10.0}, ["body", "batch_size"], "valid integer"),
     ({"percentile": float("nan")}, ["body", "percentile"], "finite"),
     ({"percentile": float("inf")}, ["body", "percentile"], "finite"),
     ({"seed": 2**63}, ["body", "seed"], "less than or equal to 4294967295"),
     ({"seed": -1}, ["body", "seed"], "greater than or equal to 0"),
     ({"dataset": "dig\u0000its"}, ["body", "dataset"], "control characters"),
     ({"dataset": "d" * 5000}, ["body", "dataset"], "at most 200 characters"),
     ({"mean": [0.5] * 5000, "std": [0.5] * 5000}, ["body", "mean"], "at most 4096"),
     ({"mean": [float("inf")], "std": [1.0]}, ["body", "mean", 0], "finite"),
     ({"methods": ["robust-norm"] * 100}, ["body", "methods"], f"at most {len(METHODS)}"),
     ({"cq": {"augment": 1}}, ["body", "cq", "augment"], "valid boolean"),
     ({"cq": {"learning_rate": float("-inf")}}, ["body", "cq", "learning_rate"], "finite")]


def test_wrong_types_and_bounds_in_a_job_are_422_naming_the_field(client, model_id,
                                                                  assert_problem):
    for options, loc, why in BAD_OPTIONS:
        raw = json.dumps(_job(model_id, **options), allow_nan=True)  # NaN, Infinity literals
        response = client.post("/v1/jobs", content=raw,
                               headers={"content-type": "application/json"})
        body = assert_problem(response, 422, "validation-error")
        matching = [error for error in body["errors"] if error["loc"] == loc]
        assert matching and why in matching[0]["msg"], (options, body["errors"])
    assert client.get("/v1/jobs").json()["count"] == 0


def test_nan_literal_in_raw_json_is_422(client, model_id, assert_problem):
    raw = json.dumps(_job(model_id))[:-1] + ', "percentile": NaN}'
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(response, 422, "validation-error")
    assert "percentile" in body["detail"]
    assert client.get("/v1/jobs").json()["count"] == 0


# --- body size caps -------------------------------------------------------------------------

def _three_mib() -> bytes:
    return _multipart("big.onnx", b"\x08\x07" + b"x" * (3 * MIB))


def test_upload_over_the_cap_with_content_length_is_413_unread(client, assert_problem,
                                                               stored_files):
    body = _three_mib()
    response = client.post("/v1/models", content=body, headers=MULTIPART)
    problem = assert_problem(response, 413, "too-large")
    assert "1 MiB" in problem["detail"] and problem["instance"] == "/v1/models"
    assert stored_files() == []
    assert client.get("/v1/models").json()["count"] == 0


def test_chunked_upload_over_the_cap_is_413(client, assert_problem, stored_files):
    body = _three_mib()

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    response = client.post("/v1/models", content=chunks(), headers=MULTIPART)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    problem = assert_problem(response, 413, "too-large")
    assert "1 MiB" in problem["detail"]
    assert stored_files() == []
    assert client.get("/v1/models").json()["count"] == 0


def test_streamed_body_is_stopped_at_the_chunk_that_crosses_the_cap(settings):
    """Below the app: the middleware pulls no chunk after the one over the cap."""
    chunk = 256 * 1024
    total_chunks = 16  # 4 MiB, against a cap of 1 MiB + the multipart overhead
    pulled = []
    sent = []

    async def receive():
        pulled.append(len(pulled))
        return {"type": "http.request", "body": b"x" * chunk,
                "more_body": len(pulled) < total_chunks}

    async def send(message):
        sent.append(message)

    async def reads_everything(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the whole body was read")

    scope = {"type": "http", "method": "POST", "path": "/v1/models", "headers": [],
             "query_string": b""}
    asyncio.run(RequestLimitsMiddleware(reads_everything, settings)(scope, receive, send))
    assert len(pulled) == upload_body_limit_bytes(settings) // chunk + 1 < total_chunks
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "too-large"


def test_json_body_over_the_cap_is_413_declared_or_chunked(client, model_id, assert_problem):
    big = json.dumps(_job(model_id, dataset="x" * (80 * 1024))).encode()
    headers = {"content-type": "application/json"}
    for content in (big, iter([big[:1000], big[1000:]])):
        problem = assert_problem(client.post("/v1/jobs", content=content, headers=headers),
                                 413, "too-large")
        assert "64 KiB" in problem["detail"]
    assert client.get("/v1/jobs").json()["count"] == 0


def test_nul_in_the_url_is_400_not_a_database_error(client, assert_problem):
    assert_problem(client.get("/v1/models/%00"), 400, "invalid-url")
    assert_problem(client.get("/v1/jobs", params={"status": "queued\x00"}), 400, "invalid-url")


# --- file names -----------------------------------------------------------------------------

def test_stored_suffix_is_the_formats_and_the_name_is_cleaned(client, stored_files):
    """Two uploads only: each pre-flight starts a sandboxed child (seconds)."""
    body = _multipart("x.onnx\x00.sh", TINY_ONNX, name="tiny\x00 mlp\n\tv2")
    response = client.post("/v1/models", content=body, headers=MULTIPART)
    assert response.status_code == 201, response.text
    first = response.json()
    assert first["name"] == "tiny mlp v2"
    # nothing usable in the name or the file name: the model is listed under its id
    body = _multipart("../\x01\x1b", TINY_ONNX, name="\x00\x01\x1b")
    response = client.post("/v1/models", content=body, headers=MULTIPART)
    assert response.status_code == 201, response.text
    second = response.json()
    assert second["name"] == second["id"]
    assert stored_files() == sorted(f"uploads/{model['id']}/model.onnx"
                                    for model in (first, second))


@pytest.mark.parametrize("filename", ["evil.sh", "x.onnx\x00.sh", "../../m.onnx.sh", "m.exe"])
def test_a_client_suffix_never_names_the_stored_file(tmp_path, filename):
    suffix = files.safe_suffix(filename)
    assert suffix == ""
    staged = asyncio.run(files.stage_upload(_aiter([TINY_ONNX]), tmp_path, suffix, MIB))
    assert files.accept_upload(staged, tmp_path / "m1").name == "model.onnx"
    staged = asyncio.run(files.stage_upload(_aiter([b"#!/bin/sh\n"]), tmp_path, ".sh", MIB))
    assert files.accept_upload(staged, tmp_path / "m2").name == "model"


async def _aiter(chunks):
    for chunk in chunks:
        yield chunk


# --- a safetensors header built to crash the reader (the other cases: tests/core) ----------

def test_hostile_safetensors_header_is_422_with_a_reason(client, assert_problem, stored_files):
    payload, reason = HOSTILE_HEADERS["deeply nested"]
    response = client.post("/v1/models", files={"file": ("w.safetensors", payload)},
                           data={"arch": "mlp-digits"})
    body = assert_problem(response, 422, "malformed")
    assert body["title"] == "Model file rejected" and reason in body["detail"]
    assert stored_files() == []
    assert client.get("/v1/models").json()["count"] == 0


def test_a_part_name_too_long_for_the_file_system_is_422_not_500(client, assert_problem,
                                                                 stored_files):
    parts = [("file", ("m" * 300 + ".onnx", TINY_ONNX)), ("file", ("m.onnx.data", b"\0" * 8))]
    body = assert_problem(client.post("/v1/models", files=parts), 422, "upload-name")
    assert "longer than 255 bytes" in body["detail"]
    assert stored_files() == []
