"""Dependency aliases, so handlers read like their contract."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from celery import Celery
from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.settings import Settings


# async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request that
# these two (no I/O) need not pay
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


T = TypeVar("T")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


async def get_sessions(request: Request) -> sessionmaker:
    return request.app.state.sessions


async def in_session(sessions: sessionmaker, work: Callable[[Session], T]) -> T:
    """``work(session)`` in the thread pool, with a session of its own: the whole request's
    database work in one thread hop.  A plain ``def`` handler with ``SessionDep`` pays three
    (opening the session, the handler, closing it); the polled endpoints use this instead."""
    def run() -> T:
        with sessions() as session:
            return work(session)
    return await run_in_threadpool(run)


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[sessionmaker, Depends(get_sessions)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
# Pagination: a page holds at most 500 items; offsets are never negative.
PageSize = Annotated[int, Query(ge=1, le=500, description="items per page (at most 500)")]
NonNegative = Annotated[int, Query(ge=0, le=10**9, description="items to skip")]
