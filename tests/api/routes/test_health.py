"""/healthz and /readyz, including a broker that cannot be reached."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app


def test_healthz_and_readyz_on_the_embedded_stack(client):
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_broker_is_down(settings, free_port, assert_problem):
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port}/0"})
    with TestClient(create_app(unreachable)) as client:
        assert client.get("/healthz").status_code == 200
        body = assert_problem(client.get("/readyz"), 503, "not-ready")
        assert "broker" in body["detail"] and "database" not in body["detail"].split(";")[0]
