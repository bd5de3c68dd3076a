"""The Client's job methods: create, list, get, cancel, resume, delete, events and wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from ganforge_client.errors import ConnectionFailed, JobCanceled, JobFailed, NotFound
from ganforge_client.events import EventStream
from ganforge_client.models import Job, JobsPage
from ganforge_client.transport import Transport, params, seg


def _outcome(job: Job) -> Job:
    """A finished job that succeeded; JobFailed or JobCanceled for one that did not."""
    if job.status == "canceled":
        raise JobCanceled(job)
    if job.status != "succeeded":
        raise JobFailed(job)
    return job


class JobsApi(Transport):
    def create_job(
        self,
        config: Mapping[str, Any],
        *,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a training job (``config``: TrainConfig fields); a repeated idempotency key
        returns the job it first made."""
        body: dict[str, Any] = {"config": dict(config)}
        if name is not None:
            body["name"] = name
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return Job.model_validate(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def jobs_page(
        self, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> JobsPage:
        """One page of jobs, newest first; pass its ``next_cursor`` as ``cursor`` for the next."""
        query = params(status=status, limit=limit, cursor=cursor)
        return JobsPage.model_validate(self._json("GET", "/v1/jobs", params=query))

    def list_jobs(self, *, status: str | None = None, limit: int = 20) -> Iterator[Job]:
        """Every job, newest first, fetched ``limit`` per request as the iterator goes."""
        cursor = None
        while True:
            page = self.jobs_page(status=status, limit=limit, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"/v1/jobs/{seg(job_id)}"))

    def cancel_job(self, job_id: str) -> Job:
        """Ask a job to stop (a running one stops at its next check and keeps a checkpoint)."""
        return Job.model_validate(self._json("POST", f"/v1/jobs/{seg(job_id)}/cancel"))

    def resume_job(self, job_id: str, steps: int | None = None, devices: int | None = None) -> Job:
        """Continue a failed or canceled job from its last checkpoint, optionally to ``steps``
        or on another number of ``devices``; or train a succeeded job longer (``steps`` above
        its total)."""
        fields = {"steps": steps, "devices": devices}
        body = {k: v for k, v in fields.items() if v is not None} or None
        return Job.model_validate(self._json("POST", f"/v1/jobs/{seg(job_id)}/resume", json=body))

    def delete_job(self, job_id: str) -> None:
        """Delete a job that is not running, with its checkpoints."""
        self.request("DELETE", f"/v1/jobs/{seg(job_id)}")

    def events(
        self,
        job_id: str,
        *,
        last_event_id: int | None = None,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> EventStream:
        """The job's server-sent events, reconnecting with Last-Event-ID when the connection
        drops; ends after the final ``job`` event or on ``deleted``."""
        return self._events(job_id, last_event_id=last_event_id, retries=retries, backoff=backoff)

    def _events(self, job_id: str, *, deadline: float | None = None, **kwargs: Any) -> EventStream:
        path = f"/v1/jobs/{seg(job_id)}/events"

        def open_stream(
            last: int | None, remaining: float | None
        ) -> AbstractContextManager[httpx.Response]:
            read = self.timeout if remaining is None else min(self.timeout, remaining)
            timeout = httpx.Timeout(self.timeout, read=read)
            headers = {"Last-Event-ID": str(last)} if last is not None else None
            return self._stream(path, headers=headers, timeout=timeout)

        return EventStream(
            open_stream,
            lambda: self.get_job(job_id),
            job_id=job_id,
            url=self.url,
            deadline=deadline,
            **kwargs,
        )

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """Block until the job is finished and return it if it succeeded; ``progress(job)`` on
        every change.

        A job that failed raises JobFailed, one that was canceled JobCanceled (a JobFailed
        too); either carries the final record as ``.job`` (its ``status`` and ``error``).
        Follows the job's event stream (which reconnects by itself); if that cannot be kept
        open, polls every ``poll`` seconds instead. TimeoutError after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Job | None = None

        def seen(job: Job) -> None:
            nonlocal last
            if progress is not None and (last is None or job != last):
                progress(job)
            last = job

        try:
            with self._events(job_id, deadline=deadline) as stream:
                for event in stream:
                    if event.event == "deleted":
                        raise NotFound(404, "Not found", f"job {job_id} was deleted")
                    job = event.job
                    if job is not None:
                        seen(job)
                        if job.finished:
                            return _outcome(job)
        except ConnectionFailed:
            pass  # the stream would not stay open (a proxy that buffers it?): poll instead
        while True:
            job = self.get_job(job_id)
            seen(job)
            if job.finished:
                return _outcome(job)
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(f"job {job_id} did not finish in time")
            time.sleep(poll)
