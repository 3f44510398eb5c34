"""Lookups the routes and the worker share: a stored model, job or dataset, or a problem.

Routes import these instead of importing each other; the worker reads a model's file path here.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from api import files
from api.db import JobRecord, ModelRecord
from api.keys import Owner
from api.problems import ProblemError
from api.settings import Settings
from core.datasets import DatasetStatus, catalog
from core.errors import DatasetUnavailable


def _get_or_404(session: Session, record: type, key: str, owner: Owner, kind: str,
                listing: str):
    found = session.get(record, key)
    # another key's model or job is answered exactly like one that does not exist
    if found is None or found.owner_id != owner.id:
        raise ProblemError(404, f"{kind}-not-found", f"{kind.capitalize()} not found",
                           f"no {kind} with id {key!r}; list them with GET {listing}")
    return found


def get_model_or_404(session: Session, model_id: str, owner: Owner) -> ModelRecord:
    return _get_or_404(session, ModelRecord, model_id, owner, "model", "/v1/models")


def get_job_or_404(session: Session, job_id: str, owner: Owner) -> JobRecord:
    return _get_or_404(session, JobRecord, job_id, owner, "job", "/v1/jobs")


def model_file(uploads_dir: Path, model: ModelRecord) -> Path:
    """Where an uploaded model's file is stored."""
    return files.model_dir(uploads_dir, model.id) / model.filename


def known_datasets(settings: Settings) -> dict[str, DatasetStatus]:
    return {entry.name: entry for entry in catalog(settings.datasets_dir)}


def unknown_dataset_detail(name: str, known: dict[str, DatasetStatus]) -> str:
    return f"no dataset named {name!r}; known: {', '.join(sorted(known))}"


def require_dataset(name: str, settings: Settings) -> DatasetStatus:
    """The catalog entry a job asks for; a 422 problem when unknown or its files are missing."""
    known = known_datasets(settings)
    if name not in known:
        raise DatasetUnavailable(unknown_dataset_detail(name, known), code="unknown-dataset")
    if not known[name].available:
        raise DatasetUnavailable(
            f"dataset {name!r} is registered but its files are not in the server's dataset "
            "directory (SNNCONV_DATASETS_DIR); see GET /v1/datasets for what is available")
    return known[name]
