"""``make smoke-stripe``: the whole pipeline against Stripe's test mode.

With a secret test key (``STRIPE_API_KEY=sk_test_…`` or ``STRIPE_API_KEY_FILE``) it
makes two new cards a new customer's default through the pipeline (producer →
private Redis → ``celery worker`` → Stripe), checks the envelopes against what Stripe
then says, and always deletes the customer. Without a test key it skips (exit 0); a
live key is refused (exit 2) before anything runs. The key is never printed; the
broker is always a private ``redis-server``. Step by step: ``docs/internals.md``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import stripe
from pydantic import ValidationError

from cards.settings import Settings
from harness.processes import client_app, run_redis, run_worker
from producers import enqueue_set_default_card, get_result

PREFIX: Final = "smoke-stripe:"
LIVE_PREFIXES: Final = ("sk_live_", "rk_live_")
TEST_PREFIX: Final = "sk_test_"
TOKENS: Final = ("tok_visa", "tok_mastercard")
RESULT_TIMEOUT_SECONDS: Final = 90
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Verdict:
    run: bool
    exit_code: int
    line: str


def verdict(key: str | None) -> Verdict:
    """Run, skip or refuse, from the key alone (pure; the key never appears in ``line``)."""
    if key is not None and key.startswith(LIVE_PREFIXES):
        return Verdict(
            False,
            EXIT_REFUSED,
            f"{PREFIX} refused: STRIPE_API_KEY is a live key; this command creates and "
            f"deletes customers, so it runs only with a test key ({TEST_PREFIX}…)",
        )
    if not key:
        return Verdict(
            False, EXIT_OK, f"{PREFIX} skipped: no Stripe key set (STRIPE_API_KEY={TEST_PREFIX}…)"
        )
    if not key.startswith(TEST_PREFIX):
        return Verdict(
            False,
            EXIT_OK,
            f"{PREFIX} skipped: STRIPE_API_KEY is not a secret test key ({TEST_PREFIX}…)",
        )
    return Verdict(True, EXIT_OK, f"{PREFIX} running against Stripe test mode")


class SmokeFailed(Exception):
    pass


def _client(settings: Settings, key: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": settings.stripe_api_base},
        stripe_version=settings.stripe_api_version,
        max_network_retries=2,
    )


@contextmanager
def _pipeline(logs: Path) -> Iterator[Any]:
    """A private Redis and one worker, as an operator starts them; the producer's app."""
    with run_redis() as server:
        url = server.url()
        env = {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}
        with run_worker(env, logs / "worker.log", concurrency=1):
            yield client_app(url)


def _set_default(app: Any, client: stripe.StripeClient, customer: str, card: str) -> None:
    job_id = enqueue_set_default_card(customer, card, app=app)
    envelope = dict(get_result(job_id, timeout=RESULT_TIMEOUT_SECONDS, app=app))
    if envelope.get("status") is not True:
        raise SmokeFailed(f"job {job_id} for {card} failed: {envelope.get('message')}")
    data: Any = envelope.get("data") or {}
    if data.get("default_source") != card:
        raise SmokeFailed(f"job {job_id} answered another default_source than {card}")
    now = client.v1.customers.retrieve(customer)
    if now.default_source != card:
        raise SmokeFailed(f"Stripe says the default is {now.default_source}, not {card}")
    print(f"{PREFIX} default_source={card} through producer, worker and Stripe: ok")


def smoke(settings: Settings, key: str) -> None:
    """Create, set each default through the pipeline, check, delete (always)."""
    client = _client(settings, key)
    customer = client.v1.customers.create(
        {"source": TOKENS[0], "description": "cards-worker smoke test, safe to delete"}
    )
    try:
        second = client.v1.customers.payment_sources.create(customer.id, {"source": TOKENS[1]})
        cards = [str(customer.default_source), second.id]
        print(f"{PREFIX} customer {customer.id} with cards {cards[0]} and {cards[1]}")
        with (
            tempfile.TemporaryDirectory(prefix="smoke-stripe-") as logs,
            _pipeline(Path(logs)) as app,
        ):
            for card in (cards[1], cards[0]):
                _set_default(app, client, customer.id, card)
    finally:
        client.v1.customers.delete(customer.id)
        print(f"{PREFIX} customer {customer.id} deleted")


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"{PREFIX} failed: the settings are invalid ({exc.error_count()} problem(s))")
        return EXIT_FAILED
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else None
    decided = verdict(key)
    print(decided.line, file=sys.stderr if decided.exit_code == EXIT_REFUSED else sys.stdout)
    if not decided.run:
        return decided.exit_code
    assert key is not None
    try:
        smoke(settings, key)
    except (SmokeFailed, stripe.StripeError, TimeoutError, RuntimeError) as exc:
        print(f"{PREFIX} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{PREFIX} passed")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
