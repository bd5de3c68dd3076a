"""The artifact store: checkpoints, uploaded datasets and scorers, behind one small interface.

The local directory store is the default (a shared volume in compose). The S3-compatible
store (app.core.artifacts.s3store, GANFORGE_STORE_URL=s3://...) keeps the same keys as objects and
uses a local directory as its cache: ``run_dir`` is where the trainer writes,
``publish_checkpoint`` / ``publish`` upload what was written there, and ``local_path`` /
``local_checkpoint`` download what is read. Keys are relative POSIX paths such as
``jobs/job_x/checkpoints/step-00000500``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TextIO

log = logging.getLogger("ganforge.store")


class StoreError(OSError):
    """The store could not be read or written (full disk, permissions, unreachable)."""


class ArtifactStore(ABC):
    @abstractmethod
    def run_dir(self, job_id: str) -> Path:
        """A local directory the trainer writes a job's checkpoints into."""

    @abstractmethod
    def publish_checkpoint(self, job_id: str, local_dir: Path) -> str:
        """Make a finished checkpoint directory durable; returns its key."""

    @abstractmethod
    def publish(self, key: str) -> None:
        """Make what was written locally under ``key`` durable (a dataset, a scorer)."""

    @abstractmethod
    def local_path(self, key: str) -> Path:
        """A local path holding what is stored under ``key`` (a checkpoint dir, a dataset)."""

    @abstractmethod
    def local_checkpoint(self, key: str, sha256: str) -> Path:
        """A local directory holding a recorded checkpoint (its generator file's hash given)."""

    @abstractmethod
    def cache_path(self, key: str) -> Path:
        """A local path for files this process makes and keeps (exports): never fetched."""

    @abstractmethod
    def dataset_dir(self, dataset_id: str) -> Path:
        """The local directory an uploaded dataset is unpacked into."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove everything under ``key`` (no error if absent)."""

    def discard(self, key: str) -> None:
        """Delete files whose record is already gone: a failure leaves orphans (logged), it
        does not fail the request or the training that let them go."""
        try:
            self.delete(key)
        except OSError as exc:
            log.warning("could not delete %s from the store (left behind): %s", key, exc)

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def init(self) -> bool:
        """Create the store if it is missing (`ganforge store init`); True if it was."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StoreError unless the store can be written."""

    @abstractmethod
    def free_bytes(self) -> int:
        """Space left for new checkpoints and uploads."""

    @abstractmethod
    def scratch_dir(self) -> Path:
        """A fresh private temp directory (on the store's filesystem, so renames are cheap)."""


class LocalStore(ArtifactStore):
    """A directory on local disk or a shared volume."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self._scratch: Path | None = None
        self._scratch_lock: TextIO | None = None

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"key {key!r} escapes the store")
        return path

    def key_of(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def run_dir(self, job_id: str) -> Path:
        path = self._path(f"jobs/{job_id}")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish_checkpoint(self, job_id: str, local_dir: Path) -> str:
        # The trainer wrote straight into the store (atomically); nothing to copy.
        return self.key_of(local_dir)

    def publish(self, key: str) -> None:
        pass  # written in place

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def local_checkpoint(self, key: str, sha256: str) -> Path:
        return self._path(key)

    def cache_path(self, key: str) -> Path:
        """A local path for derived files this process keeps (exports): never fetched."""
        return self._path(key)

    def dataset_dir(self, dataset_id: str) -> Path:
        return self._path(f"datasets/{dataset_id}")

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            # Rename first so a half-deleted tree is never mistaken for a live one.
            trash = path.with_name(f".del-{path.name}-{uuid.uuid4().hex[:8]}")
            path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        elif path.exists():
            path.unlink()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def init(self) -> bool:
        if self.root.is_dir():
            return False
        try:
            self.root.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(f"cannot create the artifact store {self.root}: {exc}") from exc
        return True

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".ping-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"artifact store {self.root} is not writable: {exc}") from exc

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def scratch_dir(self) -> Path:
        if self._scratch is None:
            self.open_scratch()
        assert self._scratch is not None
        path = self._scratch / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def open_scratch(self) -> None:
        """Take this process's scratch area, ``tmp/<instance>/``, and remove dead processes' ones.

        Each process holds an exclusive lock on ``tmp/<instance>.lock`` for as long as it
        lives (the kernel drops it however the process ends), so an area whose lock can be
        taken belongs to a process that is gone: an upload it was receiving will never
        finish. Areas of live processes (other API replicas on a shared store) are left alone.
        """
        tmp = self._path("tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        fh = open(tmp / f"{instance}.lock", "a")  # noqa: SIM115 - held until close_scratch()
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (tmp / instance).mkdir()  # the lock exists first: an area without one is an orphan
        self._scratch, self._scratch_lock = tmp / instance, fh
        for entry in tmp.iterdir():
            if entry.suffix == ".lock" or entry == self._scratch:
                continue
            lock = entry.with_name(f"{entry.name}.lock")
            if lock.exists() and _held(lock):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            lock.unlink(missing_ok=True)
        for lock in tmp.glob("*.lock"):  # locks whose area is already gone
            if not lock.with_suffix("").exists() and not _held(lock):
                lock.unlink(missing_ok=True)

    def close_scratch(self) -> None:
        """Remove this process's scratch area and release its lock (at shutdown)."""
        if self._scratch is not None and self._scratch_lock is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            Path(self._scratch_lock.name).unlink(missing_ok=True)
            self._scratch_lock.close()
            self._scratch = self._scratch_lock = None

    def usage_bytes(self, key: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self._path(key)):
            for name in files:
                with contextlib.suppress(OSError):  # a file removed while we walk
                    total += os.path.getsize(os.path.join(dirpath, name))
        return total


def _held(lock: Path) -> bool:
    """Whether a live process holds this lock file."""
    try:
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
