"""The client's protocol details without a server (httpx.MockTransport): the event-stream
parser, reconnect rules, error mapping, and the streamed multipart upload."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ganforge_client import (
    ApiError,
    Client,
    ConnectionFailed,
    Invalid,
    RateLimited,
    Unavailable,
)
from ganforge_client.events import parse_sse

JOB = {"id": "job_1", "status": "running", "progress": {"step": 1, "total_steps": 9}}


def _sse(*events: tuple[int | None, str, dict]) -> bytes:
    out = ""
    for event_id, kind, data in events:
        out += (f"id: {event_id}\n" if event_id is not None else "") + f"event: {kind}\n"
        out += f"data: {json.dumps(data)}\n\n"
    return out.encode()


def _client(handler) -> Client:
    return Client("http://gf.test", "secret", transport=httpx.MockTransport(handler))


def test_parse_sse_follows_the_event_stream_format():
    lines = [
        ": keep-alive",
        "",
        "id: 3",
        "event: job",
        "data: {",
        'data:"a": 1}',
        "retry: 250",
        "",
        "event: empty",  # no data: not dispatched
        "",
        "data: plain",
        "",
    ]
    assert list(parse_sse(lines)) == [
        ("3", "job", '{\n"a": 1}', 250),
        (None, "message", "plain", None),
    ]


def test_a_stream_closed_early_is_reopened_after_the_last_id_and_repeats_are_dropped():
    opened: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/events"):
            return httpx.Response(200, json=JOB)  # asked after a clean close: still running
        opened.append(request.headers.get("last-event-id"))
        if len(opened) == 1:
            return httpx.Response(200, content=b": hi\n\n" + _sse((1, "job", JOB), (2, "job", JOB)))
        done = {**JOB, "status": "succeeded"}
        return httpx.Response(200, content=_sse((2, "job", JOB), (5, "job", done)))

    with _client(handler) as c:
        stream = c.events("job_1", backoff=0)
        events = list(stream)
    assert opened == [None, "2"]
    assert [e.id for e in events] == [1, 2, 5] and stream.reconnects == 1
    assert events[-1].job is not None and events[-1].job.finished


def test_a_job_deleted_while_disconnected_ends_with_a_deleted_event():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(200, content=_sse((1, "job", JOB)))
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": "gone"})

    with _client(handler) as c:
        events = list(c.events("job_1", backoff=0))
    assert [(e.id, e.event) for e in events] == [(1, "job"), (None, "deleted")]


def test_reconnects_are_bounded():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with _client(handler) as c, pytest.raises(ConnectionFailed) as err:
        list(c.events("job_1", retries=3, backoff=0))
    assert len(attempts) == 4 and "gf.test" in str(err.value)


def test_wait_gives_up_at_its_timeout_even_while_keep_alives_arrive():
    def keepalives():
        while True:
            time.sleep(0.05)
            yield b": keep-alive\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, stream=_Iter(keepalives()))
        return httpx.Response(200, json=JOB)

    with _client(handler) as c:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            c.wait("job_1", timeout=0.5)
        assert time.monotonic() - start < 5


class _Iter(httpx.SyncByteStream):
    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        yield from self.chunks


@pytest.mark.parametrize(
    ("status", "headers", "body", "cls", "retry_after"),
    [
        (
            429,
            {"Retry-After": "7"},
            {"title": "Too many", "status": 429, "detail": "slow"},
            RateLimited,
            7,
        ),
        (
            503,
            {"Retry-After": "5"},
            {"title": "Unavailable", "status": 503, "detail": "db"},
            Unavailable,
            5,
        ),
        (
            413,
            {},
            {"title": "Too large", "status": 413, "detail": "big", "field": "file"},
            Invalid,
            None,
        ),
        (
            500,
            {},
            {"title": "Internal server error", "status": 500, "detail": "bug"},
            ApiError,
            None,
        ),
    ],
)
def test_problem_answers_become_exceptions(status, headers, body, cls, retry_after):
    def handler(request):
        return httpx.Response(status, headers=headers, json=body)

    with _client(handler) as c, pytest.raises(cls) as err:
        c.get_job("job_1")
    assert type(err.value) is cls
    assert (err.value.status, err.value.detail, err.value.retry_after) == (
        status,
        body["detail"],
        retry_after,
    )
    assert err.value.field == body.get("field")


def test_an_answer_that_is_not_problem_json_still_says_what_happened():
    gateway = _client(lambda r: httpx.Response(502, text="<h1>Bad Gateway</h1>"))
    with gateway as c, pytest.raises(Unavailable) as err:
        c.list_datasets()
    assert "Bad Gateway" in err.value.detail


class _Capture(httpx.BaseTransport):
    """Reads the request body chunk by chunk, as a socket would (MockTransport joins it first)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers = request.headers
        self.chunks = list(request.stream)  # type: ignore[arg-type]
        return httpx.Response(201, json={"id": "ds_1", "name": "pets", "kind": "npz"})


def test_upload_streams_multipart_with_its_length(tmp_path):
    path = tmp_path / 'we"ird.npz'
    path.write_bytes(b"x" * 700_000)
    transport, progress = _Capture(), []
    with Client("http://gf.test", "secret", transport=transport) as c:
        ds = c.upload_dataset(path, name="pets", progress=lambda s, t: progress.append((s, t)))
    assert ds.id == "ds_1"
    headers, chunks = transport.headers, transport.chunks
    assert headers["authorization"] == "Bearer secret"
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == sum(len(c) for c in chunks) > 700_000
    assert max(len(c) for c in chunks) <= 256 * 1024  # never the whole file at once
    body = b"".join(chunks)
    boundary = headers["content-type"].split("boundary=")[1].encode()
    assert body.startswith(b"--" + boundary) and body.endswith(b"--" + boundary + b"--\r\n")
    assert b'name="name"\r\n\r\npets\r\n' in body
    assert b'name="file"; filename="we%22ird.npz"' in body
    assert progress[0] == (0, 700_000) and progress[-1] == (700_000, 700_000)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress) and len(progress) == 4


def test_only_the_parameters_set_are_sent():
    urls = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, content=b"\x89PNG", headers={"X-Checkpoint-Step": "4"})

    with _client(handler) as c:
        png = c.interpolation("job/1", "best", from_seed=1, to_seed=2, steps=3, ema=False)
        c.losses_png("job_1")
    assert png.step == 4 and png == b"\x89PNG"
    assert urls[0].raw_path == (
        b"/v1/jobs/job%2F1/checkpoints/best/interpolation.png?from_seed=1&to_seed=2&steps=3&ema=false"
    )
    assert urls[1].query == b""
