"""API keys: created, listed and revoked by an operator (``snnconv keys ...``).

A key's secret is shown once, at creation; the database holds only its SHA-256 (the secret
is 256 random bits, so a plain hash is as strong as a slow one) and its first characters,
to tell keys apart.  Every model and job belongs to one key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import ApiKeyRecord, KeyKind, new_id, utcnow

SECRET_PREFIX = "snk_"
SHOWN_CHARACTERS = 12  # "snk_" and 8 characters of the secret


@dataclass(frozen=True)
class Owner:
    """Who a request acts for: a key's id and kind, detached from any database session (so
    the API can remember it between requests)."""

    id: str
    kind: KeyKind

    @classmethod
    def of(cls, record: ApiKeyRecord) -> Owner:
        return cls(id=record.id, kind=record.kind)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(session: Session, name: str, kind: KeyKind = KeyKind.key
               ) -> tuple[ApiKeyRecord, str]:
    """A new key and its secret (which is not stored and cannot be shown again)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = ApiKeyRecord(id=new_id(), name=name[:200], kind=kind,
                          prefix=secret[:SHOWN_CHARACTERS], secret_sha256=hash_secret(secret))
    session.add(record)
    session.commit()
    return record, secret


def find_active(session: Session, secret: str) -> ApiKeyRecord | None:
    """The unrevoked key with this secret, or None."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 100:
        return None
    record = session.scalar(select(ApiKeyRecord).where(
        ApiKeyRecord.secret_sha256 == hash_secret(secret)))
    return record if record is not None and record.revoked_at is None else None


def list_keys(session: Session) -> list[ApiKeyRecord]:
    """Operator keys (not the demo mode's anonymous scopes), oldest first."""
    return list(session.scalars(select(ApiKeyRecord).where(ApiKeyRecord.kind == KeyKind.key)
                                .order_by(ApiKeyRecord.created_at)))


def revoke_key(session: Session, key: str) -> ApiKeyRecord | None:
    """Revoke the key with this id or shown prefix; None when there is no such key."""
    record = session.get(ApiKeyRecord, key) or session.scalar(
        select(ApiKeyRecord).where(ApiKeyRecord.prefix == key))
    if record is None:
        return None
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        session.commit()
    return record


# --- the `snnconv keys` commands ---------------------------------------------------------

def _sessions(data_dir: Path | None):
    from api.cli import _apply_overrides
    from api.db import make_engine, migrate, session_factory
    from api.settings import get_settings

    _apply_overrides(data_dir)
    engine = make_engine(get_settings().sqlalchemy_url)
    migrate(engine)
    return session_factory(engine)


def _create(args) -> None:
    with _sessions(args.data_dir)() as session:
        record, secret = create_key(session, args.name)
    print(f"created key {record.id} ({record.name}); its secret, shown only now:\n{secret}")


def _list(args) -> None:
    with _sessions(args.data_dir)() as session:
        for record in list_keys(session):
            state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at \
                else "active"
            print(f"{record.id}  {record.prefix}…  {record.created_at:%Y-%m-%d %H:%M}  "
                  f"{state}  {record.name}")


def _revoke(args) -> None:
    with _sessions(args.data_dir)() as session:
        record = revoke_key(session, args.key)
    if record is None:
        raise SystemExit(f"no key with id or prefix {args.key!r}; see `snnconv keys list`")
    print(f"revoked key {record.id} ({record.name})")


def add_keys_command(subparsers, data_dir_help: str) -> None:
    """``snnconv keys create|list|revoke``."""
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True, help="who or what the key is for")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="list the keys (never their secrets)")
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a key: its requests get 401 at once")
    revoke.add_argument("key", help="the key's id or its shown prefix")
    revoke.set_defaults(handler=_revoke)
    for action in (create, listing, revoke):
        action.add_argument("--data-dir", type=Path, default=None, help=data_dir_help)

