"""The demo page at ``/`` and its static assets at ``/static``: same origin as the API.

The page is a small static bundle (``api/static``: HTML, one ES module, one stylesheet) that
talks to ``/v1`` like any client.  Its responses carry a Content-Security-Policy that allows
only this origin's scripts, styles and connections, so text a user supplied (a model's name,
an error's detail) can never run as code even if it reached the DOM unescaped.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
STATIC_PREFIX = "/static"
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                           "base-uri 'none'; form-action 'self'")
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a new release's page and assets arrive together
}

router = APIRouter(include_in_schema=False)


class _StaticAssets(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


@router.get("/")
def index() -> FileResponse:
    """The demo page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(STATIC_PREFIX, _StaticAssets(directory=STATIC_DIR), name="static")
