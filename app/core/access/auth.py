"""API keys and who a request acts for.

A key reads ``gf_<key id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256
of it is enough to store (no slow hash needed against guessing); comparison is
constant-time. Keys created with the same name belong to the same owner and see the
same datasets and jobs; admin keys see everything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.db import session_scope, utcnow
from app.core.errors import InvalidInput, NotFound
from app.core.models import ApiKey, new_id
from app.core.settings import Settings

log = logging.getLogger("ganforge.auth")
_TOKEN = re.compile(r"^gf_(key_[0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}$")
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    owner_id: str
    admin: bool
    key_id: str | None

    @property
    def scope(self) -> str | None:
        """The owner filter for queries: None (everything) for admins."""
        return None if self.admin else self.owner_id


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, name: str, admin: bool = False) -> tuple[ApiKey, str]:
    """A new key for owner ``name``; returns (record, the key text -- shown only now)."""
    if not _OWNER.match(name):
        raise InvalidInput("name must be 1-40 letters, digits or _.@- characters", field="name")
    secret = secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), owner_id=name, secret_sha256=_digest(secret), admin=admin)
    session.add(row)
    session.flush()
    return row, f"gf_{row.id}_{secret}"


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal a key acts for, or None for a malformed, unknown or revoked key."""
    match = _TOKEN.match(token.strip())
    if not match:
        return None
    key_id, secret = match.groups()
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        _digest(secret)  # same work either way: no timing hint about which ids exist
        return None
    if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))
    return Principal(owner_id=row.owner_id, admin=row.admin, key_id=row.id)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"key {key_id} not found")
    row.revoked_at = row.revoked_at or utcnow()
    session.flush()
    return row


def first_admin_key(settings: Settings) -> tuple[str | None, Path]:
    """On a server with no keys yet, create an admin key and keep it in the data dir.

    Returns (the key text if one is stored there, the file it is kept in). The file is
    written 0600 before the record commits, so a crash never leaves a key nobody can read.
    """
    path = (settings.data_dir / "admin-key").resolve()
    with session_scope(settings.resolved_database_url) as s:
        if s.scalar(select(ApiKey.id).limit(1)) is None:
            _row, text = create_key(s, name="admin", admin=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
            log.warning("created the first admin key; it is kept in %s", path)
    return (path.read_text().strip() if path.is_file() else None), path
