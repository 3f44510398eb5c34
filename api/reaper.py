"""The reaper: recovers running jobs whose worker stopped giving signs of life.

A worker writes ``heartbeat_at`` on its running job every ``heartbeat_interval_s``
(``worker.tasks.Heartbeat``).  A job still ``running`` whose heartbeat (or start, when it has
none) is older than ``heartbeat_timeout_s`` lost its worker: killed, its machine gone, or the
embedded broker never redelivering a fetched message.  :func:`reap` then

- marks it cancelled when the user asked to cancel it,
- re-queues it (status ``queued``, attempts kept, a new Celery message) while its attempts
  are below ``max_attempts`` — the next claim counts the new attempt,
- else fails it with the problem ``worker-lost``.

Each decision is one conditional UPDATE on the row as it was read (still running, still
stale, same attempt count), so two reapers (two API processes) never both act on one job.
The API runs :func:`reap_periodically` in its lifespan, every ``reaper_interval_s``; after the
database was away it holds off for a heartbeat timeout, as no worker could beat meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from api.db import JobRecord, JobStatus, utcnow
from api.job_state import stale_before
from api.problems import make_problem
from api.queue import TASK_NAME
from api.settings import Settings
from api.urls import job_url

log = logging.getLogger(__name__)

WORKER_LOST = "worker-lost"


@dataclass
class Reaped:
    """What one pass did, by job id."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled)


def worker_lost_problem(job_id: str, attempts: int, stage: str | None, timeout_s: float):
    stage = stage if stage and stage != "queued" else "load"
    return make_problem(
        500, WORKER_LOST, "Worker lost",
        f"the worker running this job stopped giving signs of life (no heartbeat for "
        f"{timeout_s:g} s) during {stage}; all {attempts} attempts are exhausted, so the "
        "job is not retried (out of memory? try fewer samples or a smaller batch_size)",
        job_url(job_id), stage=stage)


def reap(sessions: sessionmaker, settings: Settings, send: Callable[[str], None],
         now: datetime | None = None) -> Reaped:
    """One pass over the running jobs with a stale heartbeat; ``send(job_id)`` queues a
    re-queued job's message (a failing send puts the job back as it was, for the next pass)."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    done = Reaped()
    with sessions() as session:
        stale = session.execute(
            select(JobRecord.id, JobRecord.attempts, JobRecord.cancel_requested,
                   JobRecord.stage)
            .where(JobRecord.status == JobStatus.running, stale_before(cutoff))
            .order_by(JobRecord.created_at)
        ).all()
    for job_id, attempts, cancel_requested, stage in stale:
        with sessions() as session:
            _reap_one(session, settings, send, done, job_id=job_id, attempts=attempts,
                      cancel_requested=cancel_requested, stage=stage, cutoff=cutoff, now=now)
    return done


def _reap_one(session, settings: Settings, send: Callable[[str], None], done: Reaped, *,
              job_id: str, attempts: int, cancel_requested: bool, stage: str | None,
              cutoff: datetime, now: datetime) -> None:
    """Cancel, fail or re-queue one stale job, if it is still as it was read."""
    def take(**values) -> bool:
        result = session.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.status == JobStatus.running,
                   JobRecord.attempts == attempts, stale_before(cutoff))
            .values(updated_at=now, **values))
        session.commit()
        return result.rowcount == 1

    if cancel_requested:
        if take(status=JobStatus.cancelled, finished_at=now, message="cancelled"):
            done.cancelled.append(job_id)
        return
    if attempts >= settings.max_attempts:
        problem = worker_lost_problem(job_id, attempts, stage, settings.heartbeat_timeout_s)
        if take(status=JobStatus.failed, finished_at=now, message=problem.detail[:500],
                error=problem.model_dump(exclude_none=True)):
            done.failed.append(job_id)
            log.warning("job %s failed: worker lost, %d attempts", job_id, attempts)
        return
    if not take(status=JobStatus.queued, heartbeat_at=None,
                message=f"re-queued: its worker was lost (attempt {attempts} of "
                        f"{settings.max_attempts})"):
        return
    try:
        send(job_id)
    except Exception as error:  # noqa: BLE001 - broker down: put it back for the next pass
        log.warning("job %s: re-queue not sent (%s: %s); retried next pass",
                    job_id, type(error).__name__, error)
        session.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.status == JobStatus.queued,
                   JobRecord.attempts == attempts)
            .values(status=JobStatus.running, heartbeat_at=cutoff - timedelta(seconds=1)))
        session.commit()
        return
    done.requeued.append(job_id)
    log.warning("job %s re-queued: no heartbeat since %s (attempt %d of %d)",
                job_id, cutoff.isoformat(), attempts, settings.max_attempts)


def celery_sender(celery, settings: Settings) -> Callable[[str], None]:
    """Sends a job's message as ``POST /v1/jobs`` does."""
    def send(job_id: str) -> None:
        celery.send_task(TASK_NAME, args=[job_id], queue=settings.queue)
    return send


def database_answers(sessions: sessionmaker) -> None:
    """Raise unless the job store answers a trivial query."""
    with sessions() as session:
        session.execute(select(1))


async def reap_periodically(sessions: sessionmaker, settings: Settings,
                            send: Callable[[str], None]) -> None:
    """:func:`reap` every ``reaper_interval_s`` until cancelled; a failing pass (database
    down) is logged and retried at the next one.

    After a failing pass nothing is reaped until the database has answered again for
    ``heartbeat_timeout_s``: while it was away no worker could write its heartbeat, so every
    running job looks stale the moment it is back, though its worker is alive and about to
    beat (or to write the outcome it finished meanwhile).  Re-queuing them then threw that
    work away and spent an attempt on each job; a worker that really died meanwhile is still
    found, one heartbeat timeout later.  Meanwhile each pass only checks the database.
    """
    resume_at = 0.0  # time.monotonic() before which passes only check the database
    blind = False  # the last pass could not reach the database
    while True:
        try:
            if blind or time.monotonic() < resume_at:
                await asyncio.to_thread(database_answers, sessions)
            else:
                await asyncio.to_thread(reap, sessions, settings, send)
            if blind:
                blind = False
                resume_at = time.monotonic() + settings.heartbeat_timeout_s
                log.warning("reaper: the database answers again; no job is reaped for "
                            "%g s, until its worker has had time to beat",
                            settings.heartbeat_timeout_s)
        except Exception as error:  # noqa: BLE001 - keep reaping
            blind = True
            log.warning("reaper pass failed: %s: %s", type(error).__name__, error)
        await asyncio.sleep(settings.reaper_interval_s)


def start_reaper(app) -> asyncio.Task | None:
    """Start the API's reaper task (None when ``reaper_interval_s`` is 0); cancel it on
    shutdown with :func:`stop_reaper`."""
    settings = app.state.settings
    if settings.reaper_interval_s <= 0:
        return None
    return asyncio.create_task(reap_periodically(
        app.state.sessions, settings, celery_sender(app.state.celery, settings)),
        name="snnconv-reaper")


async def stop_reaper(task: asyncio.Task | None) -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
