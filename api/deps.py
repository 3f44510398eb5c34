"""Dependency aliases, so handlers read like their contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from api.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
# Pagination: a page holds at most 500 items; offsets are never negative.
PageSize = Annotated[int, Query(ge=1, le=500, description="items per page (at most 500)")]
NonNegative = Annotated[int, Query(ge=0, le=10**9, description="items to skip")]
