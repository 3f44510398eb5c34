"""Jobs never wedge: real processes are killed mid-job and every job still finishes.

- Redis (DB 13) + PostgreSQL: the Celery worker's process group is SIGKILLed while it runs a
  job; a new worker starts; the API's reaper (in-process, TestClient) re-queues the job once
  its heartbeat is stale and the new worker runs it to the end.
- embedded (``snnconv serve`` alone): the whole ``serve`` process group is SIGKILLed mid-job
  and ``serve`` is started again on the same data directory; and the embedded worker's main
  process alone is SIGKILLed: ``/readyz`` says 503 until ``serve`` has restarted it.

Heartbeats are short here (interval 1 s, timeout 5 s, a reaper pass every 1 s), so each test
takes well under a minute; RECOVERY_BOUND_S is the most a job may take from the kill to its
end.  The recovery times measured are printed (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import new_api_key
from tests.integration.conftest import (
    POSTGRES_ADMIN_URL,
    ROOT,
    _clean_env,
    _free_port,
    _start,
    _stop,
    _unreachable,
    create_api_key,
)
from tests.services import reset_external_state

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/13"
SCHEMA = "snnconv_faults"
DATABASE_URL = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{SCHEMA}"
FAST = {"SNNCONV_HEARTBEAT_INTERVAL_S": "1", "SNNCONV_HEARTBEAT_TIMEOUT_S": "5",
        "SNNCONV_REAPER_INTERVAL_S": "1", "OMP_NUM_THREADS": "1"}
# Some seconds of simulation on 2 busy cores, so the kill lands mid-job.
JOB = {"dataset": "digits", "methods": ["max-norm", "robust-norm"], "timesteps": 96,
       "eval_samples": 360, "calib_samples": 100, "batch_size": 60, "device": "cpu"}
KILL_AT_PROGRESS = 0.2
RECOVERY_BOUND_S = 50  # kill → the job finished (heartbeat timeout 5 s + a restart + a rerun)
START_TIMEOUT_S = 60
FINISHED = {"succeeded", "failed", "cancelled"}


def _killpg(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait_running(get, job_id: str, logs: str = "") -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        job = get(job_id)
        if job["status"] == "running" and job["progress"] >= KILL_AT_PROGRESS:
            return job
        assert job["status"] in {"queued", "running"}, job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} never got to {KILL_AT_PROGRESS:.0%}: {job}\n{logs()}")


def _wait_finished(get, job_id: str, killed_at: float, logs) -> tuple[dict, dict[str, float]]:
    """The finished job and when (s after the kill) it was seen re-queued and finished."""
    seen: dict[str, float] = {}
    while time.monotonic() - killed_at < RECOVERY_BOUND_S:
        job = get(job_id)
        if job["status"] == "queued" or job["attempts"] >= 2:
            seen.setdefault("requeued", time.monotonic() - killed_at)
        if job["status"] in FINISHED:
            seen["finished"] = time.monotonic() - killed_at
            return job, seen
        time.sleep(0.1)
    pytest.fail(f"job {job_id} still {job['status']} {RECOVERY_BOUND_S} s after its worker "
                f"was killed: {job}\n{logs()}")


def _tail(*paths: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                     for p in paths if p.exists())


# --- Redis + PostgreSQL: a Celery worker killed mid-job ---------------------------------------


def _require_redis_and_postgres() -> None:
    problem = _unreachable()
    if problem is not None:
        message = ("the worker-kill fault test needs Redis on 127.0.0.1:6379 and PostgreSQL on "
                   f"127.0.0.1:5432 (database 'test', user postgres, no password); {problem}")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def _worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu",
             "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
            start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while " ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"worker {name} did not start\n{_tail(log)}")
        time.sleep(0.2)
    return process


def test_a_killed_celery_worker_costs_one_heartbeat_timeout_not_the_visibility_timeout(
        tmp_path, digits_onnx):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    _require_redis_and_postgres()
    reset_external_state(REDIS_URL, SCHEMA)
    env = _clean_env(tmp_path, REDIS_URL=REDIS_URL, DATABASE_URL=DATABASE_URL, **FAST)
    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL, database_url=DATABASE_URL,
                        heartbeat_interval_s=1, heartbeat_timeout_s=5, reaper_interval_s=1)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers: list[subprocess.Popen] = []
    with TestClient(create_app(settings)) as client:  # its lifespan runs the reaper
        client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
        def get(job_id):
            return client.get(f"/v1/jobs/{job_id}").json()

        try:
            workers.append(_worker("fault-a", env, logs[0]))
            model = client.post("/v1/models",
                                files={"file": ("m.onnx", digits_onnx.read_bytes())})
            assert model.status_code == 201, model.text
            created = client.post("/v1/jobs", json={"model_id": model.json()["id"], **JOB})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            _wait_running(get, job_id, lambda: _tail(*logs))
            _killpg(workers[0])  # the worker and its pool child: nothing acks, nothing writes
            killed_at = time.monotonic()
            workers.append(_worker("fault-b", env, logs[1]))
            job, seen = _wait_finished(get, job_id, killed_at, lambda: _tail(*logs))
        finally:
            for worker in workers:
                _stop(worker)
    print(f"\nredis: killed worker -> re-queued after {seen.get('requeued', -1):.1f} s, "
          f"{job['status']} after {seen['finished']:.1f} s")
    assert job["status"] == "succeeded", (job, _tail(*logs))
    assert job["attempts"] == 2 and job["progress"] == 1.0
    assert seen["requeued"] < RECOVERY_BOUND_S  # not Redis' 7,200 s visibility timeout


# --- embedded: `serve` restarted mid-job, and its worker killed -------------------------------


def _serve(env, data_dir: Path, name: str, key: str | None = None):
    port = _free_port()
    log = data_dir / f"{name}.log"
    process = _start(["serve", "--host", "127.0.0.1", "--port", str(port),
                      "--log-level", "warning"], env, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                key = key or create_api_key(env)
                return process, httpx.Client(base_url=url, timeout=30, headers={
                    "Authorization": f"Bearer {key}"}), log
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    _stop(process)
    pytest.fail(f"serve not ready\n{_tail(log)}")


def _submit_over_http(http, digits_onnx) -> str:
    model = http.post("/v1/models", files={"file": ("m.onnx", digits_onnx.read_bytes())})
    assert model.status_code == 201, model.text
    created = http.post("/v1/jobs", json={"model_id": model.json()["id"], **JOB})
    assert created.status_code == 202, created.text
    return created.json()["id"]


def test_serve_restarted_mid_job_finishes_the_job(tmp_path, digits_onnx):
    env = _clean_env(tmp_path, **FAST)
    first, http, log1 = _serve(env, tmp_path, "serve-1")
    key = http.headers["Authorization"].removeprefix("Bearer ")
    second = None
    try:
        job_id = _submit_over_http(http, digits_onnx)
        _wait_running(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id, lambda: _tail(log1))
        _killpg(first)  # serve, its worker and the worker's pool child, mid-job
        killed_at = time.monotonic()
        http.close()
        second, http, log2 = _serve(env, tmp_path, "serve-2", key)
        job, seen = _wait_finished(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id,
                                   killed_at, lambda: _tail(log1, log2))
    finally:
        http.close()
        for process in (first, second):
            if process is not None:
                _stop(process)
    print(f"\nembedded: serve killed -> re-queued after {seen.get('requeued', -1):.1f} s, "
          f"{job['status']} after {seen['finished']:.1f} s")
    assert job["status"] == "succeeded", (job, _tail(log1, log2))
    assert job["attempts"] == 2 and job["progress"] == 1.0


def _worker_pid(serve_pid: int) -> int:
    """The embedded worker: the Celery process whose parent is ``serve``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == serve_pid and b"celery" in cmdline:
            return int(entry.name)
    raise AssertionError(f"no worker process under serve ({serve_pid})")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_embedded_worker_is_restarted_and_readyz_says_so(tmp_path, digits_onnx):
    env = _clean_env(tmp_path, **FAST)
    serve, http, log = _serve(env, tmp_path, "serve")
    try:
        job_id = _submit_over_http(http, digits_onnx)
        _wait_running(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id, lambda: _tail(log))
        os.kill(_worker_pid(serve.pid), signal.SIGKILL)  # the worker's main process only
        killed_at = time.monotonic()
        down = None
        while time.monotonic() - killed_at < 10:
            ready = http.get("/readyz")
            if ready.status_code == 503:
                down = ready.json()
                break
            time.sleep(0.05)
        assert down is not None and "worker is down" in down["detail"], _tail(log)
        assert ready.headers["content-type"] == "application/problem+json"
        up_after = None
        while time.monotonic() - killed_at < 30:
            if http.get("/readyz").status_code == 200:
                up_after = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        assert up_after is not None, _tail(log)
        job, seen = _wait_finished(lambda j: http.get(f"/v1/jobs/{j}").json(), job_id,
                                   killed_at, lambda: _tail(log))
    finally:
        http.close()
        _stop(serve)
    print(f"\nembedded: worker killed -> ready again after {up_after:.1f} s, job "
          f"{job['status']} after {seen['finished']:.1f} s (attempts {job['attempts']})")
    assert job["status"] == "succeeded", (job, _tail(log))
