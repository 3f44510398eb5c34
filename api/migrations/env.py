"""Alembic environment: runs against the connection the service hands over, or settings."""

from __future__ import annotations

from alembic import context

from api.db import Base, make_engine
from api.settings import get_settings

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Plain `alembic -c api/alembic.ini upgrade head`: take the URL from the service settings.
    with make_engine(get_settings().sqlalchemy_url).begin() as own_connection:
        _run(own_connection)


run_migrations_online()
