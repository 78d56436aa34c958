"""``make smoke-stripe`` decides from the key alone: run, skip (exit 0) or refuse (exit 2)."""

from __future__ import annotations

import pytest

from harness.smoke_stripe import EXIT_OK, EXIT_REFUSED, verdict

SECRET = "0123456789abcdefSECRET"


@pytest.mark.parametrize(
    ("key", "run", "exit_code", "says"),
    [
        (None, False, EXIT_OK, "skipped: no Stripe key set"),
        ("", False, EXIT_OK, "skipped: no Stripe key set"),
        (f"sk_live_{SECRET}", False, EXIT_REFUSED, "refused: STRIPE_API_KEY is a live key"),
        (f"rk_live_{SECRET}", False, EXIT_REFUSED, "refused: STRIPE_API_KEY is a live key"),
        (f"rk_test_{SECRET}", False, EXIT_OK, "skipped: STRIPE_API_KEY is not a secret test key"),
        (f"pk_test_{SECRET}", False, EXIT_OK, "skipped: STRIPE_API_KEY is not a secret test key"),
        (f"sk_test_{SECRET}", True, EXIT_OK, "running against Stripe test mode"),
    ],
)
def test_verdict(key: str | None, run: bool, exit_code: int, says: str) -> None:
    decided = verdict(key)
    assert (decided.run, decided.exit_code) == (run, exit_code)
    assert decided.line.startswith("smoke-stripe: ")
    assert says in decided.line
    assert "\n" not in decided.line
    assert SECRET not in decided.line
