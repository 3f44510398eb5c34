"""The dataset registry with each dataset's availability on this server."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SettingsDep
from api.problems import Problem, ProblemError
from api.schemas import ListPublic
from api.settings import Settings
from core.datasets import DatasetStatus, catalog
from core.errors import DatasetUnavailable

router = APIRouter(prefix="/datasets", tags=["datasets"])


def _known(settings: Settings) -> dict[str, DatasetStatus]:
    return {entry.name: entry for entry in catalog(settings.datasets_dir)}


def _unknown_detail(name: str, known: dict[str, DatasetStatus]) -> str:
    return f"no dataset named {name!r}; known: {', '.join(sorted(known))}"


def require_dataset(name: str, settings: Settings) -> DatasetStatus:
    """The catalog entry a job asks for; a 422 problem when unknown or its files are missing."""
    known = _known(settings)
    if name not in known:
        raise DatasetUnavailable(_unknown_detail(name, known), code="unknown-dataset")
    if not known[name].available:
        raise DatasetUnavailable(
            f"dataset {name!r} is registered but its files are not in the server's dataset "
            "directory (SNNCONV_DATASETS_DIR); see GET /v1/datasets for what is available")
    return known[name]


@router.get("", response_model=ListPublic[DatasetStatus])
def list_datasets(settings: SettingsDep) -> dict:
    """Every registered dataset and whether this server has its files."""
    entries = catalog(settings.datasets_dir)
    return {"data": entries, "count": len(entries)}


@router.get("/{name}", response_model=DatasetStatus,
            responses={404: {"model": Problem, "description": "unknown dataset"}})
def get_dataset(name: str, settings: SettingsDep) -> DatasetStatus:
    """One dataset's catalog entry."""
    known = _known(settings)
    if name not in known:
        raise ProblemError(404, "dataset-not-found", "Dataset not found",
                           _unknown_detail(name, known))
    return known[name]
