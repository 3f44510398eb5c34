"""The Celery tasks: run a stored job through ``core.pipeline`` and record the outcome.

``run_job`` runs a job whole, unless its evaluation set has more samples than
``Settings.eval_shard_size``: then it converts every method once (``pipeline.share_networks``
stores the networks in the job's results folder) and hands the slices of the evaluation set
to ``evaluate_shard`` tasks, a Celery group whose chord callback ``merge_shards`` merges them
(``pipeline.merge_shards_into``) and finishes the job.  A failing shard is retried alone;
one that still fails fails the job.

While a job runs, a :class:`Heartbeat` thread writes its ``heartbeat_at`` every
``Settings.heartbeat_interval_s``; the API's reaper (``api.reaper``) re-queues a running job
whose heartbeat went stale.  Every write of a running job is fenced by the attempt this worker
claimed, so a worker the reaper gave up on (while it was in fact still alive) cannot overwrite
its successor: its heartbeat finds the row taken, and it stops at its next progress event.
A job's claim and final state write are retried while the database is unreachable.

CUDA (through torch) is imported only inside the task, in the pool's child process, so the
prefork parent never initialises a device it would then fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import Task, chord, group
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy import update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from api import files, job_state
from api.db import JobRecord, JobStatus, ModelRecord, engine_for, session_factory, utcnow
from api.lookups import model_file
from api.problems import Problem, make_problem, problem_from_error
from api.queue import TASK_NAME
from api.schemas import build_spec
from api.settings import Settings, get_settings
from api.urls import job_url
from core.errors import JobCancelled, SnnconvError
from core.progress import ProgressEvent
from worker.celery_app import app

if TYPE_CHECKING:
    from core.spec import JobSpec

log = logging.getLogger(__name__)

# A job that fails before its first progress event fails while loading (spec, model, data).
FIRST_STAGE = "load"
SHARD_TASK = "snnconv.evaluate_shard"
MERGE_TASK = "snnconv.merge_shards"
SHARD_MAX_RETRIES = 2  # a failing shard runs at most 1 + this many times
SHARD_RETRY_DELAY_S = 1
SHARD_STAGE = "simulate"  # the stage a failed shard fails its job in
DB_ERRORS = (OperationalError, InterfaceError)  # the database is unreachable (for now)
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0


class JobLost(Exception):
    """The job is no longer this worker's: the reaper re-queued it (its heartbeat was stale)
    and another attempt claimed it, or it was finished elsewhere."""


def backoff_s(failures: int, most_s: float = RETRY_MAX_DELAY_S) -> float:
    """The wait after ``failures`` (≥ 1) refused database calls in a row: 0.5 s, doubling,
    at most ``most_s``.  The state writes, the heartbeat and the progress writes share it."""
    return min(RETRY_FIRST_DELAY_S * 2 ** (failures - 1), most_s)


def write_state(sessions: sessionmaker, write: Callable[[Session], object], retry_s: float,
                what: str):
    """``write(session)`` in a fresh session, retried with backoff for up to ``retry_s`` while
    the database is unreachable (then the error is raised)."""
    deadline = time.monotonic() + retry_s
    failures = 0
    while True:
        try:
            with sessions() as session:
                return write(session)
        except DB_ERRORS as error:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            failures += 1
            delay = min(backoff_s(failures), left)
            log.warning("%s: database unreachable (%s); retrying in %.1f s", what,
                        type(error).__name__, delay)
            time.sleep(delay)


class Heartbeat:
    """A thread that writes ``heartbeat_at = now`` on a running job every ``interval_s``.

    A write the database refuses is retried sooner (backoff from 0.5 s up to the interval);
    a write that finds the job no longer running (or, with ``attempt``, claimed by a later
    attempt) sets :attr:`lost` and ends the thread.  A thread of its own, so a long torch
    operation (which releases the GIL) does not stop it.  Use as a context manager.
    """

    def __init__(self, sessions: sessionmaker, job_id: str, interval_s: float,
                 attempt: int | None = None):
        self._sessions, self._job_id, self._interval_s = sessions, job_id, interval_s
        self._attempt = attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}",
                                        daemon=True)
        self.lost = False
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval_s + 5)

    def beat(self) -> bool:
        """One heartbeat write; False when the job is no longer this worker's."""
        fence = () if self._attempt is None else (JobRecord.attempts == self._attempt,)
        with self._sessions() as session:
            result = session.execute(
                update(JobRecord)
                .where(JobRecord.id == self._job_id, JobRecord.status == JobStatus.running,
                       *fence)
                .values(heartbeat_at=utcnow(), updated_at=JobRecord.updated_at))
            session.commit()
        self.beats += 1
        return result.rowcount == 1

    def _loop(self) -> None:
        delay, failures = self._interval_s, 0
        while not self._stop.wait(delay):
            try:
                if not self.beat():
                    self.lost = True
                    log.warning("job %s is no longer this worker's (re-queued or finished); "
                                "its heartbeat stops", self._job_id)
                    return
                delay, failures = self._interval_s, 0
            except Exception as error:  # noqa: BLE001 - keep beating whatever went wrong
                failures += 1
                delay = backoff_s(failures, most_s=self._interval_s)
                log.warning("job %s: heartbeat not written (%s); retrying in %.1f s",
                            self._job_id, type(error).__name__, delay)


class JobProgress:
    """Progress callback that mirrors events into the job row and raises on cancel.

    Writes are throttled to one per ``interval_s`` within a stage, so a fast simulation does
    not turn into a database benchmark; a stage change is always written.
    """

    def __init__(self, sessions: sessionmaker, job_id: str, interval_s: float,
                 attempt: int | None = None, lost: Callable[[], bool] = lambda: False):
        self._sessions, self._job_id, self._interval_s = sessions, job_id, interval_s
        self._attempt, self._lost = attempt, lost
        self._partial: dict[str, list[float]] = {}
        self._stage: str | None = None
        self._last_write = float("-inf")
        self._failures, self._retry_at = 0, float("-inf")

    def __call__(self, event: ProgressEvent) -> None:
        if self._lost():
            raise JobLost(f"job {self._job_id} was re-queued while this worker ran it")
        if event.method is not None and event.partial_top1 is not None:
            self._partial[event.method] = list(event.partial_top1)
        now = time.monotonic()
        if now < self._retry_at:  # the database refused the last write: not again yet
            return
        if event.stage == self._stage and now - self._last_write < self._interval_s:
            return
        self._stage, self._last_write = event.stage, now
        try:
            with self._sessions() as session:
                cancel = job_state.record_progress(
                    session, self._job_id, stage=event.stage, progress=event.progress,
                    message=event.message, partial_top1=dict(self._partial),
                    attempt=self._attempt)
        except DB_ERRORS as error:  # progress is best effort: the job goes on without it
            # Backed off (0.5 s doubling to 10 s): retrying at every event cost the job a
            # failed connection per event while PostgreSQL was away (a job ran 2.7x slower).
            self._failures += 1
            delay = backoff_s(self._failures)
            self._retry_at, self._last_write = now + delay, float("-inf")  # then written
            log.warning("job %s: progress not written (%s); next try in %.1f s", self._job_id,
                        type(error).__name__, delay)
            return
        self._failures = 0
        if cancel:
            raise JobCancelled(f"job {self._job_id} was cancelled by the user")

    @property
    def stage(self) -> str:
        """The last stage the job reached (a stage change is always written, so the row's
        ``stage`` says the same)."""
        return failed_stage(self._stage)


def failed_stage(stored: str | None) -> str:
    """The stage a job failed in, from the stage its row last recorded."""
    return stored if stored and stored != "queued" else FIRST_STAGE


def unexpected_problem(error: BaseException, stage: str) -> Problem:
    """A 500 problem for a failure that is not the user's: it names the stage and the error's
    type, not its message, which may hold server paths; the traceback goes to the log."""
    return make_problem(
        500, "internal-error", "Job failed unexpectedly",
        f"the worker failed unexpectedly during {stage} ({type(error).__name__}); "
        "the error is in the worker's log", stage=stage)


def job_spec(session, job: JobRecord, settings: Settings) -> JobSpec:
    """Rebuild the JobSpec of a stored job, with server-side paths filled in."""
    model = session.get(ModelRecord, job.model_id) if job.model_id else None
    if model is None:
        raise SnnconvError("the job's model was deleted before the job ran; upload it again",
                           code="model-deleted")
    return build_spec(job.options, model_file(settings.uploads_dir, model), model.arch,
                      settings.datasets_dir)


def _sessions(settings: Settings) -> sessionmaker:
    """Sessions on the process's one engine for the configured database."""
    return session_factory(engine_for(settings.sqlalchemy_url))


def _succeed(sessions: sessionmaker, job_id: str, report, settings: Settings | None = None,
             attempt: int | None = None) -> bool:
    """Mark the job succeeded with each method's accuracy per time step (retried while the
    database is unreachable); False when the job was no longer this worker's."""
    top1 = {m.method: m.top1 for m in report.methods}
    retry_s = (settings or get_settings()).state_write_retry_s
    return write_state(sessions, lambda s: job_state.succeed(s, job_id, top1, attempt=attempt),
                       retry_s, f"job {job_id}: marking it succeeded")


def execute_job(job_id: str, settings: Settings, sessions: sessionmaker) -> str:
    """Claim, run and finish one job; returns the final status. Never raises for job errors."""
    decision = write_state(
        sessions, lambda s: job_state.claim(s, job_id, settings.max_attempts,
                                            settings.heartbeat_timeout_s),
        settings.state_write_retry_s, f"job {job_id}: claiming it")
    with sessions() as session:
        if decision is job_state.Claim.skip:
            return "skipped"
        if decision is job_state.Claim.cancel:
            job_state.mark_cancelled(session, job_id)
            return "cancelled"
        if decision is job_state.Claim.exhausted:
            stage = failed_stage(session.get(JobRecord, job_id).stage)
            job_state.fail(session, job_id, make_problem(
                500, "attempts-exhausted", "Job failed repeatedly",
                f"the worker was lost more than {settings.max_attempts} times while running "
                f"this job, last during {stage} (out of memory?); try fewer samples or a "
                "smaller batch_size", stage=stage))
            return "failed"
        job = session.get(JobRecord, job_id)
    return _run(job, settings, sessions)


def _run(job: JobRecord, settings: Settings, sessions: sessionmaker) -> str:
    """Run the claimed attempt with its heartbeat beating; its writes are fenced by it."""
    attempt = job.attempts
    with Heartbeat(sessions, job.id, settings.heartbeat_interval_s, attempt) as heartbeat:
        progress = JobProgress(sessions, job.id, settings.progress_interval_s, attempt=attempt,
                               lost=lambda: heartbeat.lost)
        outcome = _run_attempt(job, settings, sessions, progress, attempt)
    if outcome == "lost":
        log.warning("job %s: attempt %d was superseded (re-queued while it ran); its outcome "
                    "is dropped", job.id, attempt)
    return outcome


def _run_attempt(job: JobRecord, settings: Settings, sessions: sessionmaker,
                 progress: JobProgress, attempt: int) -> str:
    def finish(write: Callable[[Session], bool], outcome: str) -> str:
        done = write_state(sessions, write, settings.state_write_retry_s,
                           f"job {job.id}: marking it {outcome}")
        return outcome if done else "lost"

    try:
        from core import pipeline  # imports torch: only ever inside the task

        with sessions() as session:
            spec = job_spec(session, job, settings)
        out_dir = files.job_dir(settings.results_dir, job.id)
        if _wants_shards(pipeline, spec, settings) and _start_shards(job.id, spec, out_dir,
                                                                     settings, progress):
            return "sharded"  # merge_shards finishes the job
        report = pipeline.run_into(spec, out_dir, progress)
    except JobLost:
        return "lost"
    except JobCancelled:
        return finish(lambda s: job_state.mark_cancelled(s, job.id, attempt=attempt),
                      "cancelled")
    except SnnconvError as error:
        problem = problem_from_error(error, stage=progress.stage)
    except SoftTimeLimitExceeded:
        problem = make_problem(
            500, "time-limit", "Job ran out of time",
            f"the job ran longer than {settings.soft_time_limit_s} s (during {progress.stage}); "
            "use fewer timesteps or eval_samples, or raise SNNCONV_SOFT_TIME_LIMIT_S",
            stage=progress.stage)
    except Exception as error:  # noqa: BLE001 - any other failure is recorded on the job
        log.exception("job %s failed during %s", job.id, progress.stage)
        problem = unexpected_problem(error, progress.stage)
    else:
        done = _succeed(sessions, job.id, report, settings, attempt)
        return "succeeded" if done else "lost"
    problem = without_server_paths(problem, settings)
    return finish(lambda s: job_state.fail(s, job.id, problem, attempt=attempt), "failed")


class JobTask(Task):
    """Records failures that escape the task body on the job: the hard time limit (Celery
    calls this in the pool's parent after killing the child) and infrastructure errors."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if not args:
            return
        job_id = args[0]
        settings = get_settings()
        sessions = _sessions(settings)
        with sessions() as session:
            job = session.get(JobRecord, job_id)
            stage = failed_stage(job.stage if job is not None else None)
            job_state.fail(session, job_id, _escaped_problem(exc, stage, settings, job_id))


def _escaped_problem(exc: BaseException, stage: str, settings: Settings,
                     job_id: str) -> Problem:
    """The problem for a failure that escaped the task body (see JobTask.on_failure)."""
    if isinstance(exc, TimeLimitExceeded):
        return make_problem(
            500, "time-limit", "Job ran out of time",
            f"the job was killed after {settings.hard_time_limit_s} s (during {stage}); use "
            "fewer timesteps or eval_samples, or raise SNNCONV_HARD_TIME_LIMIT_S", stage=stage)
    log.error("job %s failed during %s", job_url(job_id), stage, exc_info=exc)
    return unexpected_problem(exc, stage)


@app.task(name=TASK_NAME, base=JobTask, ignore_result=True)
def run_job(job_id: str) -> str:
    """Celery entry point: the job's id is the whole message (JSON)."""
    settings = get_settings()
    return execute_job(job_id, settings, _sessions(settings))


# --- sharded evaluation ----------------------------------------------------------------------


def _wants_shards(pipeline, spec: JobSpec, settings: Settings) -> bool:
    """Shard when asked to, on Redis (a chord needs its result backend; the embedded broker
    has none), and when the job evaluates more samples than one shard holds."""
    size = settings.eval_shard_size
    return (size > 0 and not settings.embedded and pipeline.shardable(spec)
            and pipeline.evaluation_size(spec) > size)


def _start_shards(job_id: str, spec: JobSpec, out_dir, settings: Settings,
                  progress: JobProgress) -> bool:
    """Convert once, store the networks and send the shards' chord; False when a network
    cannot be stored (the caller then runs the job whole)."""
    from core import pipeline
    from core.network_files import NotShareable
    from core.shards import shard_progress

    try:
        plan = pipeline.share_networks(spec, out_dir, settings.eval_shard_size, progress)
    except NotShareable as error:
        log.warning("job %s is evaluated unsharded: %s", job_id, error)
        return False
    total = len(plan.bounds)
    progress(ProgressEvent(stage=SHARD_STAGE, progress=shard_progress(0, total),
                           message=f"evaluating {plan.samples} samples in {total} shards"))
    header = group(evaluate_shard.s(job_id, index, total) for index in range(total))
    chord(header)(merge_shards.s(job_id))
    log.info("job %s: %d shards of %s sent", job_id, total, plan.bounds)
    return True


def _shared_dir(settings: Settings, job_id: str):
    from core.pipeline import SHARED_DIRNAME

    return files.job_dir(settings.results_dir, job_id) / SHARED_DIRNAME


def run_shard(job_id: str, index: int, total: int, settings: Settings,
              sessions: sessionmaker, worker: str) -> dict:
    """Evaluate shard ``index`` of ``total`` and count it in the job's progress; returns what
    the chord callback gets (and the result backend keeps): which worker did which shard."""
    summary = {"job": job_id, "index": index, "worker": worker, "pid": os.getpid()}
    with sessions() as session:
        job = session.get(JobRecord, job_id)
        if job is None or job.status != JobStatus.running:
            return {**summary, "skipped": True}
        if job.cancel_requested:
            return {**summary, "cancelled": True}
    from core import pipeline, shards

    directory = _shared_dir(settings, job_id)
    with Heartbeat(sessions, job_id, settings.heartbeat_interval_s):
        shard = pipeline.evaluate_shard(directory, index)
    rank = shards.claim_rank(directory, total)
    with sessions() as session:
        cancel = job_state.record_shard_progress(
            session, job_id, progress=shards.shard_progress(rank, total),
            message=f"{rank} of {total} shards evaluated",
            partial_top1=shards.partial_top1(pipeline.finished_shards(directory)))
    return {**summary, "start": shard.start, "stop": shard.stop, "rank": rank,
            "cancelled": cancel}


def finish_shards(results: list[dict], job_id: str, settings: Settings,
                  sessions: sessionmaker) -> str:
    """The chord callback's logic: merge the shards into the report and finish the job."""
    with sessions() as session:
        job = session.get(JobRecord, job_id)
        if job is None or job.status != JobStatus.running:
            return "skipped"
        if job.cancel_requested or any(result.get("cancelled") for result in results):
            job_state.mark_cancelled(session, job_id)
            return "cancelled"
    try:
        from core import pipeline

        with sessions() as session:
            job_state.record_progress(session, job_id, stage="report", progress=0.95,
                                      message=f"merging {len(results)} shards",
                                      partial_top1=job.partial_top1 or {})
        with Heartbeat(sessions, job_id, settings.heartbeat_interval_s):
            report = pipeline.merge_shards_into(files.job_dir(settings.results_dir, job_id))
    except Exception as error:  # noqa: BLE001 - recorded on the job
        log.exception("job %s failed while merging its shards", job_id)
        with sessions() as session:
            job_state.fail(session, job_id, unexpected_problem(error, "report"))
        return "failed"
    _succeed(sessions, job_id, report, settings)
    return "succeeded"


def without_server_paths(problem: Problem, settings: Settings) -> Problem:
    """The problem with the server's data and dataset directories cut out of its detail
    (a message may name a file the job read; the user sees its name, not where it lives)."""
    detail = problem.detail
    for directory in filter(None, (settings.data_dir, settings.datasets_dir)):
        for spelling in {str(directory.resolve()), str(directory)}:
            detail = detail.replace(spelling.rstrip("/") + "/", "")
    return problem.model_copy(update={"detail": detail})


def shard_problem(exc: BaseException, index: int, total: int) -> Problem:
    """The problem of a job whose shard failed on every try."""
    tries = SHARD_MAX_RETRIES + 1
    if isinstance(exc, SnnconvError):
        return problem_from_error(exc, stage=SHARD_STAGE)
    return make_problem(
        500, "shard-failed", "An evaluation shard failed",
        f"evaluation shard {index + 1} of {total} failed {tries} times during {SHARD_STAGE} "
        f"({type(exc).__name__}); the error is in the worker's log", stage=SHARD_STAGE)


class ShardTask(Task):
    """After its last retry, a shard's failure fails its job (the chord then never merges)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if len(args) < 3:
            return
        job_id, index, total = args[:3]
        log.error("job %s: shard %d of %d failed", job_id, index + 1, total, exc_info=exc)
        settings = get_settings()
        sessions = _sessions(settings)
        with sessions() as session:
            job_state.fail(session, job_id, shard_problem(exc, index, total))


@app.task(name=SHARD_TASK, bind=True, base=ShardTask, ignore_result=False,
          autoretry_for=(Exception,), max_retries=SHARD_MAX_RETRIES,
          default_retry_delay=SHARD_RETRY_DELAY_S)
def evaluate_shard(self, job_id: str, index: int, total: int) -> dict:
    """One slice of a sharded job's evaluation set (the chord's header)."""
    settings = get_settings()
    return run_shard(job_id, index, total, settings,
                     _sessions(settings),
                     self.request.hostname or "")


@app.task(name=MERGE_TASK, ignore_result=True)
def merge_shards(results: list[dict], job_id: str) -> str:
    """The chord's callback: every shard finished."""
    settings = get_settings()
    return finish_shards(results, job_id, settings,
                         _sessions(settings))
