"""An S3-compatible artifact store (AWS S3, MinIO, Ceph, ... by endpoint URL).

Selected with ``GANFORGE_STORE_URL=s3://bucket/prefix``; the endpoint, region and
credentials come from the usual AWS variables (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``) through boto3. Keys are the local store's
keys under the prefix; ``GANFORGE_STORE_DIR`` becomes a local cache.

A directory is published file by file, ``meta.json`` (a checkpoint's manifest) after the
weights, and then a ``.complete`` marker object; a directory without its marker is not
there for readers, so a crash mid-upload leaves nothing a reader could load (and the
checkpoint's database row is written only after ``publish_checkpoint`` returns). Reads
download into the cache, streamed, to a temporary directory renamed into place; recorded
checkpoints are cached by their generator's sha256 (``objects/<sha>``), so a step rewritten
after a rollback is never served from a stale copy.

A checkpoint's upload is tried again a few times with a growing pause (``UPLOAD_RETRIES``:
about 15 s in all, on top of boto3's own quick retries), so a store away for a moment
costs the job a pause, not its run; a store still away after that fails the job, naming
the store and the tries.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.core.artifacts.store import LocalStore, StoreError

MARKER = ".complete"
LAST = ("meta.json", "reference.safetensors")  # manifests: uploaded after the rest
UPLOAD_RETRIES = (1.0, 2.0, 4.0, 8.0)  # pauses before a checkpoint upload's later tries

log = logging.getLogger("ganforge.store")


class S3Store(LocalStore):
    def __init__(self, url: str, cache: Path):
        super().__init__(cache)
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"GANFORGE_STORE_URL must be s3://bucket[/prefix], got {url!r}")
        import boto3  # only deployments on S3 need it loaded
        from botocore.config import Config

        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.s3: Any = boto3.client(
            "s3", config=Config(retries={"max_attempts": 3}, connect_timeout=5, read_timeout=60)
        )

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _keys(self, key: str) -> list[str]:
        """Object names under a key (as a directory), relative to it."""
        head = self._name(key).rstrip("/") + "/"
        out: list[str] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=head
            ):
                out += [o["Key"][len(head) :] for o in page.get("Contents", [])]
        except Exception as exc:
            raise StoreError(f"could not list {key} in s3://{self.bucket}: {exc}") from exc
        return out

    def _upload_dir(self, key: str, local: Path) -> None:
        files = sorted(p for p in local.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name in LAST)  # the manifest after the weights
        try:
            for path in files:
                rel = path.relative_to(local).as_posix()
                self.s3.upload_file(str(path), self.bucket, self._name(f"{key}/{rel}"))
            self.s3.put_object(Bucket=self.bucket, Key=self._name(f"{key}/{MARKER}"), Body=b"")
        except Exception as exc:
            raise StoreError(f"could not upload {key} to s3://{self.bucket}: {exc}") from exc

    def _download_dir(self, key: str, target: Path) -> bool:
        """Fetch a published directory into ``target``; False if it is not (yet) complete."""
        names = self._keys(key)
        if MARKER not in names:
            return False
        tmp = target.with_name(f".dl-{target.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            for rel in names:
                if rel == MARKER:
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, self._name(f"{key}/{rel}"), str(dest))
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process fetched it first
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"could not fetch {key} from s3://{self.bucket}: {exc}") from exc
        return True

    # -- the interface

    def run_dir(self, job_id: str) -> Path:
        """The local run directory, with the job's newest published checkpoint in it (a resumed
        job may have trained on another machine)."""
        local = super().run_dir(job_id)
        root = f"jobs/{job_id}/checkpoints"
        steps = sorted({n.split("/", 1)[0] for n in self._keys(root) if n.endswith(f"/{MARKER}")})
        if steps:
            newest = local / "checkpoints" / steps[-1]
            if not newest.exists():
                newest.parent.mkdir(parents=True, exist_ok=True)
                self._download_dir(f"{root}/{steps[-1]}", newest)
        return local

    def publish_checkpoint(self, job_id: str, local_dir: Path) -> str:
        """Upload a checkpoint, tried again after each pause of ``UPLOAD_RETRIES`` (the same
        objects again: a retry only overwrites what an earlier try left)."""
        key = self.key_of(local_dir)
        t0 = time.monotonic()
        for attempt, pause in enumerate((*UPLOAD_RETRIES, None), start=1):
            try:
                self._upload_dir(key, local_dir)
                return key
            except StoreError as exc:
                if pause is None:
                    raise StoreError(
                        f"{exc} (tried {attempt} times over {time.monotonic() - t0:.0f} s)"
                    ) from exc
                log.warning(
                    "store: upload of %s failed (try %d of %d), trying again in %g s: %s",
                    key,
                    attempt,
                    len(UPLOAD_RETRIES) + 1,
                    pause,
                    exc,
                )
                time.sleep(pause)
        raise AssertionError("unreachable")

    def publish(self, key: str) -> None:
        self._upload_dir(key, self._path(key))

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.exists():
            self._download_dir(key, path)
        return path

    def local_checkpoint(self, key: str, sha256: str) -> Path:
        path = self._path(f"objects/{sha256}")
        if not path.exists():
            self._download_dir(key, path)
        return path

    def delete(self, key: str) -> None:
        super().delete(key)
        names = [self._name(f"{key}/{rel}") for rel in self._keys(key)] + [self._name(key)]
        try:
            for i in range(0, len(names), 1000):
                self.s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": n} for n in names[i : i + 1000]], "Quiet": True},
                )
        except Exception as exc:
            raise StoreError(f"could not delete {key} from s3://{self.bucket}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return super().exists(key) or MARKER in self._keys(key)

    def init(self) -> bool:
        """Create the bucket if it does not exist (in the client's region)."""
        super().init()
        from botocore.exceptions import ClientError

        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise StoreError(f"cannot read s3://{self.bucket}: {exc}") from exc
        except Exception as exc:  # unreachable endpoint, no credentials
            raise StoreError(f"cannot reach s3://{self.bucket}: {exc}") from exc
        region = self.s3.meta.region_name
        where = (
            {}
            if region in (None, "us-east-1")
            else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        try:
            self.s3.create_bucket(Bucket=self.bucket, **where)
        except Exception as exc:
            raise StoreError(f"cannot create s3://{self.bucket}: {exc}") from exc
        return True

    def ping(self) -> None:
        super().ping()
        probe = self._name(f".ping-{uuid.uuid4().hex[:8]}")
        try:
            self.s3.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            self.s3.delete_object(Bucket=self.bucket, Key=probe)
        except Exception as exc:
            raise StoreError(f"s3://{self.bucket} is not writable: {exc}") from exc
