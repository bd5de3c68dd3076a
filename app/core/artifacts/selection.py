"""Which artifact store a deployment uses: the one module that knows both kinds.

``store`` defines the interface and the local store; ``s3store`` builds on it. Neither
imports the other's user, so choosing lives here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from app.core.artifacts.s3store import S3Store
from app.core.artifacts.store import LocalStore


def get_store(root: Path, url: str | None = None) -> LocalStore:
    """The local store at ``root``, or with ``url`` (s3://bucket/prefix) the S3-compatible
    store with ``root`` as its local cache."""
    if url:
        return S3Store(url, root)
    return LocalStore(root)
