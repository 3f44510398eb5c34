"""Progress events that the pipeline reports to its caller (CLI bar, Celery task, tests)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field


class ProgressEvent(BaseModel):
    stage: str = Field(description="load | calibrate | finetune | convert | simulate | report")
    progress: float = Field(ge=0.0, le=1.0, description="overall fraction done")
    message: str = ""
    method: str | None = None
    partial_top1: list[float] | None = Field(
        None, description="accuracy per t so far for `method` (while simulating)"
    )


ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """Default callback: does nothing."""
