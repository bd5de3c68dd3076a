"""Revoked API keys stop working at once on every API process, when Redis is there.

API processes remember verified keys for a few seconds (the hot sampling path then needs no
database query). ``ganforge keys revoke`` commits the revocation and publishes the key's id on
a Redis channel; every API process listens and forgets that key immediately. Without Redis
(embedded mode: one API process, and the CLI runs beside it) a revoked key works for at
most the cache's few seconds; the same holds for a process that missed a message while its
Redis connection was down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from app.core.settings import Settings

log = logging.getLogger("ganforge.auth")


def _redis_url(settings: Settings) -> str | None:
    url = settings.broker_url or ""
    return url if url.startswith(("redis://", "rediss://")) else None


def channel(settings: Settings) -> str:
    return f"ganforge:{settings.queue}:revoked-keys"


def publish(settings: Settings, key_id: str) -> bool:
    """Tell every API process that ``key_id`` is revoked; False without Redis or if it is down."""
    url = _redis_url(settings)
    if url is None:
        return False
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3) as client:
            client.publish(channel(settings), key_id)
        return True
    except redis.RedisError as exc:
        log.warning(
            "could not announce the revocation of %s (%s); API processes drop it from "
            "their caches within seconds anyway",
            key_id,
            exc,
        )
        return False


async def listen(settings: Settings, on_revoked: Callable[[str], None]) -> None:
    """Call ``on_revoked(key_id)`` for every announced revocation, reconnecting as needed."""
    url = _redis_url(settings)
    if url is None:
        return
    while True:
        try:
            client = aioredis.Redis.from_url(url)
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel(settings))
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        on_revoked(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: the cache's short TTL still bounds the delay
            log.warning("revocation listener lost Redis (%s); retrying", exc)
            await asyncio.sleep(2.0)
        finally:
            await client.aclose()
