"""Sharded evaluation on Celery: two real workers on the real Redis (and PostgreSQL).

A job with 200 evaluation samples and ``SNNCONV_EVAL_SHARD_SIZE=50`` is converted once (one
CQ fine-tune epoch), evaluated in 4 shards spread over both workers, and merged into the
report the unsharded pipeline gives.  Shard 2 fails once and is retried alone; a job whose
shard fails on every try fails with a problem naming the stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import (
    POSTGRES_ADMIN_URL,
    ROOT,
    _clean_env,
    _require_external_services,
    _stop,
)
from tests.services import reset_external_state

REDIS_URL = "redis://127.0.0.1:6379/10"
SCHEMA = "snnconv_shards"
DATABASE_URL = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{SCHEMA}"
SHARD_SIZE = 50
WORKERS = ("shard-a", "shard-b")
FAULTS = {4: [1, 1], 2: [0, 99]}  # 4 shards: shard 1 fails once; 2 shards: shard 0 always
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The API in-process (TestClient) and two Celery workers, each its own process."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings
    from tests.conftest import new_api_key

    _require_external_services()
    reset_external_state(REDIS_URL, SCHEMA)
    data_dir = tmp_path_factory.mktemp("sharded")
    settings = Settings(data_dir=data_dir, redis_url=REDIS_URL, database_url=DATABASE_URL,
                        eval_shard_size=SHARD_SIZE)
    faults_log = data_dir / "shard-tries.log"
    env = _clean_env(data_dir, REDIS_URL=REDIS_URL, DATABASE_URL=DATABASE_URL,
                     SNNCONV_EVAL_SHARD_SIZE=str(SHARD_SIZE), OMP_NUM_THREADS="1",
                     SHARD_FAULTS=json.dumps(FAULTS), SHARD_FAULTS_LOG=str(faults_log))
    with TestClient(create_app(settings)) as client:  # start-up migrates the schema
        client.headers["Authorization"] = f"Bearer {new_api_key(client.app)}"
        logs = [data_dir / f"{name}.log" for name in WORKERS]
        workers = []
        for name, log in zip(WORKERS, logs, strict=True):
            with log.open("wb") as stream:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
                     "-Q", settings.queue, "--concurrency", "1", "-n", f"{name}@%h",
                     "-I", "tests.worker.shard_faults", "--loglevel", "INFO"],
                    cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
                    start_new_session=True))
        try:
            _wait_ready(workers, logs)
            yield client, settings, faults_log, logs
        finally:
            for worker in workers:
                _stop(worker)


def _wait_ready(workers, logs) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        texts = [log.read_text(errors="replace") for log in logs]
        if any(worker.poll() is not None for worker in workers):
            pytest.fail("a worker exited\n" + "\n".join(t[-3000:] for t in texts))
        if all(" ready." in text for text in texts):
            return
        time.sleep(0.3)
    pytest.fail("workers not ready\n" + "\n".join(log.read_text()[-3000:] for log in logs))


def _submit(client, model_path, **options) -> str:
    model = client.post("/v1/models", files={"file": ("m.onnx", model_path.read_bytes())})
    assert model.status_code == 201, model.text
    job = {"model_id": model.json()["id"], "dataset": "digits",
           "methods": ["robust-norm", "cq-asg"], "timesteps": 4, "eval_samples": 200,
           "calib_samples": 100, "batch_size": 25, "device": "cpu",
           "cq": {"finetune_epochs": 1}, **options}
    response = client.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _wait(client, job_id, logs) -> tuple[dict, list[tuple[str, float]]]:
    """The finished job and the (stage, progress) pairs seen while it ran."""
    seen = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append((job["stage"], job["progress"]))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job, seen
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not finish\n" + "\n".join(
        log.read_text(errors="replace")[-3000:] for log in logs))


def _shard_results(job_id: str) -> list[dict]:
    """What the shard tasks returned, from the Redis result backend."""
    import redis

    backend = redis.Redis.from_url(REDIS_URL)
    results = []
    for key in backend.scan_iter("celery-task-meta-*"):
        meta = json.loads(backend.get(key))
        result = meta.get("result")
        if isinstance(result, dict) and result.get("job") == job_id:
            results.append(result)
    return sorted(results, key=lambda result: result["index"])


def _tries(faults_log, job_id: str) -> dict[int, int]:
    tries: dict[int, int] = {}
    for line in faults_log.read_text().splitlines():
        job, index = line.split()
        if job == job_id:
            tries[int(index)] = tries.get(int(index), 0) + 1
    return tries


def test_shards_on_two_workers_merge_into_the_unsharded_report(stack, digits_onnx):
    from api.db import JobRecord, session_factory
    from core import pipeline
    from core.shards import shard_progress
    from worker.tasks import job_spec

    client, settings, faults_log, logs = stack
    job_id = _submit(client, digits_onnx)
    job, seen = _wait(client, job_id, logs)
    assert job["status"] == "succeeded", (job, "\n".join(log.read_text()[-4000:] for log in logs))
    served = client.get(f"/v1/jobs/{job_id}/report").json()

    results = _shard_results(job_id)
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [(r["start"], r["stop"]) for r in results] == [(0, 50), (50, 100), (100, 150),
                                                          (150, 200)]
    assert {r["worker"].split("@")[0] for r in results} == set(WORKERS)  # both took shards
    assert sorted(r["rank"] for r in results) == [1, 2, 3, 4]  # progress counted each shard
    assert _tries(faults_log, job_id) == {0: 1, 1: 2, 2: 1, 3: 1}  # shard 1 retried alone

    progress = [p for stage, p in seen if stage == "simulate"]
    assert progress == sorted(progress)  # shards finishing in any order never move it back
    assert set(progress) <= {shard_progress(k, 4) for k in range(5)}
    assert job["progress"] == 1.0 and job["partial_top1"] == {
        m["method"]: m["top1"] for m in served["methods"]}

    sessions = session_factory(client.app.state.engine)
    with sessions() as session:
        spec = job_spec(session, session.get(JobRecord, job_id), settings)
    direct = pipeline.run_into(spec, settings.data_dir / "direct")
    assert served["dataset"]["eval_samples"] == 200
    assert served["ann"] == direct.ann.model_dump()
    assert served["artifacts"] == direct.artifacts
    for ours, theirs in zip(served["methods"], direct.methods, strict=True):
        assert ours["method"] == theirs.method
        assert ours["top1"] == theirs.top1  # exact: merged from counts
        assert ours["top5"] == theirs.top5 and ours["agreement"] == theirs.agreement
        assert ours["reference_top1"] == theirs.reference_top1
        assert ours["sops"] == pytest.approx(theirs.sops, rel=1e-9)  # a sample-weighted mean
    job_dir = settings.results_dir / job_id
    assert (job_dir / "report.json").exists() and (job_dir / "cq-model.onnx").exists()
    assert not (job_dir / pipeline.SHARED_DIRNAME).exists()  # the shared networks are gone


def test_a_shard_that_keeps_failing_fails_the_job_naming_the_stage(stack, digits_onnx):
    client, _settings, faults_log, logs = stack
    job_id = _submit(client, digits_onnx, methods=["robust-norm"], eval_samples=100)
    job, _seen = _wait(client, job_id, logs)
    assert job["status"] == "failed"
    problem = job["error"]
    assert (problem["code"], problem["stage"], problem["status"]) == (
        "shard-failed", "simulate", 500)
    assert "shard 1 of 2" in problem["detail"] and "InjectedFault" in problem["detail"]
    assert "injected failure" not in problem["detail"]  # internals stay in the log
    assert _tries(faults_log, job_id)[0] == 3  # the first try and both retries
    assert not os.path.exists(_settings.results_dir / job_id / "report.json")
