"""Response bodies of the webhook routes: a job's deliveries and the owner's signing secret."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas import UtcDateTime


class WebhookAttemptPublic(BaseModel):
    at: str
    status_code: int | None
    error: str | None
    seconds: float | None = None


class WebhookDeliveryPublic(BaseModel):
    id: str = Field(description="the webhook-id header of the delivery")
    event: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttemptPublic]
    created_at: UtcDateTime
    next_attempt_at: UtcDateTime | None
    delivered_at: UtcDateTime | None


class WebhookDeliveriesPublic(BaseModel):
    items: list[WebhookDeliveryPublic]


class WebhookSecretPublic(BaseModel):
    secret: str = Field(description="whsec_...: verify webhook-signature with it")
    created_at: UtcDateTime
