"""Bearer API keys for the HTTP gateway: parsed from settings, compared in constant time.

Keys come from ``CARDS_GATEWAY_API_KEYS`` (comma-separated, so a key can be
rotated by serving old and new together). They stay ``SecretStr`` until the
moment of comparison, are compared with :func:`hmac.compare_digest` against
every configured key (no early exit, so timing says nothing about which key
nearly matched), and are never logged or echoed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

__all__ = ["MIN_KEY_LENGTH", "ApiKeys", "InvalidApiKeys"]

#: Shorter keys are refused at start-up: a bearer key must not be guessable.
MIN_KEY_LENGTH: Final = 16


class InvalidApiKeys(ValueError):
    """The configured keys cannot be used; the message names the setting, not a key."""


@dataclass(frozen=True, repr=False)
class ApiKeys:
    _keys: tuple[bytes, ...]

    @classmethod
    def parse(cls, configured: SecretStr | None) -> ApiKeys:
        """The keys in ``CARDS_GATEWAY_API_KEYS``; :class:`InvalidApiKeys` if one is too short."""
        if configured is None:
            return cls(())
        keys = [k.strip() for k in configured.get_secret_value().split(",") if k.strip()]
        if any(len(k) < MIN_KEY_LENGTH for k in keys):
            raise InvalidApiKeys(
                f"CARDS_GATEWAY_API_KEYS: every key must be at least {MIN_KEY_LENGTH} characters"
            )
        return cls(tuple(k.encode() for k in keys))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._keys)} keys>)"

    def accepts(self, candidate: str) -> bool:
        """Is ``candidate`` one of the keys? Compares against all of them, in constant time."""
        given = candidate.encode("utf-8", "surrogateescape")
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return any(matches)
