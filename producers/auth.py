"""Bearer API keys for the HTTP gateway: who is calling, and what they may do.

Keys come from ``CARDS_GATEWAY_API_KEYS``, comma-separated. Each entry is
``TENANT:SCOPES:KEY`` (scopes ``+``-separated, see :class:`Scope`), or a bare
``KEY``, which is its own tenant with every scope but ``admin``. A caller
reads only its tenant's jobs unless it holds ``admin``; several keys of one
tenant (old and new, while rotating) share its jobs.

Keys stay ``SecretStr`` until the moment of comparison, are compared with
:func:`hmac.compare_digest` against every configured key (no early exit, so
timing says nothing about which key nearly matched), and are never logged or
echoed. Short keys and well-known placeholders are refused at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from pydantic import SecretStr

__all__ = [
    "DEFAULT_SCOPES",
    "MIN_KEY_LENGTH",
    "ApiKeys",
    "Caller",
    "InvalidApiKeys",
    "Scope",
    "is_placeholder",
]

#: Shorter keys are refused at start-up: a bearer key must not be guessable.
MIN_KEY_LENGTH: Final = 16

_TENANT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
#: Words that mark a key copied from an example instead of generated.
_PLACEHOLDER_WORDS: Final = ("replace", "change", "example", "placeholder", "secret", "your-")


class Scope(StrEnum):
    """What a key may do: one action each, and ``admin`` to read every tenant's jobs."""

    DEFAULT = "default"  # POST /api/cards/default
    ASSIGN = "assign"  # POST /api/cards/assign
    LIST = "list"  # GET /api/cards/{customerId}
    READ = "read"  # GET /api/jobs/{job_id}, own tenant's jobs
    ADMIN = "admin"  # GET /api/jobs/{job_id} of any tenant


#: A bare key's scopes: every action on its own jobs.
DEFAULT_SCOPES: Final = frozenset({Scope.DEFAULT, Scope.ASSIGN, Scope.LIST, Scope.READ})


class InvalidApiKeys(ValueError):
    """The configured keys cannot be used; the message names the setting, not a key."""


@dataclass(frozen=True)
class Caller:
    """Who an accepted key belongs to and what it may do."""

    tenant: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def reads(self, owner: str | None) -> bool:
        """May this caller read a job that ``owner`` created (None: no known owner)?"""
        if Scope.ADMIN in self.scopes:
            return True
        return owner == self.tenant and Scope.READ in self.scopes


def is_placeholder(key: str) -> bool:
    """Is ``key`` an example value or a run of one character? (Pure.)"""
    lowered = key.lower()
    return len(set(key)) < 4 or any(word in lowered for word in _PLACEHOLDER_WORDS)


def _bare_tenant(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _entry(number: int, entry: str) -> tuple[bytes, Caller]:
    where = f"CARDS_GATEWAY_API_KEYS entry {number}"
    if ":" in entry:
        tenant, scopes_text, key = [*entry.split(":", 2), "", ""][:3]
        if not _TENANT.fullmatch(tenant):
            raise InvalidApiKeys(
                f"{where}: must be KEY or TENANT:SCOPES:KEY, the tenant lower-case letters, "
                "digits and _ . -"
            )
        try:
            scopes = frozenset(Scope(s.strip()) for s in scopes_text.split("+"))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidApiKeys(f"{where}: scopes must be +-separated from {known}") from None
        caller = Caller(tenant, scopes)
    else:
        key = entry
        caller = Caller(_bare_tenant(key), DEFAULT_SCOPES)
    if len(key) < MIN_KEY_LENGTH:
        raise InvalidApiKeys(
            f"CARDS_GATEWAY_API_KEYS: every key must be at least {MIN_KEY_LENGTH} characters"
        )
    if is_placeholder(key):
        raise InvalidApiKeys(
            f"{where}: the key looks like a placeholder; generate one "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key.encode(), caller


@dataclass(frozen=True, repr=False)
class ApiKeys:
    _keys: tuple[tuple[bytes, Caller], ...]

    @classmethod
    def parse(cls, configured: SecretStr | None) -> ApiKeys:
        """The keys in ``CARDS_GATEWAY_API_KEYS``; :class:`InvalidApiKeys` naming the entry
        (by number, never by value) if one cannot be used."""
        if configured is None:
            return cls(())
        entries = [e.strip() for e in configured.get_secret_value().split(",") if e.strip()]
        return cls(tuple(_entry(n, e) for n, e in enumerate(entries, start=1)))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._keys)} keys>)"

    def caller(self, candidate: str) -> Caller | None:
        """The caller ``candidate`` is the key of, or None. Compares against every key,
        in constant time."""
        given = candidate.encode("utf-8", "surrogateescape")
        found: Caller | None = None
        for key, caller in self._keys:
            if hmac.compare_digest(given, key):
                found = caller
        return found

    def accepts(self, candidate: str) -> bool:
        """Is ``candidate`` one of the keys?"""
        return self.caller(candidate) is not None
