"""The Stripe edge: the only module that talks to Stripe.

One :class:`stripe.StripeClient` per worker process, reused across jobs, with
an explicit timeout and no SDK-level retries (retries are the task's job, so
there is one retry policy and one idempotency key per job). Failures leave this
module already classified (see :mod:`worker.errors`).

Results are the customer object *exactly as Stripe returned it*, with
``sources`` expanded, as the seed API's response shows.
"""

from __future__ import annotations

from typing import Any, Final

import stripe

from cards.jobs import SetDefaultCardJob, TargetField
from cards.settings import Settings
from worker.errors import Misconfigured, classify

__all__ = ["StripeGateway"]

EXPAND: Final = ["sources"]


def _raw(obj: stripe.StripeObject) -> dict[str, Any]:
    response = obj.last_response
    if response is not None and isinstance(response.data, dict):
        return response.data
    return obj.to_dict()


class StripeGateway:
    def __init__(self, client: stripe.StripeClient | None) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeGateway:
        if settings.stripe_api_key is None:
            return cls(None)
        client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=0,
            http_client=stripe.HTTPXClient(
                timeout=settings.stripe_timeout_seconds, allow_sync_methods=True
            ),
        )
        return cls(client)

    def _require_client(self) -> stripe.StripeClient:
        if self._client is None:
            raise Misconfigured(
                "worker is misconfigured: STRIPE_API_KEY (or STRIPE_API_KEY_FILE) is not set"
            )
        return self._client

    @staticmethod
    def _options(job: SetDefaultCardJob, idempotency_key: str | None = None) -> Any:
        options: dict[str, str] = {}
        if idempotency_key is not None:
            options["idempotency_key"] = idempotency_key
        if job.stripe_account is not None:
            options["stripe_account"] = job.stripe_account
        return options

    def set_default(self, job: SetDefaultCardJob, idempotency_key: str) -> dict[str, Any]:
        """Make the job's card the customer's default; the updated customer."""
        client = self._require_client()
        params: Any
        if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
            params = {
                "invoice_settings": {"default_payment_method": job.default_source},
                "expand": EXPAND,
            }
        else:
            params = {"default_source": job.default_source, "expand": EXPAND}
        try:
            customer = client.v1.customers.update(
                job.userId, params, self._options(job, idempotency_key)
            )
        except stripe.StripeError as exc:
            raise classify(exc) from None
        return _raw(customer)

    def retrieve_customer(self, job: SetDefaultCardJob) -> dict[str, Any]:
        """The customer as Stripe has it now, with ``sources`` expanded."""
        client = self._require_client()
        try:
            customer = client.v1.customers.retrieve(
                job.userId, {"expand": EXPAND}, self._options(job)
            )
        except stripe.StripeError as exc:
            raise classify(exc) from None
        return _raw(customer)
