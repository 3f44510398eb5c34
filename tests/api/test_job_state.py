"""Job state transitions against a real (SQLite) store, migrated by Alembic."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from api import job_state
from api.db import JobRecord, JobStatus, make_engine, migrate, session_factory
from api.problems import make_problem


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def _job(sessions, **values) -> str:
    with sessions() as session:
        job = JobRecord(options={}, **values)
        session.add(job)
        session.commit()
        return job.id


def _get(sessions, job_id) -> JobRecord:
    with sessions() as session:
        return session.get(JobRecord, job_id)


def test_migration_creates_both_tables(sessions):
    tables = set(inspect(sessions.kw["bind"]).get_table_names())
    assert {"models", "jobs", "alembic_version"} <= tables


def test_claim_runs_once_per_delivery_until_the_attempt_cap(sessions):
    job_id = _job(sessions)
    with sessions() as session:
        assert job_state.claim(session, job_id, max_attempts=2) is job_state.Claim.run
        # A redelivery after a lost worker finds the job running and counts again.
        assert job_state.claim(session, job_id, max_attempts=2) is job_state.Claim.run
        assert job_state.claim(session, job_id, max_attempts=2) is job_state.Claim.exhausted
    job = _get(sessions, job_id)
    assert job.attempts == 3
    assert job.status is JobStatus.running
    assert job.started_at is not None


def test_cancel_of_a_queued_job_is_immediate_and_the_worker_skips_it(sessions):
    job_id = _job(sessions)
    with sessions() as session:
        assert job_state.request_cancel(session, job_id) is JobStatus.cancelled
        assert job_state.claim(session, job_id, max_attempts=3) is job_state.Claim.skip
    job = _get(sessions, job_id)
    assert job.status is JobStatus.cancelled and job.attempts == 0 and job.finished_at


def test_cancel_of_a_running_job_is_seen_by_progress(sessions):
    job_id = _job(sessions)
    with sessions() as session:
        job_state.claim(session, job_id, max_attempts=3)
        assert not job_state.record_progress(session, job_id, stage="simulate", progress=0.5,
                                             message="", partial_top1={"max-norm": [0.1]})
        assert job_state.request_cancel(session, job_id) is JobStatus.running
        assert job_state.record_progress(session, job_id, stage="simulate", progress=0.6,
                                         message="", partial_top1={})
        assert job_state.mark_cancelled(session, job_id)
    assert _get(sessions, job_id).status is JobStatus.cancelled


def test_finished_jobs_do_not_change_again(sessions):
    job_id = _job(sessions)
    with sessions() as session:
        job_state.claim(session, job_id, max_attempts=3)
        assert job_state.succeed(session, job_id, {"max-norm": [0.5, 1.0]})
        assert not job_state.fail(session, job_id, make_problem(500, "late", "Late", "late"))
        assert not job_state.mark_cancelled(session, job_id)
    job = _get(sessions, job_id)
    assert job.status is JobStatus.succeeded and job.progress == 1.0 and job.error is None
    assert job.partial_top1 == {"max-norm": [0.5, 1.0]}
