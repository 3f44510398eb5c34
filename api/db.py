"""The database: SQL tables for uploaded models and jobs (SQLite by default, PostgreSQL too).

Job state lives here, never only in Celery, so a restarted broker or worker loses nothing the
user can see.  The schema is created and upgraded by Alembic (``api/migrations``).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
ALEMBIC_INI = Path(__file__).parent / "alembic.ini"


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON, datetime: UTCDateTime}


class KeyKind(enum.StrEnum):
    key = "key"  # created by an operator with `snnconv keys create`
    anonymous = "anonymous"  # one browser's scope in the demo mode (SNNCONV_AUTH=demo)


class ApiKeyRecord(Base):
    """An API key: only the SHA-256 of its secret is stored; models and jobs belong to one."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[KeyKind] = mapped_column(
        Enum(KeyKind, name="key_kind", native_enum=False, length=16), default=KeyKind.key)
    prefix: Mapped[str] = mapped_column(String(16), doc="the secret's first characters, shown")
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class ModelRecord(Base):
    """An uploaded model file that passed pre-flight."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(200), doc="stored file name in its directory")
    format: Mapped[str] = mapped_column(String(32))
    arch: Mapped[str | None] = mapped_column(String(100))
    input_shape: Mapped[list] = mapped_column(JSON)
    preflight: Mapped[dict] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRecord(Base):
    """One conversion/evaluation job and everything a poller sees about it."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str | None] = mapped_column(
        ForeignKey("models.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.queued,
        index=True,
    )
    options: Mapped[dict] = mapped_column(JSON, doc="the JobCreate options, model_id excluded")
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(500))
    partial_top1: Mapped[dict] = mapped_column(JSON, default=dict, doc="method -> top1 per t")
    error: Mapped[dict | None] = mapped_column(JSON, doc="problem detail when failed")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(
        index=True, doc="last sign of life of the worker running it (None while queued)")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # The API and the embedded worker write the same file from two processes: WAL lets
    # readers go on during a write, and the busy timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An engine for ``url``; SQLite files get their directory and multi-process pragmas.

    The API sizes the pool from its settings: FastAPI runs sync handlers on up to 40
    threads, and each holds a connection while it queries."""
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False},
                               pool_size=pool_size, max_overflow=max_overflow, pool_timeout=10)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size,
                         max_overflow=max_overflow, pool_timeout=10)


@lru_cache(maxsize=4)
def engine_for(url: str) -> Engine:
    """One engine per URL and process (the worker's task reuses it across jobs)."""
    return make_engine(url)


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
