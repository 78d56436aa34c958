"""The Stripe edge: the only module that talks to Stripe.

One :class:`stripe.StripeClient` per worker process, reused across jobs, with
an explicit timeout, a pinned ``Stripe-Version`` and no SDK-level retries
(retries are the task's job, so there is one retry policy and one idempotency
key per job). Failures leave this module already classified (see
:mod:`worker.errors`).

Results are the customer object *exactly as Stripe returned it*, with
``sources`` expanded, as the seed API's response shows (and, for the companion
jobs, the card or the list of cards as Stripe returned them).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx
import stripe

from cards.jobs import SetDefaultCardJob, TargetField
from cards.settings import Settings
from worker.errors import InvalidRequest, NoApiKey, NoSuchCustomer, TransientError, classify
from worker.metrics import STRIPE_CALL_SECONDS

__all__ = ["PooledHTTPXClient", "StripeApi", "is_card"]

T = TypeVar("T")

EXPAND: Final = ["sources"]
#: Stripe's largest page; ``list_cards`` follows ``has_more`` for at most
#: ``MAX_LIST_PAGES`` pages, so a listing makes a bounded number of calls.
LIST_PAGE_SIZE: Final = 100
MAX_LIST_PAGES: Final = 10
#: The customer :meth:`StripeApi.probe` asks for; no Stripe id has this shape.
PROBE_CUSTOMER: Final = "cus_cardsworkerbreakerprobe"


def _raw(obj: stripe.StripeObject) -> dict[str, Any]:
    response = obj.last_response
    if response is not None and isinstance(response.data, dict):
        return response.data
    return obj.to_dict()


def _list_page(
    customer: str, params: Any, options: Any, client: stripe.StripeClient
) -> stripe.ListObject[Any]:
    return client.v1.customers.payment_sources.list(customer, params, options)


def is_card(source: Mapping[str, Any]) -> bool:
    """Is this payment source a card (a ``card_…``, or a ``src_…`` of type card)?"""
    kind = source.get("object")
    return kind == "card" or (kind == "source" and source.get("type") == "card")


def _account_options(account: str | None, idempotency_key: str | None = None) -> Any:
    options: dict[str, str] = {}
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    if account is not None:
        options["stripe_account"] = account
    return options


class PooledHTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client, with an ``httpx.Client`` of its own for each thread.

    A thread makes one call at a time, so its client keeps one connection open
    across its jobs (no new TLS handshake per call), and as many connections
    stay open as threads call Stripe. One client shared by every thread would
    need that many in one httpcore pool, which scans all of its connections
    for each idle one on every request and response (quadratic: a fifth of a
    64-thread worker's CPU at 300 ms), and keeps only 20 by default.
    """

    def __init__(self, *, timeout: float) -> None:
        self._local = threading.local()
        self._verify = ssl.create_default_context(cafile=stripe.ca_bundle_path)
        super().__init__(timeout=timeout, allow_sync_methods=True)

    @property
    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=1)
            client = self._local.client = httpx.Client(verify=self._verify, limits=limits)
        return client

    @_client.setter
    def _client(self, shared: httpx.Client | None) -> None:
        # The SDK's __init__ builds one shared client: never used, so closed at once.
        if shared is not None:
            shared.close()


class StripeApi:
    """Stripe calls for jobs. Each is timed (``cards_stripe_call_seconds``) and
    each failure is raised already classified."""

    def __init__(self, client: stripe.StripeClient | None) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeApi:
        if settings.stripe_api_key is None:
            return cls(None)
        client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            stripe_version=settings.stripe_api_version,
            max_network_retries=0,
            http_client=PooledHTTPXClient(timeout=settings.stripe_timeout_seconds),
        )
        return cls(client)

    def _require_client(self) -> stripe.StripeClient:
        if self._client is None:
            raise NoApiKey(
                "worker is misconfigured: STRIPE_API_KEY (or STRIPE_API_KEY_FILE) is not set"
            )
        return self._client

    def _call(self, operation: str, call: Callable[[stripe.StripeClient], T]) -> T:
        """``call(client)``, timed by operation and outcome, its failure classified."""
        client = self._require_client()
        started = time.perf_counter()
        try:
            answer = call(client)
        except stripe.StripeError as exc:
            meaning = classify(exc)
            outcome = "transient" if isinstance(meaning, TransientError) else "permanent"
            STRIPE_CALL_SECONDS.labels(operation, outcome).observe(time.perf_counter() - started)
            raise meaning from None
        STRIPE_CALL_SECONDS.labels(operation, "ok").observe(time.perf_counter() - started)
        return answer

    def _customer(
        self, operation: str, method: str, customer: str, params: dict[str, Any], options: Any
    ) -> dict[str, Any]:
        """A request on one customer, answered as Stripe's JSON.

        Through the SDK's ``raw_request``: the same requestor, headers, retries
        and typed errors as ``client.v1.customers``, without building a
        StripeObject tree that would only be turned back into this dict (a
        quarter of a bulk worker's CPU, measured with py-spy).
        """
        path = f"/v1/customers/{quote(customer, safe='')}"
        response = self._call(
            operation, lambda client: client.raw_request(method, path, **params, **options)
        )
        return dict(response.data)

    def set_default(self, job: SetDefaultCardJob, idempotency_key: str) -> dict[str, Any]:
        """Make the job's card the customer's default; the updated customer."""
        params: dict[str, Any]
        if job.target is TargetField.DEFAULT_PAYMENT_METHOD:
            params = {
                "invoice_settings": {"default_payment_method": job.default_source},
                "expand": EXPAND,
            }
        else:
            params = {"default_source": job.default_source, "expand": EXPAND}
        options = _account_options(job.stripe_account, idempotency_key)
        return self._customer("update", "post", job.userId, params, options)

    def retrieve_customer(self, job: SetDefaultCardJob) -> dict[str, Any]:
        """The customer as Stripe has it now, with ``sources`` expanded."""
        options = _account_options(job.stripe_account)
        return self._customer("retrieve", "get", job.userId, {"expand": EXPAND}, options)

    def probe(self) -> None:
        """One read that needs a valid key and a reachable base URL, and nothing else.

        A customer that cannot exist: Stripe answers 404 once it has accepted the key.
        Raises :class:`~worker.errors.NoApiKey`, :class:`~worker.errors.Misconfigured`
        or :class:`~worker.errors.StripeConnectionFailed` when the worker cannot work.
        """
        try:
            self._customer("probe", "get", PROBE_CUSTOMER, {}, {})
        except (NoSuchCustomer, InvalidRequest):
            return

    def retrieve_payment_method(self, payment_method: str, account: str | None) -> dict[str, Any]:
        """A PaymentMethod as Stripe has it now (its ``customer`` says whose it is)."""
        options = _account_options(account)
        found = self._call(
            "retrieve",
            lambda client: client.v1.payment_methods.retrieve(payment_method, None, options),
        )
        return _raw(found)

    def attach_source(
        self,
        customer: str,
        token: str,
        idempotency_key: str,
        account: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Attach a card from a token (``tok_…``) or card source (``src_…``); the card."""
        params: Any = {"source": token}
        if metadata:
            params["metadata"] = dict(metadata)
        options = _account_options(account, idempotency_key)
        card = self._call(
            "attach_source",
            lambda client: client.v1.customers.payment_sources.create(customer, params, options),
        )
        return _raw(card)

    def list_cards(self, customer: str, account: str | None = None) -> list[dict[str, Any]]:
        """The customer's cards (``card_…`` and card ``src_…``), as Stripe lists them."""
        params: Any = {"limit": LIST_PAGE_SIZE}
        options = _account_options(account)
        cards: list[dict[str, Any]] = []
        for _ in range(MAX_LIST_PAGES):
            page = self._call("list_sources", partial(_list_page, customer, params, options))
            raw = _raw(page)
            items: list[dict[str, Any]] = list(raw.get("data") or [])
            cards.extend(item for item in items if is_card(item))
            if not raw.get("has_more") or not items:
                break
            params = {"limit": LIST_PAGE_SIZE, "starting_after": items[-1]["id"]}
        return cards
