"""GET /v1/datasets: the registry with availability."""

from __future__ import annotations

from core.datasets import catalog


def test_lists_the_catalog_with_the_bundled_datasets_available(client, settings):
    body = client.get("/v1/datasets").json()
    expected = [entry.model_dump(mode="json") for entry in catalog(settings.datasets_dir)]
    assert body == {"data": expected, "count": len(expected)}
    available = {entry["name"] for entry in body["data"] if entry["available"]}
    assert {"digits", "mnist-5k"} <= available


def test_one_dataset_and_an_unknown_one(client, assert_problem):
    assert client.get("/v1/datasets/digits").json()["name"] == "digits"
    assert_problem(client.get("/v1/datasets/imagenet-21k"), 404, "dataset-not-found")
