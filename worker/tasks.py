"""The one Celery task: run a stored job through ``core.pipeline`` and record the outcome.

CUDA (through torch) is imported only inside the task, in the pool's child process, so the
prefork parent never initialises a device it would then fork.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy.orm import sessionmaker

from api import files, job_state
from api.db import JobRecord, ModelRecord, engine_for, session_factory
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


class JobProgress:
    """Progress callback that mirrors events into the job row and raises on cancel.

    Writes are throttled to one per ``interval_s`` within a stage, so a fast simulation does
    not turn into a database benchmark; a stage change is always written.
    """

    def __init__(self, sessions: sessionmaker, job_id: str, interval_s: float):
        self._sessions, self._job_id, self._interval_s = sessions, job_id, interval_s
        self._partial: dict[str, list[float]] = {}
        self._stage: str | None = None
        self._last_write = float("-inf")

    def __call__(self, event: ProgressEvent) -> None:
        if event.method is not None and event.partial_top1 is not None:
            self._partial[event.method] = list(event.partial_top1)
        now = time.monotonic()
        if event.stage == self._stage and now - self._last_write < self._interval_s:
            return
        self._stage, self._last_write = event.stage, now
        with self._sessions() as session:
            cancel = job_state.record_progress(
                session, self._job_id, stage=event.stage, progress=event.progress,
                message=event.message, partial_top1=dict(self._partial))
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


def execute_job(job_id: str, settings: Settings, sessions: sessionmaker) -> str:
    """Claim, run and finish one job; returns the final status. Never raises for job errors."""
    with sessions() as session:
        decision = job_state.claim(session, job_id, settings.max_attempts)
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
    progress = JobProgress(sessions, job.id, settings.progress_interval_s)
    try:
        from core import pipeline  # imports torch: only ever inside the task

        with sessions() as session:
            spec = job_spec(session, job, settings)
        report = pipeline.run_into(spec, files.job_dir(settings.results_dir, job.id), progress)
    except JobCancelled:
        with sessions() as session:
            job_state.mark_cancelled(session, job.id)
        return "cancelled"
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
        with sessions() as session:
            job_state.succeed(session, job.id, {m.method: m.top1 for m in report.methods})
        return "succeeded"
    with sessions() as session:
        job_state.fail(session, job.id, problem)
    return "failed"


class JobTask(Task):
    """Records failures that escape the task body on the job: the hard time limit (Celery
    calls this in the pool's parent after killing the child) and infrastructure errors."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if not args:
            return
        job_id = args[0]
        settings = get_settings()
        sessions = session_factory(engine_for(settings.sqlalchemy_url))
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
    return execute_job(job_id, settings, session_factory(engine_for(settings.sqlalchemy_url)))
