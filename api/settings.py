"""The service's configuration: one settings object read from the environment once."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

UPLOADS_DIRNAME = "uploads"
EXAMPLES_DIRNAME = "examples"
RESULTS_DIRNAME = "results"
BROKER_DB_FILENAME = "broker.sqlite"
JOB_DB_FILENAME = "snnconv.sqlite"
# Passwords anyone can guess: the one the Compose files used to fall back to, and the usual
# placeholders.  Production refuses them; a local setup is only warned.
DEFAULT_SECRETS = frozenset({"snnconv", "changethis", "postgres", "password"})


def _url_password(url: str | None) -> str | None:
    """The password in a database or broker URL (percent-decoded), or None."""
    if not url:
        return None
    password = urlsplit(url).password
    return None if password is None else unquote(password)


class Settings(BaseSettings):
    """What the API and the worker need: ``SNNCONV_*``, ``REDIS_URL`` and ``DATABASE_URL``."""

    model_config = SettingsConfigDict(
        env_prefix="SNNCONV_", extra="ignore", populate_by_name=True, frozen=True
    )

    environment: Literal["local", "production"] = "local"
    data_dir: Path = Field(Path(".snnconv"), description="uploads/ and results/ live here")
    datasets_dir: Path | None = Field(
        None, description="read-only dataset directory handed to jobs as JobSpec.data_dir"
    )
    examples_dir: Path | None = Field(
        None, description="the example models offered beside uploads (`snnconv examples` "
                          "builds them); None: examples/ inside data_dir"
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "SNNCONV_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; None: an SQLite file inside data_dir",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "SNNCONV_REDIS_URL", "redis_url"),
        description="Celery broker; None: an embedded SQLite broker inside data_dir",
    )
    queue: str = Field("gpu", min_length=1, description="Celery queue the jobs are sent to")
    max_upload_mb: int = Field(256, ge=1, le=16_384)
    max_json_body_kb: int = Field(64, ge=1, le=65_536, description="other request bodies, KiB")
    max_attempts: int = Field(3, ge=1, le=20, description="deliveries of one job before it fails")
    soft_time_limit_s: int = Field(3300, ge=1, description="the task is asked to stop")
    hard_time_limit_s: int = Field(3600, ge=1, description="the task's process is killed")
    visibility_timeout_s: int = Field(
        7200, ge=1, description="Redis redelivers an unacknowledged job after this long"
    )
    heartbeat_interval_s: float = Field(
        10, gt=0, le=3600, description="a running job's worker writes heartbeat_at this often"
    )
    heartbeat_timeout_s: float = Field(
        60, gt=0, description="a running job whose heartbeat is older than this is re-queued "
        "(or failed once max_attempts is reached) by the reaper"
    )
    reaper_interval_s: float = Field(
        15, ge=0, description="the API looks for jobs with a stale heartbeat this often; 0: never"
    )
    state_write_retry_s: float = Field(
        120, ge=0, description="how long a worker retries a job's final state write (and its "
        "claim) while the database is unreachable"
    )
    progress_interval_s: float = Field(
        0.25, ge=0, le=60, description="least time between two progress writes of one job"
    )
    cors_origins: list[str] = Field(default_factory=list)
    auth: Literal["keys", "demo"] = Field(
        "keys", description="keys: every /v1 request needs an API key (snnconv keys create); "
        "demo: a request without a key gets its browser's own anonymous scope (a cookie) with "
        "the demo_* quotas — for the hosted demo, never the default")
    quota_models: int = Field(50, ge=1, description="stored models per key")
    quota_storage_mb: int = Field(2048, ge=1, description="bytes of stored models per key")
    quota_active_jobs: int = Field(4, ge=1, description="queued + running jobs per key")
    rate_writes_per_minute: int = Field(60, ge=1, description="POST/DELETE per key")
    rate_reads_per_minute: int = Field(3000, ge=1, description="GET per key")
    key_cache_s: float = Field(
        5, ge=0, le=300, description="how long the API process remembers a key it has looked "
        "up, so a status poll costs no key query; a revoked key stops working within this "
        "many seconds (0: look every key up on every request)")
    demo_quota_models: int = Field(3, ge=1)
    demo_quota_storage_mb: int = Field(64, ge=1)
    demo_quota_active_jobs: int = Field(1, ge=1)
    demo_rate_writes_per_minute: int = Field(10, ge=1)
    demo_rate_reads_per_minute: int = Field(600, ge=1)
    db_pool_size: int = Field(20, ge=1, le=500, description="database connections kept open")
    db_max_overflow: int = Field(40, ge=0, le=500, description="extra connections under load "
                                 "(with the pool: more than the 40 threads of sync handlers)")
    worker_concurrency: int = Field(1, ge=1, le=64, description="jobs at once per worker")
    worker_warm_up: bool = Field(
        True, description="a worker process compiles its kernels and finishes its imports "
        "before it takes a task (seconds at start, so short shards measure only work)")
    worker_start_timeout_s: float = Field(
        300, gt=0, le=3600, description="how long a worker's pool process may take to start, "
        "warm-up included (a first compilation without numba's disk cache takes ~15 s)")
    eval_shard_size: int = Field(
        0, ge=0, description="evaluate a job whose evaluation set has more samples than this "
        "in shards of this many (rounded up to whole batches) across workers; 0: never"
    )
    preflight_cpu_seconds: int = Field(
        30, ge=1, le=3600, description="CPU time one upload's pre-flight may use (in a child "
        "process, start-up excluded); over it the upload is refused (preflight-cpu-limit)"
    )
    preflight_memory_mb: int = Field(
        3072, ge=1536, le=262_144, description="virtual memory of the pre-flight child "
        "process: it starts at about 0.7 GiB and a model needs about 7x its file size more; "
        "raise it with max_upload_mb.  Over it the upload is refused (preflight-memory-limit)"
    )
    preflight_timeout_s: float = Field(
        120, gt=0, le=3600, description="wall-clock time one upload's pre-flight may take "
        "before its child process is killed (preflight-timeout)"
    )

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, url: str | None) -> str | None:
        """Plain ``postgresql://`` URLs (as Compose and Heroku write them) use psycopg 3."""
        if url is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @model_validator(mode="after")
    def _limits_and_production(self) -> Settings:
        # A hard limit past the visibility timeout lets Redis hand a still-running job to a
        # second worker, so the limits must nest.
        if not self.soft_time_limit_s < self.hard_time_limit_s < self.visibility_timeout_s:
            raise ValueError(
                "need soft_time_limit_s < hard_time_limit_s < visibility_timeout_s, got "
                f"{self.soft_time_limit_s}, {self.hard_time_limit_s}, {self.visibility_timeout_s}"
            )
        if not self.heartbeat_interval_s < self.heartbeat_timeout_s:
            raise ValueError(
                "need heartbeat_interval_s < heartbeat_timeout_s, got "
                f"{self.heartbeat_interval_s}, {self.heartbeat_timeout_s}")
        if self.environment == "production":
            if "*" in self.cors_origins:
                raise ValueError("SNNCONV_CORS_ORIGINS='[\"*\"]' is refused in production")
            if self.redis_url is None:
                raise ValueError("production needs REDIS_URL (the embedded broker is local)")
        self._check_default_secret("DATABASE_URL", _url_password(self.database_url),
                                   " (Docker Compose: set POSTGRES_PASSWORD)")
        self._check_default_secret("REDIS_URL", _url_password(self.redis_url))
        return self

    def _check_default_secret(self, name: str, password: str | None, hint: str = "") -> None:
        """Refuse, in production, a URL whose password is a well-known default."""
        if password not in DEFAULT_SECRETS:
            return
        message = (f"the password in {name} is {password!r}, a default anyone can guess; "
                   f"set a secret one{hint}")
        if self.environment == "production":
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / UPLOADS_DIRNAME

    @property
    def results_dir(self) -> Path:
        return self.data_dir / RESULTS_DIRNAME

    @property
    def examples_path(self) -> Path:
        return self.examples_dir or self.data_dir / EXAMPLES_DIRNAME

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: the broker is a file in data_dir."""
        return self.redis_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / JOB_DB_FILENAME).resolve()}"

    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"sqla+sqlite:///{(self.data_dir / BROKER_DB_FILENAME).resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
