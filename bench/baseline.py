"""The baseline: a plain Celery task calling the stripe SDK, with Celery's defaults.

No validation, no idempotency key, no retry policy, default prefork settings and
the SDK's default HTTP client: what a team would write first. One client per
process, as the SDK's docs suggest.

Run: ``celery -A bench.baseline worker`` with CELERY_BROKER_URL, STRIPE_API_KEY
and STRIPE_API_BASE set.
"""

from __future__ import annotations

import os
from typing import Any

import stripe
from celery import Celery

app = Celery(
    "baseline",
    broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", os.environ.get("CELERY_BROKER_URL")),
)
app.conf.task_default_queue = "baseline"

_client: stripe.StripeClient | None = None


def client() -> stripe.StripeClient:
    global _client
    if _client is None:
        _client = stripe.StripeClient(
            os.environ["STRIPE_API_KEY"],
            base_addresses={"api": os.environ["STRIPE_API_BASE"]},
        )
    return _client


@app.task(name="baseline.set_default_card")
def set_default_card(userId: str, default_source: str) -> dict[str, Any]:
    customer = client().v1.customers.update(
        userId, {"default_source": default_source, "expand": ["sources"]}
    )
    return {
        "status": True,
        "message": "Método de pago actualizado con éxito",
        "data": customer.to_dict(),
    }
