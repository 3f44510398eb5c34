"""Request limits enforced before any work: the body's size, and NUL-free URLs.

A pure ASGI middleware, so it sees every request before routing and body parsing:

* ``POST /v1/models`` may carry ``max_upload_bytes`` plus the multipart framing; every other
  request at most ``max_json_body_kb`` KiB.  A declared ``Content-Length`` over the cap is
  refused unread; otherwise the bytes are counted as they arrive (chunked bodies included) and
  the request is stopped with 413 at the chunk that crosses the cap, before the multipart
  parser spools the rest to disk.
* A URL path or query with a NUL character is refused with 400 (PostgreSQL cannot store or
  compare strings holding NUL, so it would otherwise end as a 500).

Every refusal is the app's problem+json.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import files
from api.problems import Problem, make_problem, problem_from_error, problem_response
from api.routes.models import MULTIPART_OVERHEAD_BYTES
from api.settings import Settings
from api.urls import API_PREFIX

UPLOAD_PATH = f"{API_PREFIX}/models"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` at the chunk that crosses the cap.

    An HTTPException, because FastAPI turns any other error raised while it reads a body into
    a 400 "error parsing the body"; its own handler (installed below) renders the problem.
    """

    def __init__(self, problem: Problem) -> None:
        super().__init__(413, problem.detail)
        self.problem = problem


def json_body_limit_bytes(settings: Settings) -> int:
    return settings.max_json_body_kb * 1024


def upload_body_limit_bytes(settings: Settings) -> int:
    return settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


def _too_large(scope: Scope, settings: Settings) -> tuple[int, Problem]:
    """The body cap of this request and the problem that refuses a body over it."""
    path = scope.get("path", "")
    if scope.get("method") == "POST" and path.rstrip("/") == UPLOAD_PATH:
        return upload_body_limit_bytes(settings), problem_from_error(
            files.upload_too_large(settings.max_upload_bytes), path)
    limit_kb = settings.max_json_body_kb
    return json_body_limit_bytes(settings), make_problem(
        413, "too-large", "Request body too large",
        f"the request body exceeds the limit of {limit_kb} KiB; send a smaller request "
        "(the server's limit is SNNCONV_MAX_JSON_BODY_KB)", path)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _has_nul(scope: Scope) -> bool:
    query = scope.get("query_string", b"").lower()
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query


class RequestLimitsMiddleware:
    """See the module docstring; ``settings`` are the app's."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await problem_response(make_problem(
                400, "invalid-url", "Invalid URL",
                "the URL path or query contains a NUL character", scope.get("path")))(
                    scope, receive, send)
            return
        limit, problem = _too_large(scope, self.settings)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(problem, scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(problem)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as refused:
            if started:
                raise
            await _refuse(refused.problem, scope, receive, send)


async def _refuse(problem: Problem, scope: Scope, receive: Receive, send: Send) -> None:
    # the client may still be sending: tell it not to reuse the connection
    await problem_response(problem, headers={"Connection": "close"})(scope, receive, send)


def install_request_limits(app: FastAPI, settings: Settings) -> None:
    """Add the middleware and the handler that renders a body stopped mid-stream.

    Call it before adding CORS, so CORS stays outermost and its headers reach a 413 too.
    """
    app.add_middleware(RequestLimitsMiddleware, settings=settings)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem_response(exc.problem, headers={"Connection": "close"})
