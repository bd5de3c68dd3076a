"""Named locks with a lease, in the database: for work one process of the fleet does while the
others wait for its result (training a dataset's feature extractor, say).

A lock is a row; taking it is an insert (or taking over an expired one), so it works the same
on SQLite and Postgres and across machines. A holder that dies leaves the row to expire after
``ttl`` seconds, and the next process takes it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.exc import IntegrityError

from app.core.db import session_scope, utcnow
from app.core.models import Lock

T = TypeVar("T")


def try_acquire(url: str, name: str, holder: str, ttl: float) -> bool:
    """Take the lock if it is free or expired; True if we hold it now."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    with session_scope(url) as s:
        taken = cast(
            CursorResult[Any],
            s.execute(
                update(Lock)
                .where(Lock.name == name, Lock.expires_at < now)
                .values(holder=holder, expires_at=expires)
            ),
        )
        if taken.rowcount == 1:
            return True
    try:
        with session_scope(url) as s:
            s.add(Lock(name=name, holder=holder, expires_at=expires))
        return True
    except IntegrityError:  # someone holds it
        return False


def release(url: str, name: str, holder: str) -> None:
    with session_scope(url) as s:
        s.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))


def load_or_build(
    url: str,
    name: str,
    holder: str,
    *,
    load: Callable[[], T | None],
    build: Callable[[], T],
    ttl: float = 900.0,
    poll: float = 1.0,
) -> T:
    """``load()``'s result, or ``build()``'s -- built by one process of the fleet at a time.

    Whoever takes the lock builds (unless the result appeared meanwhile); the others poll
    ``load()`` until it is there, or until the lock expires and one of them takes over.
    """
    while True:
        found = load()
        if found is not None:
            return found
        if try_acquire(url, name, holder, ttl):
            try:
                found = load()  # finished by the previous holder while we were waiting
                return found if found is not None else build()
            finally:
                release(url, name, holder)
        time.sleep(poll)
