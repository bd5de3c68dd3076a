"""A job's server-sent events as an iterator that survives dropped connections.

The server numbers its events and, given ``Last-Event-ID``, sends every checkpoint finalised
since then and the job's current state if it moved (job states superseded in between are not
replayed; app.core.jobs.events), so a reconnect loses no checkpoint and ends on the job as it
is; events at or below the last id seen are dropped here too, so nothing is yielded twice even
if a server repeated itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx

from ganforge_client.errors import ConnectionFailed, NotFound, Unavailable
from ganforge_client.models import FINISHED, Event, Job

# (last_event_id, read_timeout) -> an open text/event-stream response (raises ApiError on an error)
OpenStream = Callable[[int | None, float | None], AbstractContextManager[httpx.Response]]


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str | None, str, str, int | None]]:
    """(id, event, data, retry_ms) per dispatched event, from text/event-stream lines.

    Follows the WHATWG rules: ``:`` lines are comments (keep-alives), a blank line
    dispatches, ``data`` lines are joined with newlines, a leading space after the colon is
    dropped, an event without data is not dispatched.
    """
    event_id: str | None = None
    event, retry = "", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield event_id, event or "message", "\n".join(data), retry
            event, data, event_id, retry = "", [], None, None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


class EventStream(Iterator[Event]):
    """Iterate to get a job's events; ends after the final ``job`` event or on ``deleted``.

    A connection that drops (or that the server closes before the job is finished) is
    reopened with ``Last-Event-ID`` up to ``retries`` times in a row, waiting ``backoff``
    seconds doubled each time (at most ``max_backoff``, or the server's ``retry:``); any event
    received resets the count. Past that, ConnectionFailed. A 404 on a reconnect means the
    job was deleted meanwhile: a ``deleted`` event is yielded. ``response`` is the open HTTP
    response (None between connections); ``reconnects`` counts reopened connections.
    """

    def __init__(
        self,
        open_stream: OpenStream,
        get_job: Callable[[], Job],
        *,
        job_id: str,
        url: str,
        last_event_id: int | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        deadline: float | None = None,
    ):
        self._open, self._get_job = open_stream, get_job
        self.job_id, self.url = job_id, url
        self.last_event_id = last_event_id
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self.deadline = deadline  # time.monotonic() past which TimeoutError is raised
        self.response: httpx.Response | None = None
        self.reconnects = 0
        self._server_retry: float | None = None
        self._closed = False
        self._events = self._run()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Stop: close the connection; the iterator ends."""
        self._closed = True
        self._events.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {self.job_id} did not finish in time")
        return left

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        for line in response.iter_lines():
            self._remaining()  # keep-alives too: a quiet stream still ends at the deadline
            yield line

    def _run(self) -> Generator[Event, None, None]:
        failures, connected = 0, False
        while True:
            reason: BaseException | str
            try:
                with self._open(self.last_event_id, self._remaining()) as response:
                    self.response, connected = response, True
                    for raw_id, kind, raw_data, retry in parse_sse(self._lines(response)):
                        if retry is not None:
                            self._server_retry = retry / 1000
                        event = _event(raw_id, kind, raw_data)
                        if event.id is not None:
                            if self.last_event_id is not None and event.id <= self.last_event_id:
                                continue  # already yielded before a reconnect
                            self.last_event_id = event.id
                        failures = 0
                        yield event
                        if event.event == "deleted" or (
                            event.event == "job" and _status(event) in FINISHED
                        ):
                            return
                # The server closed the stream cleanly, yet no final event: a reconnect with
                # the final event's id (nothing left to send), or a server shutting down.
                if self._get_job().finished:
                    return
                reason = "the server closed the event stream"
            except NotFound:
                if not connected:
                    raise  # the job is not there (or not the caller's)
                yield Event(None, "deleted", {"id": self.job_id})
                return
            except (httpx.TransportError, httpx.StreamError, ConnectionFailed, Unavailable) as exc:
                self._remaining()  # past the deadline (a read timed out): TimeoutError
                reason = exc
            finally:
                self.response = None
            if self._closed:
                return
            failures += 1
            if failures > self.retries:
                raise ConnectionFailed(self.url, f"the event stream kept failing: {reason}")
            delay = self._server_retry or min(self.backoff * 2 ** (failures - 1), self.max_backoff)
            left = self._remaining()
            time.sleep(delay if left is None else min(delay, left))
            self.reconnects += 1


def _event(raw_id: str | None, kind: str, raw_data: str) -> Event:
    data: Any
    try:
        data = json.loads(raw_data)
    except ValueError:
        data = raw_data
    event_id = int(raw_id) if raw_id is not None and raw_id.isdigit() else None
    return Event(event_id, kind, data)


def _status(event: Event) -> str | None:
    return event.data.get("status") if isinstance(event.data, dict) else None
