"""Who is asking, and what they may still do.

Every /v1 request that touches models or jobs acts for one API key (``Authorization: Bearer
<secret>``).  In the demo mode (``SNNCONV_AUTH=demo``) a request without a key acts for its
browser's anonymous scope, kept in an HttpOnly cookie and created on first use; it gets the
``demo_*`` quotas.  Rate limits are token buckets per key, kept in the API process, and
so is a short-lived cache of the keys it has looked up (``key_cache_s``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api import keys
from api.db import JobRecord, JobStatus, KeyKind, ModelRecord
from api.deps import SettingsDep
from api.keys import Owner
from api.problems import ProblemError
from api.settings import Settings

DEMO_COOKIE = "snnconv_demo"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Quotas:
    models: int
    storage_bytes: int
    active_jobs: int
    writes_per_minute: int
    reads_per_minute: int


def quotas_for(owner: Owner, settings: Settings) -> Quotas:
    """The operator's quotas for a key, the ``demo_*`` ones for an anonymous scope."""
    prefix = "demo_" if owner.kind is KeyKind.anonymous else ""
    values = {name: getattr(settings, prefix + name) for name in (
        "quota_models", "quota_storage_mb", "quota_active_jobs", "rate_writes_per_minute",
        "rate_reads_per_minute")}
    return Quotas(models=values["quota_models"],
                  storage_bytes=values["quota_storage_mb"] * 2**20,
                  active_jobs=values["quota_active_jobs"],
                  writes_per_minute=values["rate_writes_per_minute"],
                  reads_per_minute=values["rate_reads_per_minute"])


class KeyCache:
    """The owners of secrets looked up in the last ``ttl_s`` seconds, by the secret's hash.

    Only keys that exist are kept (a stream of made-up secrets cannot fill it), at most
    ``max_entries`` of them, the least recently used leaving first.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000):
        self._ttl_s, self._max_entries = ttl_s, max_entries
        self._owners: OrderedDict[str, tuple[Owner, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Owner | None:
        with self._lock:
            found = self._owners.get(digest)
            if found is None or time.monotonic() - found[1] > self._ttl_s:
                return None
            self._owners.move_to_end(digest)
            return found[0]

    def put(self, digest: str, owner: Owner) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._owners[digest] = (owner, time.monotonic())
            self._owners.move_to_end(digest)
            while len(self._owners) > self._max_entries:
                self._owners.popitem(last=False)


class RateLimiter:
    """Token buckets per (key, reads or writes): ``rate`` per minute, bursts up to ``rate``."""

    def __init__(self):
        self._buckets: dict[tuple[str, bool], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, write: bool, per_minute: int) -> float:
        """Seconds to wait before the next request is allowed; 0 when this one is."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get((key, write), (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - stamp) * per_minute / 60)
            if tokens < 1:
                self._buckets[key, write] = (tokens, now)
                return (1 - tokens) * 60 / per_minute
            self._buckets[key, write] = (tokens - 1, now)
            return 0.0


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorized("invalid-authorization", "the Authorization header must be "
                            "'Bearer <secret>' with a key from `snnconv keys create`")
    return secret.strip()


def _unauthorized(code: str, detail: str) -> ProblemError:
    return ProblemError(401, code, "Unauthorized", detail,
                        headers={"WWW-Authenticate": 'Bearer realm="snnconv"'})


def _look_up(sessions: sessionmaker, secret: str) -> Owner | None:
    with sessions() as session:
        record = keys.find_active(session, secret)
        return Owner.of(record) if record is not None else None


async def _owner_of_secret(request: Request, secret: str) -> Owner | None:
    """The key's owner, from the cache when it was looked up recently."""
    cache: KeyCache = request.app.state.key_cache
    digest = keys.hash_secret(secret)
    owner = cache.get(digest)
    if owner is None:
        owner = await run_in_threadpool(_look_up, request.app.state.sessions, secret)
        if owner is not None:
            cache.put(digest, owner)
    return owner


def _anonymous(request: Request, response: Response, sessions: sessionmaker) -> Owner:
    secret = request.cookies.get(DEMO_COOKIE)
    with sessions() as session:
        record = keys.find_active(session, secret) if secret else None
        if record is None or record.kind is not KeyKind.anonymous:
            record, secret = keys.create_key(session, "anonymous demo scope",
                                             KeyKind.anonymous)
            response.set_cookie(DEMO_COOKIE, secret, httponly=True, samesite="lax",
                                secure=request.url.scheme == "https", max_age=7 * 24 * 3600)
        return Owner.of(record)


async def current_owner(request: Request, response: Response,
                        settings: SettingsDep) -> Owner:
    """The key a request acts for (401 without a valid one, outside the demo mode), after
    its rate limit (429 with Retry-After when spent).  Async, with the key lookup (when not
    cached) in the thread pool: a status poll pays one thread hop for its own query only."""
    secret = _bearer(request)
    if secret is not None:
        owner = await _owner_of_secret(request, secret)
        if owner is None:
            raise _unauthorized("invalid-api-key", "this API key is unknown or revoked")
    elif settings.auth == "demo":
        owner = await run_in_threadpool(_anonymous, request, response,
                                        request.app.state.sessions)
    else:
        raise _unauthorized("api-key-required", "send 'Authorization: Bearer <secret>' with a "
                            "key an operator created with `snnconv keys create`")
    quotas = quotas_for(owner, settings)
    write = request.method not in SAFE_METHODS
    rate = quotas.writes_per_minute if write else quotas.reads_per_minute
    wait = request.app.state.rate_limiter.take(owner.id, write, rate)
    if wait:
        seconds = str(math.ceil(wait))
        raise ProblemError(429, "rate-limited", "Too many requests",
                           f"this key is limited to {rate} {'writes' if write else 'reads'} "
                           f"per minute; retry after {seconds} s",
                           headers={"Retry-After": seconds})
    return owner


OwnerDep = Annotated[Owner, Depends(current_owner)]


def require_model_room(session: Session, owner: Owner, settings: Settings,
                       new_bytes: int = 0) -> None:
    """409 when one more model (of ``new_bytes``) would pass the key's storage quotas."""
    quotas = quotas_for(owner, settings)
    count, stored = session.execute(
        select(func.count(), func.coalesce(func.sum(ModelRecord.size_bytes), 0))
        .where(ModelRecord.owner_id == owner.id)).one()
    if count + 1 > quotas.models:
        raise ProblemError(409, "quota-models", "Model quota reached",
                           f"this key stores {count} models, its quota is {quotas.models}; "
                           "delete one (DELETE /v1/models/{id}) first")
    if new_bytes and stored + new_bytes > quotas.storage_bytes:
        raise ProblemError(409, "quota-storage", "Storage quota reached",
                           f"this upload ({new_bytes:,} bytes) would bring the key's models to "
                           f"{stored + new_bytes:,} bytes, over its quota of "
                           f"{quotas.storage_bytes:,}; delete models first")


def require_job_room(session: Session, owner: Owner, settings: Settings) -> None:
    """429 when the key already has its quota of queued and running jobs."""
    quotas = quotas_for(owner, settings)
    active = session.scalar(select(func.count()).select_from(JobRecord).where(
        JobRecord.owner_id == owner.id,
        JobRecord.status.in_([JobStatus.queued, JobStatus.running])))
    if active >= quotas.active_jobs:
        raise ProblemError(429, "quota-jobs", "Too many unfinished jobs",
                           f"this key has {active} queued or running jobs, its quota is "
                           f"{quotas.active_jobs}; wait for one to finish or cancel one",
                           headers={"Retry-After": "30"})
