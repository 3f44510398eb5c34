"""The loopback Redis and PostgreSQL that integration tests, fault tests and the service
benchmarks run on: each user takes its own Redis database number and PostgreSQL schema.
Also how a test says that something it needs is missing."""

from __future__ import annotations

import os

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def schema_url(schema: str) -> str:
    """A PostgreSQL URL whose tables live in ``schema``."""
    return f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"


def reset_external_state(redis_url: str, schema: str) -> None:
    """Empty the Redis database and recreate the PostgreSQL schema."""
    import psycopg
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        connection.execute(f"CREATE SCHEMA {schema}")


def require(needs: str, problem: str | None) -> None:
    """Go on when ``problem`` is None; else skip saying what the tests need and what is
    wrong, or fail under CI=true (CI must not pass by skipping)."""
    import pytest

    if problem is None:
        return
    message = f"{needs}; {problem}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
