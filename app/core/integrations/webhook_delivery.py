"""Sending the webhook outbox: claimed rows, signed requests, retries with backoff and jitter.

Every API process runs a ``Dispatcher``. It claims due deliveries with a conditional update
(so two replicas never send one delivery at once), resolves the target again and connects
to the addresses it just checked (so a name that resolves to a public address at creation
and to 127.0.0.1 now -- DNS rebinding -- is refused), sends with a short timeout and no
redirects, and records the attempt. A 2xx delivers; a target refused at send time (it
resolves to a private address now, and GANFORGE_WEBHOOK_ALLOW_PRIVATE is off) fails at once,
with the reason as the attempt's error; anything else is retried after
GANFORGE_WEBHOOK_BACKOFF_SECONDS ``* 2**n`` (capped at 10 minutes, times a random 0.5-1.5) until GANFORGE_WEBHOOK_RETRY_SECONDS
have passed since the event, then the delivery is ``failed``. Nothing is lost if the
process stops: the outbox is in the database, and a claim expires.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import and_, or_, select, update

from app.core.db import session_scope, utcnow
from app.core.errors import InvalidInput
from app.core.integrations import webhooks
from app.core.integrations.webhooks import RefusedTarget
from app.core.jobs.runs import update_rows
from app.core.models import WebhookDelivery
from app.core.settings import Settings

log = logging.getLogger("ganforge.webhooks")
CLAIM_SECONDS = 60.0
BACKOFF_CAP = 600.0


def backoff(failures: int, base: float) -> float:
    """Seconds before the next attempt after ``failures`` failed ones."""
    return min(BACKOFF_CAP, base * 2 ** (failures - 1)) * random.uniform(0.5, 1.5)


class Dispatcher:
    def __init__(self, settings: Settings, holder: str):
        self.settings, self.holder = settings, holder
        self.url = settings.resolved_database_url

    def _claim(self) -> list[str]:
        now = utcnow()
        due = and_(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < now),
        )
        with session_scope(self.url) as s:
            ids = list(
                s.scalars(
                    select(WebhookDelivery.id)
                    .where(due)
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(20)
                )
            )
            mine = [
                i
                for i in ids
                if update_rows(
                    s,
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == i, due)
                    .values(
                        claimed_by=self.holder, claimed_until=now + timedelta(seconds=CLAIM_SECONDS)
                    ),
                )
                == 1
            ]
        return mine

    def _load(self, delivery_id: str) -> tuple[WebhookDelivery, str] | None:
        with session_scope(self.url) as s:
            row = s.get(WebhookDelivery, delivery_id)
            if row is None or row.claimed_by != self.holder:
                return None
            secret = webhooks.secret_for(s, row.owner_id or "anonymous").secret
            s.expunge(row)
        return row, secret

    def _record(
        self, delivery_id: str, attempt: dict[str, Any], delivered: bool, final: bool = False
    ) -> None:
        with session_scope(self.url) as s:
            row = s.get(WebhookDelivery, delivery_id)
            if row is None:
                return
            row.attempts = [*row.attempts, attempt]
            row.claimed_by = row.claimed_until = None
            now = utcnow()
            if delivered:
                row.status, row.delivered_at = "delivered", now
            elif final:
                row.status = "failed"
            else:
                wait = backoff(len(row.attempts), self.settings.webhook_backoff_seconds)
                retry = now + timedelta(seconds=wait)
                give_up = row.created_at + timedelta(seconds=self.settings.webhook_retry_seconds)
                if retry > give_up:
                    row.status = "failed"
                else:
                    row.next_attempt_at = retry

    async def _send(self, row: WebhookDelivery, secret: str) -> tuple[dict[str, Any], bool]:
        """One attempt, and whether it is final (a refused target: no retry can change it)."""
        started = time.monotonic()
        attempt: dict[str, Any] = {
            "at": utcnow().isoformat() + "Z",
            "status_code": None,
            "error": None,
        }
        try:
            host, port, addresses = await asyncio.to_thread(
                webhooks.resolve_target, row.url, allow_private=self.settings.webhook_allow_private
            )
        except RefusedTarget as exc:  # e.g. the name resolves to 127.0.0.1 now
            attempt["error"] = f"{exc.detail}; not retried"
            return attempt, True
        except InvalidInput as exc:  # e.g. the name does not resolve: DNS may be back later
            attempt["error"] = exc.detail
            return attempt, False
        body = webhooks.body_of(row)
        timestamp = int(time.time())
        parts = urlsplit(row.url)
        ip = addresses[0]
        pinned = urlunsplit(
            (
                parts.scheme,
                f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}",
                parts.path or "/",
                parts.query,
                "",
            )
        )
        headers = {
            "content-type": "application/json",
            "host": parts.netloc,
            "user-agent": "ganforge-webhooks",
            "webhook-id": row.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.sign(secret, row.id, timestamp, body),
        }
        timeout = self.settings.webhook_timeout_seconds
        try:
            async with httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, trust_env=False
            ) as client:
                r = await client.post(
                    pinned, content=body, headers=headers, extensions={"sni_hostname": host}
                )
            attempt["status_code"] = r.status_code
            if not 200 <= r.status_code < 300:
                attempt["error"] = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            attempt["error"] = f"{type(exc).__name__}: {exc}"
        attempt["seconds"] = round(time.monotonic() - started, 3)
        return attempt, False

    async def once(self) -> int:
        """Send what is due now; returns how many attempts were made."""
        claimed = await asyncio.to_thread(self._claim)
        for delivery_id in claimed:
            loaded = await asyncio.to_thread(self._load, delivery_id)
            if loaded is None:
                continue
            row, secret = loaded
            attempt, final = await self._send(row, secret)
            ok = attempt["status_code"] is not None and 200 <= attempt["status_code"] < 300
            await asyncio.to_thread(self._record, delivery_id, attempt, ok, final)
            if not ok:
                log.warning(
                    "webhook %s (%s of %s) to %s failed: %s",
                    row.id,
                    row.event,
                    row.job_id,
                    row.url,
                    attempt["error"],
                )
        return len(claimed)

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database briefly away: try again
                log.warning("webhook dispatch failed", exc_info=True)
            await asyncio.sleep(self.settings.webhook_poll_seconds)
