"""``snnconv serve``, ``snnconv worker`` and ``snnconv migrate``.

``core.cli`` imports :func:`add_service_commands` lazily, so core never depends on the
service; ``python -m api.cli`` runs the same commands on its own.  Each command imports what
it runs when it runs, so building the parser (for every ``snnconv`` command) stays cheap.  The
worker is started by its Celery app's name, as Compose starts it: ``api`` never imports
``worker``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

WORKER_STOP_TIMEOUT_S = 15
WORKER_APP = "worker.celery_app"
# `serve` restarts its embedded worker when it exits: after 1 s, then longer for a worker
# that keeps exiting; one that ran WORKER_STABLE_S starts over from the first delay.
WORKER_RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
WORKER_STABLE_S = 60.0

log = logging.getLogger(__name__)


def _apply_overrides(data_dir: Path | None) -> None:
    """Command-line options win over the environment, for this process and its worker."""
    from api.settings import get_settings

    if data_dir is not None:
        os.environ["SNNCONV_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()


def worker_arguments(concurrency: int | None = None, loglevel: str = "INFO",
                     pool: str | None = None) -> list[str]:
    """Celery's ``worker`` sub-command line for the configured queue and concurrency."""
    from api.settings import get_settings

    settings = get_settings()
    arguments = ["worker", "-Q", settings.queue, "--concurrency",
                 str(concurrency or settings.worker_concurrency), "--loglevel", loglevel]
    return arguments + (["--pool", pool] if pool else [])


def celery_arguments(concurrency: int | None = None, loglevel: str = "INFO",
                     pool: str | None = None) -> list[str]:
    """``celery``'s arguments that run a worker of the worker's app (as Compose runs it)."""
    return ["-A", WORKER_APP, *worker_arguments(concurrency, loglevel, pool)]


def worker_command(concurrency: int | None = None, loglevel: str = "INFO",
                   pool: str | None = None) -> list[str]:
    """The worker process's command line (the Compose worker runs the same thing)."""
    return [sys.executable, "-m", "celery", *celery_arguments(concurrency, loglevel, pool)]


def freeze_start_up_objects() -> None:
    """Move everything the start-up imported (torch and onnx among it: ~330,000 objects) out
    of the garbage collector's sight.  Otherwise every full collection walks them all, about
    250 ms on the 2-core machine with the GIL held, and every request in flight waits: the
    periodic 100-400 ms stalls of status polls in `make load`."""
    gc.collect()
    gc.freeze()


def serve(host: str = "127.0.0.1", port: int = 8000, *, with_worker: bool | None = None,
          data_dir: Path | None = None, loglevel: str = "info") -> None:
    """Run the API with uvicorn; with no REDIS_URL also a Celery worker on the embedded broker."""
    import uvicorn

    from api.db import make_engine, migrate
    from api.main import create_app
    from api.settings import get_settings

    _apply_overrides(data_dir)
    settings = get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)  # before the worker starts, so its first job finds the tables
    engine.dispose()
    supervisor = None
    if settings.embedded if with_worker is None else with_worker:
        _unwind_on_sigterm()
        supervisor = WorkerSupervisor(worker_command(loglevel=loglevel.upper())).start()
    try:
        app = create_app(settings)
        app.state.worker_supervisor = supervisor  # /readyz is 503 while the worker is down
        freeze_start_up_objects()
        print(f"snnconv serve: the demo page is at {page_url(host, port)}", flush=True)
        uvicorn.run(app, host=host, port=port, log_level=loglevel)
    finally:
        if supervisor is not None:
            supervisor.stop()


def page_url(host: str, port: int) -> str:
    """The address a browser opens (a wildcard bind is reached through loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def build_examples(data_dir: Path | None = None) -> None:
    """Build the example models the page offers into the settings' examples folder."""
    from api.settings import get_settings
    from core.examples import build_examples as build

    _apply_overrides(data_dir)
    for path in build(get_settings().examples_path):
        print(f"example ready: {path}")


WORKER_NICENESS = 19


class WorkerSupervisor:
    """Runs ``serve``'s embedded worker and restarts it, with a backoff, whenever it exits.

    :attr:`alive` says whether the worker process runs now (``/readyz`` reads it); a job that
    worker was running when it died is re-queued by the API's reaper once its heartbeat is
    stale (the embedded broker never redelivers a fetched message).
    """

    def __init__(self, command: Sequence[str], delays_s: Sequence[float] = WORKER_RESTART_DELAYS_S,
                 stable_s: float = WORKER_STABLE_S):
        self._command, self._delays_s, self._stable_s = list(command), tuple(delays_s), stable_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor",
                                        daemon=True)
        self.restarts = 0
        self.last_exit: int | None = None
        self._restart_at: float | None = None

    def start(self) -> WorkerSupervisor:
        with self._lock:
            self._process = self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> subprocess.Popen:
        # niced: on a shared machine the API's answers come before the jobs' arithmetic
        return subprocess.Popen(self._command, preexec_fn=lambda: os.nice(WORKER_NICENESS))

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    def describe(self) -> str:
        """One line for /readyz."""
        if self.alive:
            return f"running (pid {self.pid}, {self.restarts} restarts)"
        when = ("" if self._restart_at is None else
                f"; restarting in {max(0.0, self._restart_at - time.monotonic()):.0f} s")
        return f"worker process exited with code {self.last_exit}{when}"

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            process, started = self._process, time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - started >= self._stable_s else failures + 1
            delay = self._delays_s[min(max(failures - 1, 0), len(self._delays_s) - 1)]
            self.last_exit, self._restart_at = code, time.monotonic() + delay
            log.warning("the embedded worker exited with code %s; restarting it in %g s",
                        code, delay)
            print(f"snnconv serve: the worker exited with code {code}; restarting it in "
                  f"{delay:g} s", file=sys.stderr, flush=True)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
                self.restarts += 1
                self._restart_at = None

    def stop(self) -> None:
        """Stop supervising and stop the worker (warm shutdown, then kill)."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None:
            _stop(process)
        if self._thread.is_alive():
            self._thread.join(WORKER_STOP_TIMEOUT_S)


def _unwind_on_sigterm() -> None:
    """Let SIGTERM unwind like Ctrl-C, so ``serve`` stops its worker before it exits.

    uvicorn re-raises the signal it caught once it has shut down; with the default handler
    that would end the process on the spot and leave the worker running.
    """
    def _raise_exit(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise_exit)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()  # Celery's warm shutdown: the running job is re-queued (acks late)
    try:
        process.wait(WORKER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_worker(concurrency: int | None = None, loglevel: str = "INFO",
               pool: str | None = None, data_dir: Path | None = None) -> None:
    """Run a Celery worker for the configured broker in this process (blocks)."""
    _apply_overrides(data_dir)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    from celery.bin.celery import celery

    celery.main(celery_arguments(concurrency, loglevel, pool), prog_name="celery",
                standalone_mode=False)


def run_migrations(data_dir: Path | None = None) -> None:
    """Create or upgrade the job store's schema."""
    from api.db import make_engine, migrate
    from api.settings import get_settings

    _apply_overrides(data_dir)
    migrate(make_engine(get_settings().sqlalchemy_url))


_DATA_DIR_HELP = ("uploads, results and the SQLite files (default: $SNNCONV_DATA_DIR, "
                  "else .snnconv)")


def add_service_commands(subparsers) -> None:
    """Add ``serve``, ``worker``, ``migrate``, ``examples`` and ``keys`` to an argparse subparsers
    object."""
    from api.keys import add_keys_command

    serve_parser = subparsers.add_parser(
        "serve", help="run the REST API (and, with no REDIS_URL, an embedded worker)")
    serve_parser.add_argument("--host", default="127.0.0.1",
                              help="address to listen on (default: %(default)s)")
    serve_parser.add_argument("--port", type=int, default=8000,
                              help="port to listen on (default: %(default)s)")
    serve_parser.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    serve_parser.add_argument("--worker", dest="with_worker", action=argparse.BooleanOptionalAction,
                              default=None, help="start a worker (default: only without REDIS_URL)")
    serve_parser.add_argument("--log-level", default="info",
                              help="uvicorn log level (default: %(default)s)")
    serve_parser.set_defaults(handler=lambda a: serve(
        a.host, a.port, with_worker=a.with_worker, data_dir=a.data_dir, loglevel=a.log_level))

    worker_parser = subparsers.add_parser("worker", help="run a Celery worker (queue: gpu)")
    worker_parser.add_argument("--concurrency", type=int, default=None,
                               help="jobs at once (default: $SNNCONV_WORKER_CONCURRENCY, else 1)")
    worker_parser.add_argument("--pool", default=None,
                               help="Celery pool: prefork, solo or threads (default: prefork)")
    worker_parser.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    worker_parser.add_argument("--log-level", default="INFO",
                               help="Celery log level (default: %(default)s)")
    worker_parser.set_defaults(handler=lambda a: run_worker(
        a.concurrency, a.log_level.upper(), a.pool, a.data_dir))

    migrate_parser = subparsers.add_parser("migrate", help="create/upgrade the job store schema")
    migrate_parser.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    migrate_parser.set_defaults(handler=lambda a: run_migrations(a.data_dir))
    examples_parser = subparsers.add_parser(
        "examples", help="build the example models the demo page offers (about a minute, once)")
    examples_parser.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    examples_parser.set_defaults(handler=lambda a: build_examples(a.data_dir))
    add_keys_command(subparsers, _DATA_DIR_HELP)


def main(argv: list[str] | None = None) -> None:
    """``python -m api.cli serve|worker|migrate``."""
    parser = argparse.ArgumentParser(prog="snnconv")
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
