"""`make load`: the service under a bounded load on loopback, figures into docs/reliability.md.

Starts ``snnconv serve`` (embedded stack: SQLite job store and broker, one embedded worker;
or ``--stack redis-postgres`` with the loopback Redis and PostgreSQL and a separate worker),
creates one API key per simulated user with ``snnconv keys create``, then for ``--seconds``
(60) runs ``--clients`` (50) users that each poll one job's status and list their jobs every
``--think`` seconds, while ``--uploads`` (20) other users upload a model and submit a job.
Every request's latency and status are recorded; a request that fails or answers 5xx is an
error.  The result table replaces the part of docs/reliability.md between its load markers.

    .venv/bin/python -m benchmarks.load [--seconds 60] [--clients 50] [--stack embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- load: begin -->", "<!-- load: end -->"
REDIS_URL = "redis://127.0.0.1:6379/12"
SCHEMA = "snnconv_load"


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, kind: str, seconds: float, status: int | None) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[status or 0] = self.statuses.get(status or 0, 0) + 1
        if status is None or status >= 500:
            self.errors[kind] = self.errors.get(kind, 0) + 1


async def _timed(samples: Samples, kind: str, request) -> httpx.Response | None:
    began = time.perf_counter()
    try:
        response = await request
    except httpx.HTTPError:
        samples.add(kind, time.perf_counter() - began, None)
        return None
    samples.add(kind, time.perf_counter() - began, response.status_code)
    return response


def _model_bytes() -> bytes:
    from tests.onnx_builders import mlp_onnx

    return mlp_onnx(32)


def _client(url: str, key: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                             timeout=timeout)


async def _poller(http: httpx.AsyncClient, job_id: str, stop: float, think: float,
                  samples: Samples, delay: float) -> None:
    await asyncio.sleep(delay)
    while time.monotonic() < stop:
        await _timed(samples, "status poll", http.get(f"/v1/jobs/{job_id}"))
        await _timed(samples, "job list", http.get("/v1/jobs", params={"limit": 20}))
        await asyncio.sleep(think)


async def _submitter(http: httpx.AsyncClient, model: bytes, samples: Samples) -> None:
    uploaded = await _timed(samples, "upload", http.post(
        "/v1/models", files={"file": ("m.onnx", model)}))
    if uploaded is None or uploaded.status_code != 201:
        return
    await _timed(samples, "job submit", http.post("/v1/jobs", json=_job(
        uploaded.json()["id"])))


def _job(model_id: str) -> dict:
    return {"model_id": model_id, "dataset": "mnist-5k", "methods": ["robust-norm"],
            "timesteps": 8, "eval_samples": 100, "calib_samples": 100, "device": "cpu"}


async def _seed_job(url: str, key: str, model: bytes) -> str:
    """One job per polling user, so each polls a job of its own."""
    async with _client(url, key, 120) as http:
        uploaded = await http.post("/v1/models", files={"file": ("m.onnx", model)})
        uploaded.raise_for_status()
        created = await http.post("/v1/jobs", json=_job(uploaded.json()["id"]))
        created.raise_for_status()
        job_id = created.json()["id"]
        await http.post(f"/v1/jobs/{job_id}/cancel")  # the pollers' jobs need no worker time
        return job_id


async def _load(url: str, keys: list[str], args) -> Samples:
    model = _model_bytes()
    pollers, submitters = keys[:args.clients], keys[args.clients:]
    job_ids = [await _seed_job(url, key, model) for key in pollers]
    # every client exists before the clock starts: creating one costs ~25 ms of the event
    # loop (httpx builds an SSL context), which would otherwise stall the requests in flight
    polling = [_client(url, key, 30) for key in pollers]
    submitting = [_client(url, key, 120) for key in submitters]
    samples = Samples()
    stop = time.monotonic() + args.seconds
    spacing = args.seconds / max(1, len(submitters)) / 2
    # users arrive spread over one think time, as independent users do, rather than all in
    # the same millisecond (which would measure one 50-request burst, then its echoes)
    tasks = [asyncio.create_task(_poller(http, job, stop, args.think, samples,
                                         delay=args.think * index / len(pollers)))
             for index, (http, job) in enumerate(zip(polling, job_ids, strict=True))]
    for http in submitting:  # spread over the first half of the window
        tasks.append(asyncio.create_task(_submitter(http, model, samples)))
        await asyncio.sleep(spacing)
    await asyncio.gather(*tasks)
    for http in polling + submitting:
        await http.aclose()
    return samples


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(data_dir: Path, stack: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SNNCONV_") and k not in {"REDIS_URL", "DATABASE_URL"}}
    env.update(SNNCONV_DATA_DIR=str(data_dir), SNNCONV_QUOTA_ACTIVE_JOBS="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    if stack == "redis-postgres":
        from tests.services import reset_external_state, schema_url

        reset_external_state(REDIS_URL, SCHEMA)
        env.update(REDIS_URL=REDIS_URL, DATABASE_URL=schema_url(SCHEMA))
    return env


def _cli(*args: str, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    stream = log.open("wb") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env,
                            stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)


def _create_keys(count: int, env: dict[str, str]) -> list[str]:
    from api.db import make_engine, migrate, session_factory
    from api.keys import create_key
    from api.settings import Settings

    settings = Settings(data_dir=Path(env["SNNCONV_DATA_DIR"]),
                        database_url=env.get("DATABASE_URL"), redis_url=env.get("REDIS_URL"))
    engine = make_engine(settings.sqlalchemy_url)
    migrate(engine)
    with session_factory(engine)() as session:
        keys = [create_key(session, f"load user {index}")[1] for index in range(count)]
    engine.dispose()
    return keys


def _wait_ready(url: str, processes: list[subprocess.Popen], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a service process exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the service was not ready after {timeout} s")


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="snnconv-load-") as scratch:
        data_dir = Path(scratch)
        env = _environment(data_dir, args.stack)
        keys = _create_keys(args.clients + args.uploads, env)
        port = _free_port()
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        processes = []
        if args.stack == "redis-postgres":
            processes.append(_cli("worker", env=env, log=data_dir / "worker.log"))
            serve.append("--no-worker")
        processes.append(_cli(*serve, env=env, log=data_dir / "serve.log"))
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, processes)
            began = time.perf_counter()
            samples = asyncio.run(_load(url, keys, args))
            seconds = time.perf_counter() - began
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    return {"samples": samples, "seconds": seconds, "args": vars(args)}


def table(result: dict) -> str:
    from benchmarks.bench_common import machine

    samples, args, host = result["samples"], result["args"], machine()
    rows = ["| requests | count | errors | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |",
            "|---|---|---|---|---|---|---|"]
    for kind, values in samples.latencies.items():
        ms = np.array(values) * 1e3
        rows.append(f"| {kind} | {len(ms)} | {samples.errors.get(kind, 0)} | "
                    f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} | "
                    f"{np.percentile(ms, 99):.1f} | {ms.max():.1f} |")
    statuses = ", ".join(f"{code or 'no answer'}: {n}" for code, n in
                         sorted(samples.statuses.items()))
    return "\n".join([
        f"Command: `.venv/bin/python -m benchmarks.load --stack {args['stack']} --seconds "
        f"{args['seconds']} --clients {args['clients']} --uploads {args['uploads']}` "
        f"({host['date']}; {host['cpu']}, {host['cores']} cores; torch {host['torch']}).",
        "",
        f"{args['clients']} users, each with its own API key, poll their job's status and list "
        f"their jobs every {args['think']} s for {args['seconds']} s, while {args['uploads']} "
        "other users each upload a model (an ONNX MLP, pre-flighted) and submit a job "
        "(mnist-5k, robust-norm, T = 8) that the worker runs meanwhile on the same 2 cores.",
        "", *rows, "",
        f"Status codes: {statuses}. Wall time {result['seconds']:.0f} s. An error is a request "
        "without an answer or with a 5xx; 429s (the per-key job quota) are answers, not errors."])


def write_doc(text: str) -> None:
    document = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    DOC.write_text(pattern.sub(f"{BEGIN}\n{text}\n{END}", document), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--think", type=float, default=0.5, help="pause between two polls")
    parser.add_argument("--stack", choices=["embedded", "redis-postgres"], default="embedded")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args(argv)
    text = table(run(args))
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
