"""Uploaded models: upload (with pre-flight), list, get, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile, status
from sqlalchemy import func, select

from api import files, model_store, uploads
from api.auth import OwnerDep, require_model_room
from api.db import JobRecord, JobStatus, ModelRecord
from api.deps import NonNegative, PageSize, SessionDep, SettingsDep
from api.lookups import get_model_or_404
from api.problems import KEYED_ROUTE_PROBLEMS, ProblemError, problem_responses
from api.schemas import ListPublic, ModelPublic
from core.spec import ARCH_MAX_CHARS, PRINTABLE_PATTERN

router = APIRouter(prefix="/models", tags=["models"])

# Multipart framing around the file; a Content-Length beyond limit + this is refused unread.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
UPLOAD_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {
    409: "the key's model or storage quota is reached (quota-models, quota-storage)",
    413: "the upload exceeds SNNCONV_MAX_UPLOAD_MB",
    422: "invalid form fields, or the file was rejected by pre-flight",
})
LIST_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {422: "invalid offset or limit"})
GET_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {404: "no model with this id"})
DELETE_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {
    404: "no model with this id",
    409: "queued or running jobs use the model (model-in-use)",
})


def _refuse_oversized_request(request: Request, limit_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes + MULTIPART_OVERHEAD_BYTES:
        raise files.upload_too_large(limit_bytes)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelPublic,
             responses=UPLOAD_PROBLEMS)
async def upload(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    owner: OwnerDep,
    file: Annotated[list[UploadFile], File(min_length=1, description=(
        ".onnx, .safetensors or a state_dict file; or an .onnx with its external data files "
        "(several 'file' parts, or one zip/tar of them)"))],
    arch: Annotated[str | None, Form(
        # what a job's JobSpec.arch accepts, so a stored arch fits its column and every
        # database can store it (PostgreSQL refuses NUL)
        max_length=ARCH_MAX_CHARS, pattern=PRINTABLE_PATTERN,
        description="zoo architecture for weights-only files")] = None,
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> ModelRecord:
    """Upload a model; it is parsed (never executed) and checked for convertibility.

    An ONNX model with external data is stored as one self-contained ``model.onnx``.
    """
    _refuse_oversized_request(request, settings.max_upload_bytes)
    # database calls go to a thread: on the event loop a busy database would stall every
    # other request while this one waits
    await asyncio.to_thread(require_model_room, session, owner, settings)
    with files.private_folder(settings.uploads_dir) as folder:
        prepared = await uploads.prepare_model(file, folder, settings.max_upload_bytes)
        return await model_store.store_model(session, settings, owner, prepared.staged,
                                             arch=arch or None, name=name,
                                             filename=prepared.filename)


@router.get("", response_model=ListPublic[ModelPublic], responses=LIST_PROBLEMS)
def list_models(session: SessionDep, owner: OwnerDep, offset: NonNegative = 0,
                limit: PageSize = 50) -> dict:
    """This key's uploaded models, newest first."""
    mine = ModelRecord.owner_id == owner.id
    rows = session.scalars(
        select(ModelRecord).where(mine).order_by(ModelRecord.created_at.desc()).offset(offset)
        .limit(limit)).all()
    count = session.scalar(select(func.count()).select_from(ModelRecord).where(mine))
    return {"data": rows, "count": count}


@router.get("/{model_id}", response_model=ModelPublic, responses=GET_PROBLEMS)
def get_model(model_id: str, session: SessionDep, owner: OwnerDep) -> ModelRecord:
    """One uploaded model with its pre-flight report."""
    return get_model_or_404(session, model_id, owner)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=DELETE_PROBLEMS)
def delete_model(model_id: str, session: SessionDep, settings: SettingsDep,
                 owner: OwnerDep) -> Response:
    """Delete a model and its file; refused while queued or running jobs use it."""
    model = get_model_or_404(session, model_id, owner)
    busy = session.scalar(select(func.count()).select_from(JobRecord).where(
        JobRecord.model_id == model_id,
        JobRecord.status.in_([JobStatus.queued, JobStatus.running])))
    if busy:
        raise ProblemError(409, "model-in-use", "Model in use",
                           f"{busy} unfinished job(s) use this model; cancel them or wait")
    session.delete(model)
    session.commit()
    files.remove_tree(files.model_dir(settings.uploads_dir, model_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
