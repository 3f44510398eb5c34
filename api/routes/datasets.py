"""The dataset registry with each dataset's availability on this server."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SettingsDep
from api.lookups import known_datasets, unknown_dataset_detail
from api.problems import ProblemError, problem_responses
from api.schemas import ListPublic
from core.datasets import DatasetStatus, catalog

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.get("", response_model=ListPublic[DatasetStatus])
def list_datasets(settings: SettingsDep) -> dict:
    """Every registered dataset and whether this server has its files."""
    entries = catalog(settings.datasets_dir)
    return {"data": entries, "count": len(entries)}


@router.get("/{name}", response_model=DatasetStatus, responses=problem_responses({
    400: "the URL holds a NUL character (invalid-url)",
    404: "unknown dataset (dataset-not-found)",
}))
def get_dataset(name: str, settings: SettingsDep) -> DatasetStatus:
    """One dataset's catalog entry."""
    known = known_datasets(settings)
    if name not in known:
        raise ProblemError(404, "dataset-not-found", "Dataset not found",
                           unknown_dataset_detail(name, known))
    return known[name]
