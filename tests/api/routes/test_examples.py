"""The example models: listed with their availability, imported as the caller's own model
through the same pre-flight and quotas as an upload.  The built examples are the real ones
(the demo CNN trained on mnist-5k, and its CQ fine-tuned ONNX export)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from core.examples import EXAMPLES
from tests.conftest import new_api_key

NAMES = [example.name for example in EXAMPLES]


def _client(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.__enter__()
    client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
    return client


@pytest.fixture
def examples_client(tmp_path, built_examples):
    settings = Settings(data_dir=tmp_path / "data", redis_url=None, database_url=None,
                        examples_dir=built_examples, quota_models=2)
    client = _client(settings)
    yield client
    client.__exit__(None, None, None)


def test_examples_are_listed_unavailable_until_built(client):
    listed = client.get("/v1/examples")
    assert listed.status_code == 200
    assert [entry["name"] for entry in listed.json()["data"]] == NAMES
    assert not any(entry["available"] for entry in listed.json()["data"])


def test_importing_an_unbuilt_or_unknown_example_is_a_problem(client, assert_problem,
                                                              stored_files):
    assert_problem(client.post("/v1/examples/demo-cnn/import"), 409, "example-not-built")
    body = assert_problem(client.post("/v1/examples/nope/import"), 404, "example-not-found")
    assert "demo-cnn" in body["detail"]
    assert client.get("/v1/models").json()["count"] == 0
    assert stored_files() == []


@pytest.mark.slow
def test_imported_examples_are_models_with_their_preflight(examples_client, assert_problem):
    listed = examples_client.get("/v1/examples").json()["data"]
    assert all(entry["available"] for entry in listed)
    plain = examples_client.post("/v1/examples/demo-cnn/import")
    assert plain.status_code == 201, plain.text
    model = plain.json()
    assert (model["format"], model["arch"], model["input_shape"]) == (
        "safetensors", "cnn-small", [1, 28, 28])
    assert model["name"] == EXAMPLES[0].title
    assert model["preflight"]["convertible"] and model["preflight"]["cq_layers"] == 0

    cq = examples_client.post("/v1/examples/demo-cnn-cq/import")
    assert cq.status_code == 201, cq.text
    preflight = cq.json()["preflight"]
    assert cq.json()["format"] == "onnx" and preflight["convertible"]
    # the CQ fine-tune's clamp+floor activations are recognised as such
    assert preflight["cq_layers"] == preflight["spiking_layers"] > 0

    assert examples_client.get("/v1/models").json()["count"] == 2
    # an import is an upload for the quotas: the third model is refused
    assert_problem(examples_client.post("/v1/examples/demo-cnn/import"), 409, "quota-models")


@pytest.mark.slow
def test_an_imported_model_is_a_copy(examples_client, built_examples, tmp_path):
    model = examples_client.post("/v1/examples/demo-cnn/import").json()
    stored = tmp_path / "data" / "uploads" / model["id"]
    assert [path.suffix for path in stored.iterdir()] == [".safetensors"]
    # deleting the caller's model leaves the server's example in place
    assert examples_client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert (built_examples / EXAMPLES[0].filename).is_file()
