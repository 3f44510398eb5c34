"""Real services for the integration tests: uvicorn, a Celery worker, Redis and PostgreSQL.

Two stacks, each started once per module:
- ``redis-postgres``: ``python -m api.cli serve --no-worker`` + ``python -m api.cli worker``
  on Redis 127.0.0.1:6379 (DB index 9, flushed) and PostgreSQL 127.0.0.1:5432 database
  ``test`` (schema ``snnconv_it``, dropped and recreated);
- ``embedded``: ``python -m api.cli serve`` alone (SQLite store, SQLite broker, its worker).
Without Redis/PostgreSQL the first stack is skipped with what is missing; under CI=true it
fails instead, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.services import require, reset_external_state

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/9"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_SCHEMA = "snnconv_it"
DATABASE_URL = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{POSTGRES_SCHEMA}"
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
NEEDS = ("the redis-postgres integration stack needs Redis on 127.0.0.1:6379 and PostgreSQL "
         "on 127.0.0.1:5432 with a database 'test' that user 'postgres' can reach without a "
         "password (see .ci/run for how CI starts them)")


def _unreachable() -> str | None:
    """Why the external services cannot be used, or None when both answer."""
    import psycopg
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:  # noqa: BLE001 - any failure: report it
        return f"Redis: {type(error).__name__}: {error}"
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except Exception as error:  # noqa: BLE001
        return f"PostgreSQL: {type(error).__name__}: {error}"
    return None


def _require_external_services() -> None:
    require(NEEDS, _unreachable())


def _clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SNNCONV_") and key not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(SNNCONV_DATA_DIR=str(data_dir), SNNCONV_PROGRESS_INTERVAL_S="0.05",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               **extra)
    return env


@dataclass
class Service:
    """A running stack: its base URL, data directory and processes."""

    mode: str
    url: str
    data_dir: Path
    processes: list[subprocess.Popen]
    logs: list[Path]
    api_key: str = ""

    def client(self) -> httpx.Client:
        """A client that sends the service's API key (made with `snnconv keys create`)."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.api_key}"})

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}"
                         for log in self.logs if log.exists())


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as stream:
        return subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                                stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (warm shutdown), then SIGKILL to the process group we created."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its group: the server and its worker children
    except ProcessLookupError:
        pass
    process.wait()


def create_api_key(env: dict[str, str], name: str = "integration") -> str:
    """A new key's secret, made the way an operator does: ``snnconv keys create``."""
    made = subprocess.run([sys.executable, "-m", "api.cli", "keys", "create", "--name", name],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def _wait_ready(service: Service) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for process in service.processes:
            if process.poll() is not None:
                pytest.fail(f"{service.mode}: a service process exited\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{service.mode}: not ready after {STARTUP_TIMEOUT_S} s\n{service.log_tail()}")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path) -> dict[str, str]:
    """Environment for a service process on the embedded stack in tmp_path."""
    return _clean_env(tmp_path)


@pytest.fixture(scope="module", params=["redis-postgres", "embedded"])
def service(request, tmp_path_factory):
    """A running service over HTTP; both stacks run every test that uses it."""
    mode = request.param
    data_dir = tmp_path_factory.mktemp(f"service-{mode}")
    port = _free_port()
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if mode == "redis-postgres":
        _require_external_services()
        reset_external_state(REDIS_URL, POSTGRES_SCHEMA)
        env = _clean_env(data_dir, REDIS_URL=REDIS_URL, DATABASE_URL=DATABASE_URL)
        migrated = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], cwd=ROOT,
                                  env=env, capture_output=True, text=True, check=False)
        assert migrated.returncode == 0, migrated.stderr
        logs = [data_dir / "worker.log", data_dir / "api.log"]
        processes = [_start(["worker", "--log-level", "INFO"], env, logs[0]),
                     _start([*serve, "--no-worker"], env, logs[1])]
    else:
        env = _clean_env(data_dir)
        logs = [data_dir / "serve.log"]
        processes = [_start(serve, env, logs[0])]
    running = Service(mode, f"http://127.0.0.1:{port}", data_dir, processes, logs)
    try:
        _wait_ready(running)
        running.api_key = create_api_key(env)
        yield running
    finally:
        for process in reversed(processes):
            _stop(process)
