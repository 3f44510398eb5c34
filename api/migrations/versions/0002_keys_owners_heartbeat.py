"""API keys; models and jobs belong to a key; a heartbeat per running job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 17:45:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.Enum("key", "anonymous", name="key_kind", native_enum=False,
                                  length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_sha256"),
    )
    # rows from before keys existed get no owner: no key sees them
    for table in ("models", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner_id", sa.String(length=32), nullable=True))
            batch.create_index(f"ix_{table}_owner_id", ["owner_id"])
            batch.create_foreign_key(f"fk_{table}_owner_id", "api_keys", ["owner_id"], ["id"],
                                     ondelete="CASCADE")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_heartbeat_at", ["heartbeat_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_heartbeat_at")
        batch.drop_column("heartbeat_at")
    for table in ("jobs", "models"):
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_owner_id", type_="foreignkey")
            batch.drop_index(f"ix_{table}_owner_id")
            batch.drop_column("owner_id")
    op.drop_table("api_keys")
