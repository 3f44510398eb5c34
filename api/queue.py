"""The Celery application both sides share: the API sends jobs with it, the worker runs them.

Creating it imports Celery and the settings only, never torch, so the API process stays light.
The worker adds its task module (``worker.celery_app``); the API never imports the worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from api.settings import Settings

TASK_NAME = "snnconv.run_job"


def _transport_options(settings: Settings) -> dict:
    # Redis redelivers an unacknowledged message after the visibility timeout; kombu's SQL
    # transport has no such timer and hands these options to create_engine, so none there.
    return {} if settings.embedded else {"visibility_timeout": settings.visibility_timeout_s}


def create_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app for ``settings``: JSON only, late acks, one job per worker at a time.

    ``include`` names the task modules a worker imports at start; a sender needs none.
    """
    celery = Celery("snnconv", broker=settings.broker_url, include=list(include))
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # job state lives in our own database, not a result backend
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_proc_alive_timeout=settings.worker_start_timeout_s,
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
