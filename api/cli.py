"""``snnconv serve``, ``snnconv worker`` and ``snnconv migrate``.

``core.cli`` imports :func:`add_service_commands` lazily, so core never depends on the
service; ``python -m api.cli`` runs the same commands on its own.  Each command imports what
it runs when it runs, so building the parser (for every ``snnconv`` command) stays cheap.  The
worker is started by its Celery app's name, as Compose starts it: ``api`` never imports
``worker``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

WORKER_STOP_TIMEOUT_S = 15
WORKER_APP = "worker.celery_app"


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
    worker = None
    if settings.embedded if with_worker is None else with_worker:
        _unwind_on_sigterm()
        worker = subprocess.Popen(worker_command(loglevel=loglevel.upper()))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=loglevel)
    finally:
        if worker is not None:
            _stop(worker)


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
    """Add ``serve``, ``worker`` and ``migrate`` to an argparse subparsers object."""
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


def main(argv: list[str] | None = None) -> None:
    """``python -m api.cli serve|worker|migrate``."""
    parser = argparse.ArgumentParser(prog="snnconv")
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
