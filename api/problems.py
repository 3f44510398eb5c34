"""RFC 9457 problem details: every error the API returns is ``application/problem+json``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    DatasetUnavailable,
    InvalidSpec,
    ModelRejected,
    SnnconvError,
    TooLarge,
    UnsupportedModel,
    one_line,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document, plus our stable ``code`` slug."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="for validation problems: one entry per invalid field"
    )
    stage: str | None = Field(
        None, description="for a failed job: the pipeline stage it failed in "
                          "(load | calibrate | finetune | convert | simulate | report)"
    )


class ProblemError(Exception):
    """Raised by handlers for problems that are about HTTP (not found, conflict, ...)."""

    def __init__(self, status: int, code: str, title: str, detail: str,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.headers = headers  # e.g. WWW-Authenticate on a 401, Retry-After on a 429


# Problems every /v1 route that acts for an API key may answer, besides its own.
KEYED_ROUTE_PROBLEMS = {
    400: "the URL holds a NUL character (invalid-url), or the body could not be parsed",
    401: "no valid API key (api-key-required, invalid-authorization, invalid-api-key)",
    429: "this key's rate limit: retry after Retry-After seconds (rate-limited)",
    503: "the database is unreachable or no connection was free in time: retry after "
         "Retry-After seconds (database-unavailable, database-busy)",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# FastAPI's own 422 schema, unused once every 422 is documented as a problem
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def problem_responses(*groups: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI ``responses`` for the problems it answers: ``{status: description}``
    groups, later ones winning.  :func:`document_problems` gives them their media type."""
    merged: dict[int, str] = {}
    for group in groups:
        merged.update(group)
    return {status: {"model": Problem, "description": text}
            for status, text in sorted(merged.items())}


def _is_error_status(status: str) -> bool:
    return status[:1] in {"4", "5"}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Document every 4xx/5xx response of every operation as what it is: an
    ``application/problem+json`` :class:`Problem`.

    FastAPI documents a response's ``model`` as ``application/json`` and adds its own 422
    schema to every route with parameters; neither is what the API sends.
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if _is_error_status(str(status)):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}}
    components = schema.get("components", {}).get("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:  # HTTPValidationError first: it refers to the other
        if name in components and f'"#/components/schemas/{name}"' not in json.dumps(schema):
            del components[name]
    return schema


def problem_type(code: str) -> str:
    return f"urn:snnconv:problem:{code}"


def make_problem(status: int, code: str, title: str, detail: str, instance: str | None = None,
                 errors: list[dict[str, Any]] | None = None,
                 stage: str | None = None) -> Problem:
    return Problem(type=problem_type(code), title=title, status=status, detail=detail,
                   instance=instance, code=code, errors=errors, stage=stage)


def problem_from_error(error: SnnconvError, instance: str | None = None,
                       stage: str | None = None) -> Problem:
    """The problem document for a core error (also stored on a failed job, with its stage)."""
    return make_problem(status_for(error), error.code, error.title, one_line(error, 2000),
                        instance, stage=stage)


def status_for(error: SnnconvError) -> int:
    """HTTP status of a core error: the user's input was understood but cannot be used."""
    if isinstance(error, TooLarge):
        return 413
    if isinstance(error, ModelRejected | UnsupportedModel | DatasetUnavailable | InvalidSpec):
        return 422
    return 500


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _field_errors(errors) -> list[dict[str, Any]]:
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


def _validation_problem(errors, instance: str) -> Problem:
    fields = _field_errors(errors)
    names = ", ".join(".".join(str(p) for p in item["loc"]) or "body" for item in fields)
    return make_problem(422, "validation-error", "Request validation failed",
                        f"invalid fields: {names}", instance, errors=fields)


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error path through problem+json."""
    install_fallback_handler(app)

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(make_problem(exc.status, exc.code, exc.title, exc.detail,
                                             request.url.path), headers=exc.headers)

    @app.exception_handler(SnnconvError)
    async def _core(request: Request, exc: SnnconvError) -> JSONResponse:
        return problem_response(problem_from_error(exc, request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(_validation_problem(exc.errors(), request.url.path))

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError) -> JSONResponse:
        return problem_response(_validation_problem(exc.errors(), request.url.path))

    def retry_later(code: str, title: str, detail: str, seconds: int):
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return problem_response(make_problem(503, code, title, detail, request.url.path),
                                    headers={"Retry-After": str(seconds)})
        return handler

    app.add_exception_handler(SQLAlchemyTimeout, retry_later(
        "database-busy", "Database busy", "no database connection was free in time; retry "
        "shortly", 2))
    # The database refused or dropped the connection (down, restarting, not accepting
    # connections): the request may well succeed shortly, so a 503 to retry, not a 500.
    unavailable = retry_later("database-unavailable", "Database unavailable",
                              "the database could not be reached; retry shortly", 5)
    app.add_exception_handler(OperationalError, unavailable)
    app.add_exception_handler(InterfaceError, unavailable)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(
            make_problem(exc.status_code, code, str(exc.detail), str(exc.detail),
                         request.url.path),
            headers=getattr(exc, "headers", None),
        )


def install_fallback_handler(app: FastAPI) -> None:
    """Unexpected exceptions become a 500 problem without leaking internals."""

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(make_problem(
            500, "internal-error", "Internal server error",
            "the server failed unexpectedly; the error has been logged", request.url.path))
