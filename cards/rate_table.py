"""The rate-limit table: requests per second to Stripe, per queue and per Stripe account.

Written as ``CARDS_RATE_LIMITS="cards.bulk=20,cards.live=80,cards.bulk@acct_1Xyz=5"``:
``queue=rate`` applies to each Stripe account's jobs on that queue (Stripe's
limits are per account); ``queue@acct_…=rate`` overrides it for one account.
A queue with no entry is not limited. Parsing is pure, so a bad table fails
at start-up with a message that names the entry. The limiter that applies the
table is :mod:`worker.ratelimit`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["RateTable", "limit_for", "parse_rate_limits"]

RateTable = Mapping[tuple[str, str | None], float]

_ENTRY: Final = re.compile(
    r"(?P<queue>[A-Za-z0-9_.:-]+)(?:@(?P<account>acct_[A-Za-z0-9]+))?=(?P<rate>[0-9]+(?:\.[0-9]+)?)"
)


def parse_rate_limits(text: str) -> dict[tuple[str, str | None], float]:
    """``{(queue, account or None): requests per second}``; ``ValueError`` naming a bad entry."""
    table: dict[tuple[str, str | None], float] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        match = _ENTRY.fullmatch(entry)
        if match is None:
            shown = entry if len(entry) <= 60 else entry[:60] + "…"
            raise ValueError(
                f"CARDS_RATE_LIMITS entry {shown!r} must be queue=rate or queue@acct_…=rate"
            )
        rate = float(match["rate"])
        if rate <= 0:
            raise ValueError(f"CARDS_RATE_LIMITS entry {entry!r} must have a rate above 0")
        table[(match["queue"], match["account"])] = rate
    return table


def limit_for(table: RateTable, queue: str, account: str | None) -> float | None:
    """The rate for a queue and account (the account's own entry first), or None: unlimited."""
    if account is not None and (queue, account) in table:
        return table[(queue, account)]
    return table.get((queue, None))
