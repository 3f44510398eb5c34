"""Sharded evaluation: the whole mnist-5k test split on 1 worker and on 2 workers.

Each run starts the API in-process and N real Celery worker processes (torch threads = 1
each) on Redis, with PostgreSQL as the job store, submits one job over the API and times it
until it succeeds: end to end, and the evaluation phase alone (from the first shard sent to
the report).  Both runs use the same shard size, so they do the same work; the speed-up is
the 1-worker time over the 2-worker time.  Benchmark 7 of ``run_all.py`` (it needs Redis and
PostgreSQL, and says so on the page when they are absent)::

    .venv/bin/python -m benchmarks.bench_sharded [--timesteps 64] [--shard-size 250]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.services import reset_external_state
from worker.celery_app import WARMED_UP

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SCHEMA = "snnconv_bench_sharded"


def _start_workers(count: int, env: dict[str, str], data_dir: Path, queue: str):
    workers, logs = [], []
    for index in range(count):
        log = data_dir / f"worker-{index}.log"
        with log.open("wb") as stream:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queue,
                 "--concurrency", "1", "-n", f"bench-{index}@%h", "--loglevel", "INFO"],
                cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT,
                start_new_session=True))
        logs.append(log)
    deadline = time.monotonic() + 300
    # timed from warm workers: each pool process has compiled its kernels (worker_warm_up)
    while not all(WARMED_UP in log.read_text(errors="replace") for log in logs):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise RuntimeError("workers did not start:\n" + "\n".join(
                log.read_text(errors="replace")[-2000:] for log in logs))
        time.sleep(0.3)
    return workers, logs


def _stop(workers) -> None:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait()


def run_once(workers: int, args, model: Path, base: Path) -> dict:
    """Time one job on ``workers`` workers; returns its timings and top-1 curves."""
    from fastapi.testclient import TestClient

    from api.keys import create_key
    from api.main import create_app
    from api.settings import Settings

    data_dir = base / f"workers-{workers}"
    data_dir.mkdir(parents=True)
    database_url = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{SCHEMA}"
    reset_external_state(args.redis_url, SCHEMA)
    settings = Settings(data_dir=data_dir, redis_url=args.redis_url, database_url=database_url,
                        eval_shard_size=args.shard_size)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SNNCONV_")}
    env.update(SNNCONV_DATA_DIR=str(data_dir), REDIS_URL=args.redis_url,
               DATABASE_URL=database_url, SNNCONV_EVAL_SHARD_SIZE=str(args.shard_size),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    with TestClient(create_app(settings)) as client:
        with client.app.state.sessions() as session:
            client.headers["Authorization"] = f"Bearer {create_key(session, 'bench')[1]}"
        processes, logs = _start_workers(workers, env, data_dir, settings.queue)
        try:
            uploaded = client.post("/v1/models", data={"arch": "cnn-small"},
                                   files={"file": (model.name, model.read_bytes())})
            assert uploaded.status_code == 201, uploaded.text
            options = {"model_id": uploaded.json()["id"], "dataset": "mnist-5k",
                       "methods": args.methods, "timesteps": args.timesteps,
                       "batch_size": args.batch_size, "device": "cpu",
                       "cq": {"finetune_epochs": args.finetune_epochs}}
            began = time.perf_counter()
            response = client.post("/v1/jobs", json=options)
            assert response.status_code == 202, response.text
            job_id, evaluating = response.json()["id"], None
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if evaluating is None and job["stage"] in ("simulate", "report"):
                    evaluating = time.perf_counter()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            finished = time.perf_counter()
            if job["status"] != "succeeded":
                raise RuntimeError(f"the job {job['status']}: {job.get('error')}\n" + "\n".join(
                    log.read_text(errors="replace")[-3000:] for log in logs))
            report = client.get(f"/v1/jobs/{job_id}/report").json()
        finally:
            _stop(processes)
    return {"total_s": finished - began, "evaluation_s": finished - (evaluating or began),
            "samples": report["dataset"]["eval_samples"],
            "top1": {m["method"]: m["top1"] for m in report["methods"]}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timesteps", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["max-norm", "robust-norm"])
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args(argv)

    from benchmarks.bench_common import Sizes, model_file

    with tempfile.TemporaryDirectory(prefix="bench-sharded-") as scratch:
        base = Path(scratch)
        model = model_file(Sizes(), base / "model")
        runs = {workers: run_once(workers, args, model, base) for workers in (1, 2)}
    one, two = runs[1], runs[2]
    if one["top1"] != two["top1"]:
        raise RuntimeError("1 and 2 workers gave different reports")
    speedup = one["total_s"] / two["total_s"]
    evaluation_speedup = one["evaluation_s"] / two["evaluation_s"]
    result = {"runs": runs, "speedup": speedup, "evaluation_speedup": evaluation_speedup,
              "methods": args.methods, "timesteps": args.timesteps,
              "shard_size": args.shard_size}
    print(summary(result))
    return result


def summary(result: dict) -> str:
    """The runs as a markdown table and the measured speed-up."""
    runs = result["runs"]
    lines = ["| workers | end to end (s) | evaluation phase (s) |", "|---|---|---|"]
    lines += [f"| {workers} | {run['total_s']:.1f} | {run['evaluation_s']:.1f} |"
              for workers, run in runs.items()]
    return "\n".join([
        "\n".join(lines), "",
        f"The whole mnist-5k test split ({runs[1]['samples']} images), methods "
        f"{', '.join(result['methods'])}, T = {result['timesteps']}, shards of "
        f"{result['shard_size']} images, 1 torch thread per worker process, timed from warm "
        "workers (kernels compiled at start), one job submitted "
        "over the REST API to real Celery workers on Redis with PostgreSQL as the job store. "
        "Both runs give the same report (checked). **2 workers are "
        f"{result['speedup']:.2f}× as fast end to end, {result['evaluation_speedup']:.2f}× in "
        "the evaluation phase** (the CQ fine-tune, when a method needs one, and loading run "
        "once, before the shards)."])


if __name__ == "__main__":
    main()
