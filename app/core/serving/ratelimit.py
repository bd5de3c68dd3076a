"""Sampling limits per API key: requests per second, and rendering priced by its work.

Backed by the ``limits`` library's windows: in Redis when the broker is
Redis, so every API replica draws on the same budget (N replicas used to allow N times the
rate), and in process memory otherwise. A request is charged once for being a request (cache
hits and 304s included) and, when it must render, again by the pixels it generates
(images x height x width): an n=256 grid of 128 px costs 256 times an n=4 grid of 32 px.
If Redis cannot be reached the limits are not applied (logged); sampling keeps working.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from app.core.errors import DomainError
from app.core.settings import Settings

log = logging.getLogger("ganforge.limits")
PIXELS_PER_UNIT = 1000  # render budgets are counted in kilopixels


class RateLimited(DomainError):
    status, title = 429, "Too many requests"

    def __init__(self, detail: str, retry_after: float):
        super().__init__(detail)
        self.retry_after = retry_after


def _item(per_second: float, burst: float) -> RateLimitItem:
    """`burst` units per window of burst / per_second seconds: that rate, with that burst."""
    return RateLimitItemPerSecond(max(1, int(burst)), max(1, round(burst / per_second)))


class SamplingLimits:
    """The two per-key budgets; ``request`` and ``render`` raise RateLimited (429) when spent."""

    def __init__(self, settings: Settings):
        self.requests_on = settings.sample_rate > 0
        self.renders_on = settings.render_megapixels_per_second > 0
        self.request_item = _item(settings.sample_rate or 1, settings.sample_burst)
        mp = 1_000_000 / PIXELS_PER_UNIT
        self.render_item = _item(
            (settings.render_megapixels_per_second or 1) * mp, settings.render_burst_megapixels * mp
        )
        self.max_units = self.render_item.amount
        url = settings.broker_url or ""
        if url.startswith(("redis://", "rediss://")):
            storage = storage_from_string(
                f"async+{url}",
                implementation="redispy",
                key_prefix=f"ganforge:{settings.queue}:limits",
            )
            self.shared = True
        else:
            storage = storage_from_string("async+memory://")
            self.shared = False
        # Requests cost 1: a moving window (exact). Renders cost up to thousands of units, which
        # a moving window would store one entry each for: a sliding-window counter (two
        # counters per key, the older one weighted by how much of it is still in the window).
        self.request_limiter = MovingWindowRateLimiter(storage)
        self.render_limiter = SlidingWindowCounterRateLimiter(storage)
        self.settings = settings

    async def request(self, key: str) -> None:
        """One sampling request by ``key``."""
        if self.requests_on:
            s = self.settings
            await self._hit(
                self.request_limiter,
                self.request_item,
                key,
                1,
                f"sampling is limited to {s.sample_rate:g} "
                f"requests/s per key (burst {s.sample_burst})",
            )

    def render_units(self, pixels: int) -> int:
        return max(1, math.ceil(pixels / PIXELS_PER_UNIT))

    async def render(self, key: str, pixels: int) -> None:
        """A render of ``pixels`` generated pixels by ``key``."""
        if not self.renders_on:
            return
        s = self.settings
        units = min(self.render_units(pixels), self.max_units)  # the largest request can pass
        await self._hit(
            self.render_limiter,
            self.render_item,
            key,
            units,
            f"rendering is limited to {s.render_megapixels_per_second:g} megapixels/s "
            f"per key (burst {s.render_burst_megapixels:g}); this request renders "
            f"{pixels / 1e6:.2f}",
        )

    @staticmethod
    async def _hit(
        limiter: MovingWindowRateLimiter | SlidingWindowCounterRateLimiter,
        item: RateLimitItem,
        key: str,
        cost: int,
        detail: str,
    ) -> None:
        try:
            if await limiter.hit(item, key, cost=cost):
                return
            stats = await limiter.get_window_stats(item, key)
        except Exception as exc:  # Redis away: serve rather than refuse
            log.warning("rate limit not applied (%s: %s)", type(exc).__name__, exc)
            return
        raise RateLimited(detail, retry_after=max(stats.reset_time - time.time(), 1.0))
