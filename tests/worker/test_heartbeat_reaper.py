"""Jobs never wedge: the worker's heartbeat, the API's reaper, retried state writes, fencing
of a superseded attempt, and ``serve``'s worker supervisor (all in-process, SQLite)."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from api import job_state
from api.db import JobRecord, JobStatus, make_engine, migrate, session_factory, utcnow
from api.reaper import WORKER_LOST, reap
from worker import tasks


@pytest.fixture
def fast(settings):
    return settings.model_copy(update={"heartbeat_interval_s": 0.05, "heartbeat_timeout_s": 5,
                                       "max_attempts": 3, "state_write_retry_s": 5})


@pytest.fixture
def store(settings):
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _job(sessions, *, status=JobStatus.running, age_s: float | None = 0, attempts=1,
         started_age_s: float = 0, **values) -> str:
    now = utcnow()
    job = JobRecord(options={}, status=status, attempts=attempts, stage="simulate",
                    started_at=now - timedelta(seconds=started_age_s),
                    heartbeat_at=None if age_s is None else now - timedelta(seconds=age_s),
                    **values)
    with sessions() as session:
        session.add(job)
        session.commit()
        return job.id


def _get(sessions, job_id) -> JobRecord:
    with sessions() as session:
        return session.get(JobRecord, job_id)


def _age(sessions, job_id, seconds: float) -> None:
    """Make the job's heartbeat ``seconds`` old (as if its worker had died then)."""
    with sessions() as session:
        session.get(JobRecord, job_id).heartbeat_at = utcnow() - timedelta(seconds=seconds)
        session.commit()


def test_a_stale_job_is_requeued_until_its_attempts_are_spent_then_fails(store, fast):
    job_id = _job(store, age_s=60)
    sent: list[str] = []
    for attempt in range(1, fast.max_attempts):
        assert reap(store, fast, sent.append).requeued == [job_id]
        job = _get(store, job_id)
        assert (job.status, job.attempts, job.heartbeat_at) == (JobStatus.queued, attempt, None)
        assert "re-queued" in job.message
        with store() as session:  # the re-sent message reaches a worker, which dies too
            assert job_state.claim(session, job_id, fast.max_attempts, 5) is job_state.Claim.run
        _age(store, job_id, 60)
    assert sent == [job_id] * (fast.max_attempts - 1)
    assert reap(store, fast, sent.append).failed == [job_id]
    job = _get(store, job_id)
    assert job.status is JobStatus.failed and job.finished_at is not None
    assert job.attempts == fast.max_attempts and len(sent) == fast.max_attempts - 1
    assert job.error["code"] == WORKER_LOST and job.error["status"] == 500
    assert job.error["instance"] == f"/v1/jobs/{job_id}" and job.error["stage"] == "simulate"
    assert "attempts are exhausted" in job.error["detail"]
    assert not reap(store, fast, sent.append)  # finished: nothing more to do


def test_fresh_heartbeats_queued_and_finished_jobs_are_left_alone(store, fast):
    fresh = _job(store, age_s=1)
    never_beat_but_young = _job(store, age_s=None, started_age_s=1)
    never_beat_and_old = _job(store, age_s=None, started_age_s=60)
    queued = _job(store, status=JobStatus.queued, age_s=None, started_age_s=60)
    done = _job(store, status=JobStatus.succeeded, age_s=60)
    sent: list[str] = []
    assert reap(store, fast, sent.append).requeued == [never_beat_and_old] == sent
    for job_id, status in ((fresh, JobStatus.running), (never_beat_but_young, JobStatus.running),
                           (queued, JobStatus.queued), (done, JobStatus.succeeded)):
        assert _get(store, job_id).status is status


def test_a_stale_job_the_user_cancelled_is_cancelled(store, fast):
    job_id = _job(store, age_s=60, cancel_requested=True)
    sent: list[str] = []
    assert reap(store, fast, sent.append).cancelled == [job_id] and sent == []
    assert _get(store, job_id).status is JobStatus.cancelled


def test_two_reapers_never_requeue_a_job_twice(store, fast):
    jobs = [_job(store, age_s=60) for _ in range(6)]
    sent: list[str] = []
    # A second reaper runs its whole pass in the middle of the first one's (which read its
    # list of stale jobs before): the first must then find every other job taken.
    nested: list = []

    def send(job_id: str) -> None:
        sent.append(job_id)
        if not nested:
            nested.append(reap(store, fast, sent.append))

    first = reap(store, fast, send)
    assert first.requeued == jobs[:1] and nested[0].requeued == jobs[1:]
    assert sorted(sent) == sorted(jobs)
    # And many reapers at once, in threads.
    more = [_job(store, age_s=60) for _ in range(8)]
    lock, sent_threads = threading.Lock(), []

    def locked_send(job_id):
        with lock:
            sent_threads.append(job_id)

    threads = [threading.Thread(target=reap, args=(store, fast, locked_send)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent_threads) == sorted(more)


def test_a_requeue_the_broker_refuses_is_retried_at_the_next_pass(store, fast):
    job_id = _job(store, age_s=60)

    def broken(_job_id):
        raise ConnectionError("broker down")

    assert not reap(store, fast, broken)
    assert _get(store, job_id).status is JobStatus.running  # put back, still stale
    sent: list[str] = []
    assert reap(store, fast, sent.append).requeued == [job_id] == sent


def test_a_redelivery_skips_a_job_another_worker_still_beats_for(store):
    job_id = _job(store, age_s=1)
    with store() as session:
        assert job_state.claim(session, job_id, 3, stale_after_s=5) is job_state.Claim.skip
    assert _get(store, job_id).attempts == 1
    _age(store, job_id, 10)
    with store() as session:
        assert job_state.claim(session, job_id, 3, stale_after_s=5) is job_state.Claim.run
    job = _get(store, job_id)
    assert job.attempts == 2 and utcnow() - job.heartbeat_at < timedelta(seconds=5)


def test_the_heartbeat_beats_until_stopped_and_notices_a_successor(store):
    job_id = _job(store, age_s=60)
    with tasks.Heartbeat(store, job_id, 0.05, attempt=1) as heartbeat:
        deadline = time.monotonic() + 10
        while heartbeat.beats < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert heartbeat.beats >= 3 and not heartbeat.lost
    assert utcnow() - _get(store, job_id).heartbeat_at < timedelta(seconds=5)
    beats = heartbeat.beats
    time.sleep(0.2)
    assert heartbeat.beats == beats  # stopped with the task

    with store() as session:  # the reaper re-queued it and another worker claimed it
        job_state.claim(session, job_id, 3)
    with tasks.Heartbeat(store, job_id, 0.05, attempt=1) as stale:
        deadline = time.monotonic() + 10
        while not stale.lost and time.monotonic() < deadline:
            time.sleep(0.02)
    assert stale.lost and _get(store, job_id).attempts == 2


class _FlakySessions:
    """A session factory whose first ``failures`` sessions raise as an unreachable database."""

    def __init__(self, sessions, failures: int):
        self._sessions, self.failures, self.calls = sessions, failures, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return self._sessions()


def test_the_heartbeat_keeps_retrying_while_the_database_is_down(store):
    job_id = _job(store, age_s=60)
    flaky = _FlakySessions(store, failures=3)
    with tasks.Heartbeat(flaky, job_id, 0.2, attempt=1) as heartbeat:
        deadline = time.monotonic() + 10
        while heartbeat.beats < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert heartbeat.beats >= 1 and flaky.calls >= 4 and not heartbeat.lost
    assert utcnow() - _get(store, job_id).heartbeat_at < timedelta(seconds=5)


def test_progress_writes_back_off_while_the_database_is_down(store):
    from core.progress import ProgressEvent

    job_id = _job(store, age_s=0)
    flaky = _FlakySessions(store, failures=10**6)
    progress = tasks.JobProgress(flaky, job_id, interval_s=0, attempt=1)
    for step in range(100):  # the job goes on; one refused connection, not one per event
        progress(ProgressEvent(stage="simulate", progress=step / 200, message="step"))
    assert flaky.calls == 1
    flaky.failures = flaky.calls  # the database is back
    time.sleep(tasks.RETRY_FIRST_DELAY_S + 0.05)
    progress(ProgressEvent(stage="simulate", progress=0.75, message="back"))
    assert flaky.calls == 2 and _get(store, job_id).progress == 0.75


def test_after_the_database_was_away_the_reaper_waits_a_heartbeat_timeout(store, fast):
    """No worker could beat while the database was away: the reaper gives them one heartbeat
    timeout once it is back before it re-queues (a dead worker's job is still found)."""
    import asyncio

    from api.reaper import reap_periodically

    settings = fast.model_copy(update={"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 1,
                                       "reaper_interval_s": 0.05})
    job_id = _job(store, age_s=60)  # stale: its last beat was before the outage
    flaky = _FlakySessions(store, failures=3)
    sent: list[str] = []

    async def run() -> float:
        reaper = asyncio.create_task(reap_periodically(flaky, settings, sent.append))
        while flaky.calls <= flaky.failures:
            await asyncio.sleep(0.01)
        back = time.monotonic()
        while not sent and time.monotonic() - back < 10:
            await asyncio.sleep(0.01)
        reaper.cancel()
        return time.monotonic() - back

    waited = asyncio.run(run())
    assert sent == [job_id] and _get(store, job_id).status is JobStatus.queued
    assert waited >= settings.heartbeat_timeout_s


def test_a_final_state_write_is_retried_then_gives_up(store, monkeypatch):
    monkeypatch.setattr(tasks, "RETRY_FIRST_DELAY_S", 0.01)
    job_id = _job(store)
    flaky = _FlakySessions(store, failures=3)
    assert tasks.write_state(flaky, lambda s: job_state.succeed(s, job_id, {}, attempt=1),
                             5, "test") is True
    assert _get(store, job_id).status is JobStatus.succeeded and flaky.calls == 4
    down = _FlakySessions(store, failures=10**6)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        tasks.write_state(down, lambda s: None, 0.3, "test")
    assert time.monotonic() - started < 3 and down.calls > 1


def _api_job(client, digits_onnx) -> str:
    model = client.post("/v1/models", files={"file": ("m.onnx", digits_onnx.read_bytes())})
    assert model.status_code == 201, model.text
    job = client.post("/v1/jobs", json={"model_id": model.json()["id"], "dataset": "digits",
                                        "methods": ["robust-norm"], "timesteps": 4})
    assert job.status_code == 202, job.text
    return job.json()["id"]


def _requeue_and_reclaim(sessions, job_id) -> None:
    """What happens while a worker the reaper gave up on is in fact still running the job."""
    _age(sessions, job_id, 3600)
    with sessions() as session:
        session.get(JobRecord, job_id).status = JobStatus.queued
        session.commit()
        assert job_state.claim(session, job_id, 3) is job_state.Claim.run


@pytest.mark.parametrize("reports_progress", [True, False])
def test_a_superseded_attempt_stops_and_writes_nothing(client, settings, sessions, digits_onnx,
                                                       monkeypatch, reports_progress):
    from core import pipeline
    from core.progress import ProgressEvent

    job_id = _api_job(client, digits_onnx)
    real = pipeline.run_into

    def run_into(spec, out_dir, progress):
        _requeue_and_reclaim(sessions, job_id)
        if reports_progress:
            time.sleep(0.3)  # the heartbeat (interval 0.05 s) notices the successor
            progress(ProgressEvent(stage="simulate", progress=0.5, message="x"))
        return real(spec, out_dir, progress)

    monkeypatch.setattr(pipeline, "run_into", run_into)
    fast = settings.model_copy(update={"heartbeat_interval_s": 0.05})
    assert tasks.execute_job(job_id, fast, sessions) == "lost"
    job = _get(sessions, job_id)
    # The successor's attempt 2 owns the row: still running, untouched by attempt 1.
    assert (job.status, job.attempts, job.stage) == (JobStatus.running, 2, "queued")


class _Supervised:
    def __init__(self, alive: bool):
        self.alive = alive

    def describe(self) -> str:
        return "worker process exited with code -9; restarting in 1 s"


def test_readyz_is_503_while_the_embedded_worker_is_down(client, assert_problem):
    client.app.state.worker_supervisor = _Supervised(alive=False)
    body = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert body["detail"].startswith("the embedded worker is down")
    assert "code -9" in body["detail"]
    client.app.state.worker_supervisor = _Supervised(alive=True)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}


def test_the_supervisor_restarts_a_worker_that_exits(tmp_path):
    from api.cli import WorkerSupervisor

    starts = tmp_path / "starts"
    # A "worker" that records its start, then exits at once the first two times.
    script = ("import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); "
              "p.write_text(p.read_text() + 'x' if p.exists() else 'x'); "
              "time.sleep(0.1 if len(p.read_text()) < 3 else 60)")
    supervisor = WorkerSupervisor([sys.executable, "-c", script, str(starts)],
                                  delays_s=(0.3, 0.6), stable_s=60).start()
    try:
        down_seen = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                supervisor.restarts == 2 and supervisor.alive and starts.exists()
                and starts.read_text() == "xxx"):
            if not supervisor.alive:
                down_seen = True
                assert "exited with code 0" in supervisor.describe() or supervisor.alive
            time.sleep(0.02)
        assert down_seen and supervisor.restarts == 2 and supervisor.alive
        pid = supervisor.pid
    finally:
        supervisor.stop()
    assert not supervisor.alive and starts.read_text() == "xxx"
    time.sleep(0.5)
    assert supervisor.pid == pid and supervisor.restarts == 2  # stopped: no more restarts
