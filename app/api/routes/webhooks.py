"""Webhooks: a job's deliveries, and the owner's signing secret."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PrincipalDep, SessionDep
from app.api.errors import problem_responses
from app.api.webhook_schemas import (
    WebhookAttemptPublic,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookSecretPublic,
)
from app.core.integrations import webhooks
from app.core.jobs import records as jobs

router = APIRouter(tags=["webhooks"], responses=problem_responses(401, 503))


@router.get(
    "/v1/jobs/{job_id}/webhooks",
    response_model=WebhookDeliveriesPublic,
    responses=problem_responses(404, 422),
)
def job_webhooks(
    job_id: str, session: SessionDep, principal: PrincipalDep
) -> WebhookDeliveriesPublic:
    """The job's webhook deliveries, oldest first, with every attempt and its status code."""
    jobs.get_job(session, job_id=job_id, owner_id=principal.scope)
    return WebhookDeliveriesPublic(
        items=[
            WebhookDeliveryPublic(
                id=d.id,
                event=d.event,
                url=d.url,
                status=d.status,
                attempts=[WebhookAttemptPublic.model_validate(a) for a in d.attempts],
                created_at=d.created_at,
                next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
                delivered_at=d.delivered_at,
            )
            for d in webhooks.deliveries(session, job_id=job_id)
        ]
    )


@router.get("/v1/webhooks/secret", response_model=WebhookSecretPublic)
def webhook_secret(session: SessionDep, principal: PrincipalDep) -> WebhookSecretPublic:
    """The secret that signs the owner's webhooks (made on first use)."""
    row = webhooks.secret_for(session, principal.owner_id)
    return WebhookSecretPublic(secret=row.secret, created_at=row.created_at)


@router.post("/v1/webhooks/secret/rotate", response_model=WebhookSecretPublic)
def rotate_webhook_secret(session: SessionDep, principal: PrincipalDep) -> WebhookSecretPublic:
    """A new signing secret; deliveries from now on are signed with it."""
    row = webhooks.secret_for(session, principal.owner_id, rotate=True)
    return WebhookSecretPublic(secret=row.secret, created_at=row.created_at)
