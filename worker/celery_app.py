"""The Celery application, configured from the same settings as the API.

Start a worker with ``snnconv worker`` or ``celery -A worker.celery_app worker -Q gpu``.
Importing this module never imports torch: the API imports it to send jobs.
"""

from __future__ import annotations

import os

from celery import Celery, signals

from api.settings import Settings, get_settings

TASK_NAME = "snnconv.run_job"

# Any torch.load in this process (and its forked children) refuses pickled code.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


def _transport_options(settings: Settings) -> dict:
    # Redis redelivers an unacknowledged message after the visibility timeout; kombu's SQL
    # transport has no such timer and hands these options to create_engine, so none there.
    return {} if settings.embedded else {"visibility_timeout": settings.visibility_timeout_s}


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``: JSON only, late acks, one job per worker at a time."""
    celery = Celery("snnconv", broker=settings.broker_url, include=["worker.tasks"])
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job state lives in our own store, not a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        task_default_queue=settings.queue,
        task_routes={TASK_NAME: {"queue": settings.queue}},
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.hard_time_limit_s,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return celery


app = create_celery(get_settings())


@signals.worker_init.connect
def _create_embedded_broker_dir(**_kwargs) -> None:
    """The SQLite broker file lives in data_dir, which a fresh install may not have yet."""
    settings = get_settings()
    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
