"""Job state transitions, shared by the API (create, cancel) and the worker (claim, finish).

Every transition is one conditional UPDATE, so the API and a worker racing on the same job
(cancel while it starts, a redelivered message) cannot both win.  :func:`fail` is the one way
a job fails: it stores the problem document with the job's URL as its ``instance``.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session

from api.db import FINISHED, JobRecord, JobStatus, utcnow
from api.problems import Problem
from api.urls import job_url


class Claim(Enum):
    """What a worker should do with a job it was handed."""

    run = "run"
    skip = "skip"  # already finished (e.g. cancelled while queued) or deleted
    exhausted = "exhausted"  # delivered more often than the attempt cap allows
    cancel = "cancel"  # redelivered after cancel was requested


def _transition(session: Session, job_id: str, allowed: set[JobStatus], *,
                attempt: int | None = None, **values) -> bool:
    """One conditional UPDATE; ``attempt`` (when given) fences it to the worker running that
    attempt, so a worker the reaper gave up on cannot overwrite a re-queued job or its
    successor's attempt."""
    fence = () if attempt is None else (JobRecord.attempts == attempt,
                                        JobRecord.status == JobStatus.running)
    result = session.execute(
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status.in_(allowed), *fence)
        .values(updated_at=utcnow(), **values)
    )
    session.commit()
    return result.rowcount == 1


def stale_before(cutoff):
    """The running job's worker gave no sign of life since ``cutoff`` (its heartbeat, or its
    start when it never wrote one)."""
    return or_(JobRecord.heartbeat_at < cutoff,
               and_(JobRecord.heartbeat_at.is_(None), JobRecord.started_at < cutoff))


def claim(session: Session, job_id: str, max_attempts: int,
          stale_after_s: float | None = None) -> Claim:
    """Mark the job running and count the attempt; says whether to run it.

    A queued job is claimed; so is a running one (a redelivered message) unless
    ``stale_after_s`` is given and its heartbeat is fresher than that: then another worker is
    still running it and this delivery is skipped (the reaper re-queues it if that worker dies).
    """
    now = utcnow()
    values = dict(status=JobStatus.running, attempts=JobRecord.attempts + 1, started_at=now,
                  heartbeat_at=now)
    if stale_after_s is None:
        claimed = _transition(session, job_id, {JobStatus.queued, JobStatus.running}, **values)
    else:
        result = session.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id,
                   or_(JobRecord.status == JobStatus.queued,
                       and_(JobRecord.status == JobStatus.running,
                            stale_before(now - timedelta(seconds=stale_after_s)))))
            .values(updated_at=now, **values))
        session.commit()
        claimed = result.rowcount == 1
    if not claimed:
        return Claim.skip
    job = session.get(JobRecord, job_id, populate_existing=True)
    if job.cancel_requested:
        return Claim.cancel
    if job.attempts > max_attempts:
        return Claim.exhausted
    return Claim.run


def record_progress(session: Session, job_id: str, *, stage: str, progress: float,
                    message: str, partial_top1: dict[str, list[float]],
                    attempt: int | None = None) -> bool:
    """Mirror a progress event; returns True when the user asked to cancel the job."""
    _transition(session, job_id, {JobStatus.running}, attempt=attempt, stage=stage,
                progress=progress, message=message[:500], partial_top1=partial_top1)
    job = session.get(JobRecord, job_id, populate_existing=True)
    return job is None or job.cancel_requested


def record_shard_progress(session: Session, job_id: str, *, progress: float, message: str,
                          partial_top1: dict[str, list[float]]) -> bool:
    """Like :func:`record_progress` for a sharded evaluation, whose shards finish in any
    order on any worker: the row only ever moves forward (a write with less progress than
    the row has is dropped).  Returns True when the user asked to cancel the job."""
    session.execute(
        update(JobRecord)
        .where(JobRecord.id == job_id, JobRecord.status == JobStatus.running,
               JobRecord.progress < progress)
        .values(updated_at=utcnow(), stage="simulate", progress=progress,
                message=message[:500], partial_top1=partial_top1)
    )
    session.commit()
    job = session.get(JobRecord, job_id, populate_existing=True)
    return job is None or job.cancel_requested


def succeed(session: Session, job_id: str, final_top1: dict[str, list[float]],
            attempt: int | None = None) -> bool:
    """Mark the job done; its accuracy per t becomes the report's complete curves."""
    return _transition(session, job_id, {JobStatus.running}, attempt=attempt,
                       status=JobStatus.succeeded,
                       progress=1.0, finished_at=utcnow(), message="done",
                       partial_top1=final_top1)


def fail(session: Session, job_id: str, problem: Problem, attempt: int | None = None) -> bool:
    """Mark the job failed with ``problem``, whose ``instance`` becomes the job's URL."""
    problem = problem.model_copy(update={"instance": job_url(job_id)})
    return _transition(session, job_id, {JobStatus.queued, JobStatus.running}, attempt=attempt,
                       status=JobStatus.failed, error=problem.model_dump(exclude_none=True),
                       finished_at=utcnow(), message=problem.detail[:500])


def mark_cancelled(session: Session, job_id: str, attempt: int | None = None) -> bool:
    return _transition(session, job_id, {JobStatus.queued, JobStatus.running}, attempt=attempt,
                       status=JobStatus.cancelled, finished_at=utcnow(), message="cancelled")


def request_cancel(session: Session, job_id: str) -> JobStatus | None:
    """Cancel a queued job at once, or flag a running one for its worker.

    Returns the job's status afterwards, or None when it does not exist.
    """
    if _transition(session, job_id, {JobStatus.queued}, status=JobStatus.cancelled,
                   cancel_requested=True, finished_at=utcnow(), message="cancelled"):
        return JobStatus.cancelled
    _transition(session, job_id, {JobStatus.running}, cancel_requested=True,
                message="cancel requested")
    job = session.get(JobRecord, job_id, populate_existing=True)
    return None if job is None else job.status


def is_finished(status: JobStatus) -> bool:
    return status in FINISHED
