"""Builds the FastAPI application: routers under /v1, problem+json errors (in the OpenAPI
too), OpenAPI ids, and the demo page at /."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from api.auth import KeyCache, RateLimiter
from api.db import make_engine, migrate, session_factory
from api.limits import install_request_limits
from api.problems import document_problems, install_problem_handlers
from api.queue import create_celery
from api.routes import datasets, examples, health, jobs, models, page
from api.settings import Settings, get_settings
from api.urls import API_PREFIX


def unique_operation_id(route: APIRoute) -> str:
    """``{tag}-{name}``, so generated clients get readable method names."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def install_problem_openapi(app: FastAPI) -> None:
    """The app's OpenAPI documents its errors as the problem+json documents they are."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (the environment's when omitted)."""
    settings = settings or get_settings()
    # Any torch.load in this process (an upload's pre-flight) refuses pickled code, as in a worker.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    engine = make_engine(settings.sqlalchemy_url, settings.db_pool_size, settings.db_max_overflow)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        migrate(engine)
        from api.reaper import start_reaper, stop_reaper

        reaper = start_reaper(app)  # re-queues jobs whose worker stopped beating
        yield
        await stop_reaper(reaper)
        engine.dispose()

    app = FastAPI(
        title="snnconv",
        summary="Convert trained ANNs to rate-coded spiking networks; accuracy per time step.",
        version="0.1.0",
        lifespan=lifespan,
        generate_unique_id_function=unique_operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.celery = create_celery(settings)
    app.state.rate_limiter = RateLimiter()
    app.state.key_cache = KeyCache(settings.key_cache_s)
    install_request_limits(app, settings)  # before CORS, which must stay outermost
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"],
                           expose_headers=["Location"])
    install_problem_handlers(app)
    install_problem_openapi(app)
    for router in (models.router, jobs.router, datasets.router, examples.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(health.router)
    page.install(app)
    return app
