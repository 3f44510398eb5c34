"""Liveness and readiness probes (used by Compose health checks).

``/readyz`` also reports the embedded worker when ``snnconv serve`` supervises one: the
supervisor sits in ``app.state.worker_supervisor`` (see ``api.cli.WorkerSupervisor``) and,
while its worker is down (between an exit and its restart), the service is not ready.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from api.db import ping
from api.deps import CeleryDep
from api.problems import Problem, make_problem, problem_response
from api.schemas import Health

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_S = 3.0


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


def _check_broker(celery) -> None:
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)


@router.get("/readyz", response_model=Health,
            responses={503: {"model": Problem, "description": "database or broker unreachable, "
                             "or the embedded worker is down"}})
async def readyz(request: Request, celery: CeleryDep):
    """The database and the broker both answer (and the embedded worker, if any, runs)."""
    checks: dict[str, str] = {}
    for name, check in (("database", lambda: ping(request.app.state.engine)),
                        ("broker", lambda: _check_broker(celery))):
        try:
            await asyncio.wait_for(asyncio.to_thread(check), timeout=BROKER_TIMEOUT_S + 2)
            checks[name] = "ok"
        except Exception as error:  # noqa: BLE001 - any failure means "not ready"
            checks[name] = f"{type(error).__name__}: {error}"
    failing = [name for name, state in checks.items() if state != "ok"]
    supervisor = getattr(request.app.state, "worker_supervisor", None)
    worker_down = supervisor is not None and not supervisor.alive
    if supervisor is not None:
        checks["worker"] = "ok" if not worker_down else supervisor.describe()
    if failing or worker_down:
        reasons = [f"unreachable: {', '.join(failing)}"] if failing else []
        reasons += ["the embedded worker is down"] if worker_down else []
        problem = make_problem(503, "not-ready", "Service not ready",
                               "; ".join(reasons) + "; " +
                               "; ".join(f"{k}: {v}" for k, v in checks.items()), "/readyz")
        return problem_response(problem)
    return Health(status="ok", checks=checks)
