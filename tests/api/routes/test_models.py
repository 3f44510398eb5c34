"""POST/GET/DELETE /v1/models: pre-flight on upload, refusals that leave nothing behind."""

from __future__ import annotations

import pytest


def _upload(client, path_or_bytes, filename="model.onnx", **form):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return client.post("/v1/models", files={"file": (filename, data)}, data=form)


def test_onnx_upload_reports_format_shape_and_preflight(client, digits_onnx, stored_files):
    response = _upload(client, digits_onnx, name="tiny mlp")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == "onnx" and model["name"] == "tiny mlp"
    assert model["input_shape"] == [1, 8, 8]
    assert model["preflight"]["convertible"] is True
    assert model["preflight"]["spiking_layers"] == 1
    assert model["size_bytes"] == digits_onnx.stat().st_size
    assert stored_files() == [f"uploads/{model['id']}/model.onnx"]

    assert client.get(f"/v1/models/{model['id']}").json() == model
    listing = client.get("/v1/models").json()
    assert listing["count"] == 1 and listing["data"] == [model]


def test_unconvertible_model_is_accepted_with_a_negative_preflight(client, linear_onnx):
    response = _upload(client, linear_onnx)
    assert response.status_code == 201, response.text
    preflight = response.json()["preflight"]
    assert preflight["convertible"] is False
    assert any("activation" in problem for problem in preflight["problems"])


@pytest.mark.parametrize(
    ("payload", "filename"),
    [(b"\x00not a model at all" * 10, "model.onnx"),
     (b"\x80\x04\x95pickle-ish", "model.pt"),
     (b"PK\x03\x04torchscript zip", "model.pt")],
)
def test_malformed_upload_is_a_problem_and_leaves_nothing(client, payload, filename,
                                                          stored_files):
    response = _upload(client, payload, filename)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Model file rejected" and body["instance"] == "/v1/models"
    assert body["type"] == f"urn:snnconv:problem:{body['code']}" and body["detail"]
    assert stored_files() == []
    assert client.get("/v1/models").json()["count"] == 0


def test_oversized_upload_is_413_and_leaves_nothing(client, assert_problem, stored_files):
    body = assert_problem(_upload(client, b"x" * (2 * 1024 * 1024)), 413, "too-large")
    assert "1 MiB" in body["detail"]
    assert stored_files() == []


def test_empty_upload_and_missing_file_field(client, assert_problem, stored_files):
    assert_problem(_upload(client, b""), 422, "empty-file")
    body = assert_problem(client.post("/v1/models", data={"name": "x"}), 422,
                          "validation-error")
    assert ["body", "file"] in [error["loc"] for error in body["errors"]]
    assert stored_files() == []


def test_delete_removes_the_record_and_the_file(client, digits_onnx, assert_problem,
                                                stored_files):
    model_id = _upload(client, digits_onnx).json()["id"]
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert stored_files() == []
    assert_problem(client.get(f"/v1/models/{model_id}"), 404, "model-not-found")
    assert_problem(client.delete(f"/v1/models/{model_id}"), 404, "model-not-found")


def test_safetensors_weights_with_a_zoo_arch(client, tmp_path):
    from safetensors.torch import save_file

    from core import zoo

    path = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.build("mlp-digits").state_dict().items()},
              str(path))
    response = _upload(client, path, filename=path.name, arch="mlp-digits")
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["format"], model["arch"], model["input_shape"]) == (
        "safetensors", "mlp-digits", [1, 8, 8])
    assert client.get(f"/v1/models/{model['id']}").json()["arch"] == "mlp-digits"


def test_safetensors_without_arch_is_refused(client, tmp_path, stored_files):
    from safetensors.torch import save_file

    from core import zoo

    path = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in zoo.build("mlp-digits").state_dict().items()},
              str(path))
    response = _upload(client, path, filename=path.name)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "arch" in response.json()["detail"]
    assert stored_files() == []
