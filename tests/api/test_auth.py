"""API keys, isolation between keys, quotas, rate limits and the anonymous demo mode.

Each request goes through the real app (TestClient) with its real job store; another key's
model or job must look exactly like one that does not exist.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.auth import KeyCache
from api.cli import main as service_cli
from api.db import KeyKind
from api.keys import Owner
from api.main import create_app
from api.settings import Settings
from tests.onnx_builders import mlp_onnx


@pytest.fixture
def model_id(client, digits_onnx) -> str:
    response = client.post("/v1/models", files={"file": ("m.onnx", digits_onnx.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _job(model_id: str) -> dict:
    return {"model_id": model_id, "dataset": "digits", "methods": ["robust-norm"], "timesteps": 4}


@pytest.mark.parametrize("header, code", [
    (None, "api-key-required"),
    ("Basic dXNlcjpwYXNz", "invalid-authorization"),
    ("Bearer snk_not-a-key-anyone-made", "invalid-api-key"),
    ("Bearer ", "invalid-authorization"),
])
def test_requests_without_a_valid_key_are_401(client, assert_problem, header, code):
    headers = {"Authorization": header} if header is not None else {}
    client.headers.pop("Authorization")
    for method, url in (("GET", "/v1/models"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"),
                        ("DELETE", "/v1/models/abc")):
        response = client.request(method, url, headers=headers, json={})
        assert_problem(response, 401, code)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_another_keys_models_and_jobs_are_404(client, model_id, new_key, assert_problem,
                                              stored_files):
    job_id = client.post("/v1/jobs", json=_job(model_id)).json()["id"]
    stranger = {"Authorization": f"Bearer {new_key('stranger')}"}
    assert client.get("/v1/models", headers=stranger).json() == {"data": [], "count": 0}
    assert client.get("/v1/jobs", headers=stranger).json() == {"data": [], "count": 0}
    for method, url in (("GET", f"/v1/models/{model_id}"), ("DELETE", f"/v1/models/{model_id}"),
                        ("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                        ("GET", f"/v1/jobs/{job_id}/report")):
        kind = "model" if "models" in url else "job"
        assert_problem(client.request(method, url, headers=stranger), 404, f"{kind}-not-found")
    # nor can the stranger run a job on the owner's model
    assert_problem(client.post("/v1/jobs", json=_job(model_id), headers=stranger), 404,
                   "model-not-found")
    # and the owner still has everything
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert client.get(f"/v1/models/{model_id}").status_code == 200
    assert any(model_id in path for path in stored_files())


def test_job_lists_carry_state_not_options(client, model_id):
    client.post("/v1/jobs", json=_job(model_id))
    (listed,) = client.get("/v1/jobs").json()["data"]
    assert "options" not in listed and "partial_top1" not in listed
    assert listed["status"] == "queued"
    assert "options" in client.get(f"/v1/jobs/{listed['id']}").json()


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 501}, {"offset": -1}])
def test_pagination_is_bounded(client, assert_problem, query):
    assert_problem(client.get("/v1/jobs", params=query), 422, "validation-error")


def _client(settings: Settings, **overrides) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


def test_quotas_refuse_before_storing(settings, digits_onnx, assert_problem, stored_files):
    from tests.conftest import new_api_key

    with _client(settings, quota_models=1, quota_active_jobs=1) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
        upload = {"file": ("m.onnx", digits_onnx.read_bytes())}
        model_id = client.post("/v1/models", files=upload).json()["id"]
        before = stored_files()
        body = assert_problem(client.post("/v1/models", files=upload), 409, "quota-models")
        assert "quota is 1" in body["detail"]
        assert stored_files() == before  # nothing of the refused upload stayed
        assert client.post("/v1/jobs", json=_job(model_id)).status_code == 202
        refused = client.post("/v1/jobs", json=_job(model_id))
        assert_problem(refused, 429, "quota-jobs")
        assert refused.headers["retry-after"] == "30"
        assert client.get("/v1/jobs").json()["count"] == 1  # the refused job was not stored


def test_storage_quota_counts_bytes(settings, assert_problem, stored_files):
    from tests.conftest import new_api_key

    model = mlp_onnx(200)  # 0.64 MB: one fits in a 1 MB quota, two do not
    with _client(settings, quota_storage_mb=1, max_upload_mb=2) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
        upload = {"file": ("m.onnx", model)}
        assert client.post("/v1/models", files=upload).status_code == 201
        before = stored_files()
        body = assert_problem(client.post("/v1/models", files=upload), 409, "quota-storage")
        assert f"{2 * len(model):,} bytes" in body["detail"]
        assert stored_files() == before


def test_write_rate_limit_answers_429_with_retry_after(settings, assert_problem):
    from tests.conftest import new_api_key

    with _client(settings, rate_writes_per_minute=2) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
        for _ in range(2):
            assert client.delete("/v1/models/none").status_code == 404
        response = client.delete("/v1/models/none")
        assert_problem(response, 429, "rate-limited")
        assert 1 <= int(response.headers["retry-after"]) <= 30
        assert client.get("/v1/models").status_code == 200  # reads have their own budget


def test_demo_mode_gives_each_browser_its_own_scope(settings, digits_onnx, assert_problem):
    demo = settings.model_copy(update={"auth": "demo"})
    app = create_app(demo)
    with TestClient(app) as first, TestClient(app) as second:
        upload = {"file": ("m.onnx", digits_onnx.read_bytes())}
        created = first.post("/v1/models", files=upload)
        assert created.status_code == 201, created.text
        assert "snnconv_demo" in first.cookies
        assert first.get("/v1/models").json()["count"] == 1
        assert second.get("/v1/models").json()["count"] == 0
        assert_problem(second.get(f"/v1/models/{created.json()['id']}"), 404, "model-not-found")
        # the anonymous scope has the tight demo quotas
        for _ in range(demo.demo_quota_models - 1):
            assert first.post("/v1/models", files=upload).status_code == 201
        assert_problem(first.post("/v1/models", files=upload), 409, "quota-models")


@pytest.mark.parametrize("cache_s", [0, 0.3])
def test_keys_cli_creates_lists_and_revokes(settings, capsys, assert_problem, cache_s):
    """A revoked key is refused at once without the key cache, and within key_cache_s
    with it (the revocation comes from another process, the CLI)."""
    data_dir = ["--data-dir", str(settings.data_dir)]
    service_cli(["keys", "create", "--name", "alice", *data_dir])
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert secret.startswith("snk_") and len(secret) > 40
    service_cli(["keys", "list", *data_dir])
    listing = capsys.readouterr().out
    assert "alice" in listing and secret[:12] in listing and secret not in listing
    with TestClient(create_app(settings.model_copy(update={"key_cache_s": cache_s}))) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        assert client.get("/v1/models").status_code == 200
        service_cli(["keys", "revoke", secret[:12], *data_dir])
        time.sleep(cache_s * 1.5)
        assert_problem(client.get("/v1/models"), 401, "invalid-api-key")


def test_the_key_cache_keeps_only_known_keys_for_its_ttl_and_bounded():
    cache = KeyCache(ttl_s=0.2, max_entries=2)
    owners = [Owner(id=f"k{index}", kind=KeyKind.key) for index in range(3)]
    assert cache.get("a") is None
    cache.put("a", owners[0])
    cache.put("b", owners[1])
    assert cache.get("a") == owners[0]  # now the most recently used
    cache.put("c", owners[2])  # over max_entries: "b", the least recently used, leaves
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (owners[0], None, owners[2])
    time.sleep(0.25)
    assert cache.get("a") is None and cache.get("c") is None
    off = KeyCache(ttl_s=0)
    off.put("a", owners[0])
    assert off.get("a") is None


def test_made_up_secrets_are_not_cached(client, assert_problem):
    for index in range(3):
        client.headers["Authorization"] = f"Bearer snk_made_up_{index}"
        assert_problem(client.get("/v1/models"), 401, "invalid-api-key")
    assert client.app.state.key_cache._owners == {}  # only keys that exist are remembered


def test_only_the_hash_of_a_secret_is_stored(client):
    from sqlalchemy import select

    from api.db import ApiKeyRecord

    secret = client.headers["Authorization"].removeprefix("Bearer ")
    with client.app.state.sessions() as session:
        stored = [(k.secret_sha256, k.prefix) for k in session.scalars(select(ApiKeyRecord))]
    assert all(secret not in digest and len(digest) == 64 for digest, _ in stored)
    assert secret[:12] in {prefix for _, prefix in stored}
