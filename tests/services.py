"""The loopback Redis and PostgreSQL that integration tests, fault tests and the service
benchmarks run on: each user takes its own Redis database number and PostgreSQL schema."""

from __future__ import annotations

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
