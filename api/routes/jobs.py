"""Jobs: create (queued to a Celery worker), poll, list, cancel, and fetch their reports."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api import files, job_state
from api.auth import OwnerDep, require_job_room
from api.db import JobRecord, JobStatus
from api.deps import (
    CeleryDep,
    NonNegative,
    PageSize,
    SessionDep,
    SessionsDep,
    SettingsDep,
    in_session,
)
from api.lookups import get_job_or_404, get_model_or_404, model_file, require_dataset
from api.problems import KEYED_ROUTE_PROBLEMS, ProblemError, make_problem, problem_responses
from api.queue import TASK_NAME
from api.schemas import (
    JobAccepted,
    JobCreate,
    JobPublic,
    JobSummary,
    ListPublic,
    build_spec,
    job_options,
)
from api.urls import JOBS_PREFIX, job_url
from core.spec import IF_METHODS, tuned_model_files

router = APIRouter(prefix=JOBS_PREFIX, tags=["jobs"])

NO_JOB = {404: "no job with this id"}
CREATE_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {
    404: "no model with this id",
    413: "the request body exceeds SNNCONV_MAX_JSON_BODY_KB",
    422: "invalid options, or an unknown or unavailable dataset",
    429: "rate limit, or the key's quota of unfinished jobs (quota-jobs): retry after "
         "Retry-After seconds",
    503: "the database or the broker could not be reached (database-unavailable, "
         "database-busy, broker-unavailable)",
})
LIST_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {422: "invalid status, offset or limit"})
GET_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, NO_JOB)
CANCEL_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, NO_JOB, {
    409: "the job already finished (job-finished)"})
REPORT_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {
    404: "no job with this id, or it has no such file (report-missing)",
    409: "the job has not succeeded (report-not-ready)",
})
BINARY = {"type": "string", "format": "binary"}
# URL suffix → (file in the job's results directory, media type, operation name, summary)
REPORT_FILES = {
    "report": ("report.json", "application/json", "get_report",
               "The job's report.json: the same document the CLI writes."),
    "report.csv": ("report.csv", "text/csv; charset=utf-8", "get_report_csv",
                   "Accuracy per method and time step as CSV."),
    "plot.svg": ("accuracy.svg", "image/svg+xml", "get_plot_svg",
                 "Accuracy-vs-time-step plot (SVG)."),
    "plot.png": ("accuracy.png", "image/png", "get_plot_png",
                 "Accuracy-vs-time-step plot (PNG)."),
    "early-exit.csv": ("early-exit.csv", "text/csv; charset=utf-8", "get_early_exit_csv",
                       "Early exit per method and threshold as CSV (jobs with early_exit)."),
    "cq-model.onnx": ("cq-model.onnx", "application/octet-stream", "get_cq_model_onnx",
                      "The CQ network fine-tuned for the paper's methods (cq-* jobs), as ONNX."),
    "cq-model.safetensors": ("cq-model.safetensors", "application/octet-stream",
                             "get_cq_model_safetensors",
                             "The same CQ network's weights as safetensors."),
    **{name: (name, "application/octet-stream",
              f"get_{name.replace('-', '_').replace('.', '_')}",
              f"The CQ network with the weights spike-aware fine-tuning gave {method} "
              f"(jobs with spike_finetune_epochs > 0), as {name.rsplit('.', 1)[1]}.")
       for method in IF_METHODS for name in tuned_model_files(method)},
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted,
             responses=CREATE_PROBLEMS)
def create_job(job_in: JobCreate, response: Response, session: SessionDep,
               settings: SettingsDep, celery: CeleryDep, owner: OwnerDep) -> dict:
    """Queue a conversion/evaluation job; poll the URL in the Location header."""
    model = get_model_or_404(session, job_in.model_id, owner)
    require_job_room(session, owner, settings)
    require_dataset(job_in.dataset, settings)
    options = job_options(job_in)
    # Fail now, not in the worker, when the options are inconsistent (e.g. mean without std).
    build_spec(options, model_file(settings.uploads_dir, model), model.arch,
               settings.datasets_dir)
    job = JobRecord(owner_id=owner.id, model_id=model.id, options=options,
                    status=JobStatus.queued, stage="queued")
    session.add(job)
    session.commit()
    try:
        celery.send_task(TASK_NAME, args=[job.id], queue=settings.queue)
    except Exception as error:  # noqa: BLE001 - any broker failure means the job can't run
        problem = make_problem(503, "broker-unavailable", "Broker unavailable",
                               f"the job could not be queued: {type(error).__name__}: {error}")
        job_state.fail(session, job.id, problem)
        raise ProblemError(problem.status, problem.code, problem.title, problem.detail) from error
    response.headers["Location"] = job_url(job.id)
    return {"id": job.id, "status": job.status}


@router.get("", response_model=ListPublic[JobSummary], responses=LIST_PROBLEMS)
async def list_jobs(sessions: SessionsDep, owner: OwnerDep, status: JobStatus | None = None,
                    offset: NonNegative = 0, limit: PageSize = 50) -> ListPublic[JobSummary]:
    """This key's jobs, newest first, optionally only those with ``status``; each without
    its options and partial results (GET /v1/jobs/{id} has them)."""
    query = select(JobRecord).where(JobRecord.owner_id == owner.id)
    if status is not None:
        query = query.where(JobRecord.status == status)

    def page(session: Session) -> ListPublic[JobSummary]:
        count = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = session.scalars(
            query.order_by(JobRecord.created_at.desc()).offset(offset).limit(limit)).all()
        return ListPublic[JobSummary](data=[JobSummary.model_validate(row) for row in rows],
                                      count=count)
    return await in_session(sessions, page)


@router.get("/{job_id}", response_model=JobPublic, responses=GET_PROBLEMS)
async def get_job(job_id: str, sessions: SessionsDep, owner: OwnerDep) -> JobPublic:
    """Status, stage, progress, accuracy per t so far, and the error when it failed."""
    return await in_session(
        sessions, lambda session: JobPublic.model_validate(get_job_or_404(session, job_id, owner)))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED,
             response_model=JobPublic, responses=CANCEL_PROBLEMS)
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobRecord:
    """Cancel: a queued job at once, a running one at its next batch or time-step chunk."""
    job = get_job_or_404(session, job_id, owner)
    if job_state.is_finished(job.status):
        raise ProblemError(409, "job-finished", "Job already finished",
                           f"the job is {job.status.value}; nothing to cancel")
    job_state.request_cancel(session, job_id)
    session.expire_all()
    return get_job_or_404(session, job_id, owner)


def _report_file(session, settings, owner, job_id: str, filename: str,
                 media_type: str) -> FileResponse:
    job = get_job_or_404(session, job_id, owner)
    if job.status is not JobStatus.succeeded:
        raise ProblemError(409, "report-not-ready", "Report not ready",
                           f"the job is {job.status.value}; reports exist once it succeeded")
    path = files.job_dir(settings.results_dir, job_id) / filename
    if not path.is_file():
        hint = ("only jobs with a cq-* method produce a CQ network"
                if filename.startswith("cq-model") else
                "only jobs with early_exit produce it" if filename == "early-exit.csv" else
                "only cq-if/cq-ctt jobs with spike-aware fine-tuning produce a tuned network"
                if filename.startswith("cq-") else "it is not on the server's data volume")
        raise ProblemError(404, "report-missing", "Report file missing",
                           f"job {job_id} has no {filename}: {hint}")
    return FileResponse(path, media_type=media_type)


def _file_endpoint(filename: str, media_type: str, summary: str):
    def endpoint(job_id: str, session: SessionDep, settings: SettingsDep,
                 owner: OwnerDep) -> Response:
        return _report_file(session, settings, owner, job_id, filename, media_type)

    endpoint.__doc__ = summary
    return endpoint


def _file_schema(media_type: str) -> dict:
    """What a report file's body is: a JSON document, text, or bytes."""
    if media_type == "application/json":
        return {"type": "object"}
    return {"type": "string"} if media_type.startswith(("text/", "image/svg")) else BINARY


for _suffix, (_filename, _media_type, _name, _summary) in REPORT_FILES.items():
    _ok = {"description": "the file",
           "content": {_media_type.split(";")[0]: {"schema": _file_schema(_media_type)}}}
    router.add_api_route(f"/{{job_id}}/{_suffix}", _file_endpoint(_filename, _media_type, _summary),
                         methods=["GET"], name=_name, response_class=FileResponse,
                         responses={200: _ok, **REPORT_PROBLEMS})
