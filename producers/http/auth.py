"""Who calls the HTTP API, and what they may do: bearer API keys, scopes, the auth dependency.

Keys come from ``CARDS_GATEWAY_API_KEYS``: ``TENANT:SCOPES:KEY`` or a bare
``KEY`` (its own tenant, every scope but ``admin``). A caller reads only its
tenant's jobs unless it holds ``admin``. Keys stay ``SecretStr`` until
compared, are compared in constant time against every key, and are never
logged or echoed; short keys and placeholders are refused at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from producers.http.errors import FORBIDDEN, UNAUTHORIZED, GatewayError

__all__ = [
    "DEFAULT_SCOPES",
    "DEV_CALLER",
    "MIN_KEY_LENGTH",
    "ApiKeys",
    "BearerKey",
    "Caller",
    "InvalidApiKeys",
    "Scope",
    "api_key_dependency",
    "is_placeholder",
    "scoped",
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


#: Who calls when the gateway runs with --dev-no-auth: one tenant that may do everything.
DEV_CALLER: Final = Caller("dev", frozenset(Scope))

_BEARER = HTTPBearer(auto_error=False, description="An API key from CARDS_GATEWAY_API_KEYS.")
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]


def api_key_dependency(keys: ApiKeys, dev_no_auth: bool) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller whose bearer key is one of ``keys`` (any caller is
    :data:`DEV_CALLER` with ``dev_no_auth``); else 401."""

    async def require_api_key(credentials: BearerKey) -> Caller:
        if dev_no_auth:
            return DEV_CALLER
        if credentials is None:
            raise GatewayError(
                UNAUTHORIZED, "an API key is required", headers={"WWW-Authenticate": "Bearer"}
            )
        caller = keys.caller(credentials.credentials)
        if caller is None:
            raise GatewayError(
                UNAUTHORIZED,
                "the API key is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return caller

    return require_api_key


def scoped(
    require_api_key: Callable[..., Awaitable[Caller]], scope: Scope
) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, if its key holds ``scope``; else 403."""

    async def require_scope(caller: Caller = Depends(require_api_key)) -> Caller:  # noqa: B008
        if not caller.may(scope):
            raise GatewayError(FORBIDDEN, f"this API key does not hold the {scope.value} scope")
        return caller

    return require_scope
