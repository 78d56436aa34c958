"""Object identifiers shaped like Stripe's.

Stripe ids are a type prefix plus base62 characters: 14 for customers (``cus_``) and
request ids (``req_``), 24 for cards, tokens, sources and payment methods. They come from
a private, OS-seeded generator so that ``--seed`` (which drives fault injection) does not
make ids repeat across restarts; at 62**14 values collisions are not a practical concern,
and the store still re-draws on the off chance one happens.
"""

from __future__ import annotations

import os
import random
import string

ALPHABET = string.ascii_letters + string.digits
SHORT_ID_LENGTH = 14
LONG_ID_LENGTH = 24

_rng = random.Random(os.urandom(16))
_choices = _rng.choices


def new_id(prefix: str, length: int = LONG_ID_LENGTH) -> str:
    return prefix + "".join(_choices(ALPHABET, k=length))


def request_id() -> str:
    return new_id("req_", SHORT_ID_LENGTH)


def customer_id() -> str:
    return new_id("cus_", SHORT_ID_LENGTH)


def random_upper(length: int) -> str:
    return "".join(_choices(string.ascii_uppercase + string.digits, k=length))
