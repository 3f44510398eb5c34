"""The Celery configuration the issue asks for, and prefork safety (no torch in the parent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.queue import TASK_NAME, create_celery
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_redis_configuration():
    settings = Settings(redis_url="redis://127.0.0.1:6379/5", soft_time_limit_s=50,
                        hard_time_limit_s=60, visibility_timeout_s=70)
    conf = create_celery(settings).conf
    assert conf.broker_url == "redis://127.0.0.1:6379/5"
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == (
        "json", "json", ["json"])
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_routes[TASK_NAME] == {"queue": "gpu"} and conf.task_default_queue == "gpu"
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (50, 60)
    assert conf.broker_transport_options == {"visibility_timeout": 70}


def test_embedded_configuration_uses_a_sqlite_broker_in_the_data_dir(tmp_path):
    conf = create_celery(Settings(data_dir=tmp_path, redis_url=None)).conf
    assert conf.broker_url == f"sqla+sqlite:///{tmp_path.resolve()}/broker.sqlite"
    assert conf.broker_transport_options == {}  # the SQL transport would pass them to SQLAlchemy


def test_importing_the_task_module_does_not_import_torch():
    # The prefork parent imports this module; CUDA must first be touched in a child.
    probe = ("import sys, os, worker.tasks; "
             "print('torch' in sys.modules, os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.split() == ["False", "1"]
