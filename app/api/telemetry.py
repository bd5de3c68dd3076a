"""HTTP metrics: every request counted by method, route template and status, and timed."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.integrations.telemetry import HTTP_REQUESTS, HTTP_SECONDS


class MetricsMiddleware:
    """Pure ASGI (streaming responses pass through untouched); labels use the route's path
    template (/v1/jobs/{job_id}), never the raw path, so ids cannot explode the series."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(method, route, str(status[0])).inc()
            HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
