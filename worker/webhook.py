"""The callback edge: the only module that sends HTTP to a job's ``callback_url``.

Through drawbridge (SSRF-safe httpx): every request resolves the host once,
checks every address against :mod:`cards.destinations`' rules and connects to
the checked address itself, so a DNS rebinding is judged again. No redirects,
no proxies from the environment, no keep-alive, the response body never read.
Details: docs/worker.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final

import drawbridge
import httpx

from cards.destinations import (
    BLOCKED_NETWORKS,
    METADATA_ADDRESSES,
    Allowlist,
    Network,
    default_port,
    normalize_host,
    refusal,
)
from worker.callback_policy import AttemptOutcome

__all__ = ["CALLBACK_TIMEOUT_SECONDS", "CallbackSender"]

#: Connect, write, read and pool timeout of one callback attempt.
CALLBACK_TIMEOUT_SECONDS: Final = 10.0
USER_AGENT: Final = "cards-worker-callbacks/1"
_ALL_PORTS: Final = frozenset(range(1, 65536))
_METADATA_NETWORKS: Final[frozenset[Network]] = frozenset(
    ipaddress.ip_network(address) for address in METADATA_ADDRESSES
)


def _policy(
    *,
    allow_private: bool,
    allowed: frozenset[Network] = frozenset(),
    blocked: frozenset[Network],
    timeout: float,
) -> drawbridge.Policy:
    return drawbridge.Policy(
        allow_private=allow_private,
        ip_allowlist=allowed,
        ip_blocklist=blocked,
        allow_ports=_ALL_PORTS,
        max_redirects=0,
        timeout=timeout,
        user_agent=USER_AGENT,
        verify_ssl=True,
    )


class CallbackSender:
    """POSTs one callback and says what came of it; never raises for the receiver's doing."""

    def __init__(self, allowlist: Allowlist, timeout: float = CALLBACK_TIMEOUT_SECONDS) -> None:
        self._allowlist = allowlist
        blocked = frozenset(network for network, _ in BLOCKED_NETWORKS) | _METADATA_NETWORKS

        def strict(allowed: frozenset[Network]) -> drawbridge.SyncClient:
            return drawbridge.SyncClient(
                _policy(allow_private=False, allowed=allowed, blocked=blocked, timeout=timeout)
            )

        self._strict = strict(frozenset())
        self._strict_at = {
            port: strict(allowlist.networks_at(port)) for port in {p for _, p in allowlist.networks}
        }
        self._named = drawbridge.SyncClient(
            _policy(allow_private=True, blocked=_METADATA_NETWORKS, timeout=timeout)
        )

    def close(self) -> None:
        for client in (self._strict, self._named, *self._strict_at.values()):
            client.close()

    def _client_for(self, url: str) -> drawbridge.SyncClient:
        parsed = httpx.URL(url)
        host = normalize_host(parsed.host)
        port = parsed.port or default_port(parsed.scheme)
        if self._allowlist.allows_host(host, port):
            return self._named
        return self._strict_at.get(port, self._strict)

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        try:
            client = self._client_for(url)
            with client.stream("POST", url, content=body, headers=dict(headers)) as response:
                return AttemptOutcome(
                    status=response.status_code,
                    retry_after=response.headers.get("retry-after"),
                )
        except drawbridge.BlockedAddressError as exc:
            reason = refusal(exc.ip) or "a non-public address"
            return AttemptOutcome(refused=f"callback_url host resolves to {reason} ({exc.ip})")
        except (
            drawbridge.BlockedDomainError,
            drawbridge.UnsafePortError,
            drawbridge.UnsafeSchemeError,
        ) as exc:
            return AttemptOutcome(refused=f"callback_url is not allowed ({type(exc).__name__})")
        except httpx.InvalidURL:
            return AttemptOutcome(refused="callback_url is not a valid URL")
        except drawbridge.DrawbridgeDNSError:
            return AttemptOutcome(error="callback_url host cannot be resolved")
        except httpx.TimeoutException as exc:
            return AttemptOutcome(error=f"timed out ({type(exc).__name__})")
        except (httpx.HTTPError, drawbridge.DrawbridgeError) as exc:
            return AttemptOutcome(error=f"connection failed ({type(exc).__name__})")
