"""The worker's Celery application: the shared one from ``api.queue``, with the task module.

Start a worker with ``snnconv worker`` or ``celery -A worker.celery_app worker -Q gpu``.
Importing this module never imports torch (the prefork parent imports it).
"""

from __future__ import annotations

import logging
import os
import time

from celery import signals

from api.queue import TASK_NAME, create_celery
from api.settings import get_settings

SHARD_RESULTS_EXPIRE_S = 24 * 3600
WARMED_UP = "pool process warmed up"  # the log line a benchmark waits for

log = logging.getLogger(__name__)

__all__ = ["TASK_NAME", "app"]  # the task's name beside the app that runs it

# Any torch.load in this process (and its forked children) refuses pickled code.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"

app = create_celery(get_settings(), include=["worker.tasks"])
# Sharded evaluation (worker.tasks) joins its shards with a chord, which needs a result
# backend: Redis, beside a Redis broker (the embedded broker has none, so it never shards).
# Only the shard task stores results (the global default ignores them).
if get_settings().redis_url:
    app.conf.update(result_backend=get_settings().redis_url,
                    result_expires=SHARD_RESULTS_EXPIRE_S)


@signals.worker_init.connect
def _create_embedded_broker_dir(**_kwargs) -> None:
    """The SQLite broker file lives in data_dir, which a fresh install may not have yet."""
    settings = get_settings()
    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)


@signals.worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    """The pool process pays its one-time costs (kernel compilation, lazy imports) before its
    first task, not inside it."""
    if get_settings().worker_warm_up:
        from core.pipeline import warm_up

        began = time.monotonic()
        kernels = warm_up()
        log.info("%s in %.1f s (kernels: %s)", WARMED_UP, time.monotonic() - began,
                 ", ".join(kernels) or "none, eager neurons")
