"""Fault injection for tests/worker/test_sharded.py, imported by its workers (``-I``).

``SHARD_FAULTS`` (JSON) maps a job's shard count to ``[index, failures]``: shard ``index`` of
such a job raises on its first ``failures`` tries.  Every try is logged as a line
``<job> <index>`` in ``$SHARD_FAULTS_LOG``, so the test can count the tries per shard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from worker import tasks

_RULES = {int(total): rule for total, rule in json.loads(os.environ.get("SHARD_FAULTS", "{}"))
          .items()}
_LOG = Path(os.environ.get("SHARD_FAULTS_LOG", os.devnull))
_real_run_shard = tasks.run_shard


class InjectedFault(RuntimeError):
    pass


def _tries(job_id: str, index: int) -> int:
    if not _LOG.exists():
        return 0
    return sum(line.split() == [job_id, str(index)] for line in _LOG.read_text().splitlines())


def run_shard(job_id, index, total, *args, **kwargs):
    earlier = _tries(job_id, index)
    with _LOG.open("a") as log:
        log.write(f"{job_id} {index}\n")
    faulty, failures = _RULES.get(total, (None, 0))
    if index == faulty and earlier < failures:
        raise InjectedFault(f"injected failure of shard {index}, try {earlier + 1}")
    return _real_run_shard(job_id, index, total, *args, **kwargs)


tasks.run_shard = run_shard
