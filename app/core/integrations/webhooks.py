"""Webhooks: where a job's events go, the outbox they wait in, and how they are signed.

A job may carry ``webhook_url`` and the events it wants (``started``, ``checkpoint``,
``succeeded``, ``failed``, ``canceled``, and ``translation``: the end of each folder translation
made from its checkpoints). Each event is a row in the outbox written in the same transaction
as the state change it announces (``announce``, called by app.core.jobs.runs and friends
before they commit; ``announce_translation``, by app.core.serving.folder_runs and the cancel
of a queued translation): a crash between the two loses nothing and sends nothing false.
app.core.integrations.webhook_delivery sends them.

Deliveries follow the Standard Webhooks convention: headers ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")), with a per-owner secret (``whsec_`` + base64 of 32 random bytes)
the owner can read and rotate. Targets that resolve to loopback, private, link-local,
metadata or other non-public addresses are refused (at creation and again at each delivery:
DNS rebinding) unless GANFORGE_WEBHOOK_ALLOW_PRIVATE is set; a delivery refused so is failed
at once (``RefusedTarget``), not retried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.errors import InvalidInput
from app.core.models import Checkpoint, Job, Translation, WebhookDelivery, WebhookSecret
from app.core.serving.folder_resource import translation_resource

EVENTS = ("started", "checkpoint", "succeeded", "failed", "canceled", "translation")
TRANSLATION_ENDS = ("succeeded", "failed", "canceled")  # announced as translation.<status>


# ------------------------------------------------------------------------------- targets


class RefusedTarget(InvalidInput):
    """A target that must not be called (not http(s), credentials, a non-public address).

    Unlike a name that does not resolve (DNS may be back in a minute), retrying cannot change
    this answer: a delivery refused so fails at once.
    """


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global excludes loopback, RFC 1918, link-local (169.254.169.254: cloud metadata),
    # CGNAT, unique-local, documentation, multicast and unspecified ranges
    return ip.is_global and not ip.is_multicast


def resolve_target(url: str, *, allow_private: bool) -> tuple[str, int, list[str]]:
    """(host, port, addresses) of a webhook URL, refusing what must not be called.

    InvalidInput names ``webhook_url``; the addresses are what a delivery connects to (the
    caller pins the connection to them, so a name cannot resolve differently later).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget(
            "webhook_url must be an http:// or https:// URL with a host", field="webhook_url"
        )
    if parts.username or parts.password:
        raise RefusedTarget("webhook_url must not carry credentials", field="webhook_url")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(
            f"webhook_url: {host} does not resolve ({exc})", field="webhook_url"
        ) from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    blocked = [a for a in addresses if not _is_public(a)]
    if blocked and not allow_private:
        raise RefusedTarget(
            f"webhook_url: {host} resolves to {', '.join(blocked)}, a loopback, private, "
            "link-local or otherwise non-public address; refused (GANFORGE_WEBHOOK_ALLOW_PRIVATE "
            "allows it)",
            field="webhook_url",
        )
    return host, port, addresses


def check_events(events: list[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(events or EVENTS))
    unknown = [e for e in chosen if e not in EVENTS]
    if unknown:
        raise InvalidInput(
            f"webhook_events: unknown {unknown}; choose from {list(EVENTS)}", field="webhook_events"
        )
    return chosen


# ------------------------------------------------------------------------------- secrets


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_for(session: Session, owner_id: str, *, rotate: bool = False) -> WebhookSecret:
    """The owner's signing secret (made on first use); ``rotate`` replaces it."""
    row = session.get(WebhookSecret, owner_id)
    if row is None:
        row = WebhookSecret(owner_id=owner_id, secret=_new_secret(), created_at=utcnow())
        session.add(row)
    elif rotate:
        row.secret, row.created_at = _new_secret(), utcnow()
    session.flush()
    return row


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value for one delivery."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# ------------------------------------------------------------------------------- the outbox


def _job_data(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "step": job.step,
        "total_steps": job.total_steps,
        "attempts": job.attempts,
        "error": job.error,
        "best_checkpoint_id": job.best_checkpoint_id,
        "best_fd": job.best_fd,
    }


def announce(
    session: Session, job_id: str, event: str, checkpoint: Checkpoint | None = None
) -> WebhookDelivery | None:
    """Put ``event`` of the job in the outbox, if the job asked for it (the caller commits:
    the row lands together with the change, or neither does)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not job.webhook_url or event not in (job.webhook_events or EVENTS):
        return None
    data = _job_data(job)
    if checkpoint is not None:
        data["checkpoint"] = {
            "id": checkpoint.id,
            "step": checkpoint.step,
            "score_status": checkpoint.score_status,
            "scores": checkpoint.scores,
        }
    return _outbox(session, job, event, f"job.{event}", data)


def _outbox(
    session: Session, job: Job, event: str, kind: str, data: dict[str, Any]
) -> WebhookDelivery:
    row = WebhookDelivery(
        job_id=job.id,
        owner_id=job.owner_id,
        event=event,
        url=job.webhook_url,
        payload={"type": kind, "timestamp": utcnow().isoformat() + "Z", "data": data},
        attempts=[],
        next_attempt_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def announce_translation(session: Session, translation_id: str) -> WebhookDelivery | None:
    """Put a folder translation's end (``translation.succeeded|failed|canceled``) in its job's
    outbox, if the job asked for ``translation`` and the translation is its owner's (the
    caller commits, as for ``announce``). A job deleted meanwhile has no webhook left."""
    row = session.get(Translation, translation_id, populate_existing=True)
    if row is None or row.status not in TRANSLATION_ENDS:
        return None
    job = session.get(Job, row.job_id)
    if (
        job is None
        or not job.webhook_url
        or "translation" not in (job.webhook_events or EVENTS)
        or job.owner_id != row.owner_id
    ):
        return None
    return _outbox(
        session, job, "translation", f"translation.{row.status}", translation_resource(row)
    )


def body_of(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def deliveries(session: Session, *, job_id: str) -> list[WebhookDelivery]:
    """A job's webhook deliveries, oldest first."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    )
