"""One Stripe rate limit shared by every worker process on every host, in Redis.

A token bucket per (queue, Stripe account), updated atomically by Lua scripts
on Redis's own clock. Adaptive: a 429 ``rate_limit`` halves the rate
(:meth:`RateLimiter.throttled`), which climbs back over ``recovery_seconds``.
A job that would wait longer than ``max_wait_seconds`` takes no token and goes
back to the queue; shorter waits reserve a token and sleep, which keeps a
paced stream exactly on budget (see :mod:`worker.middleware.budget`).
Parameters and design: docs/worker.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final

import redis

from cards.lua_scripts import read_lua

__all__ = ["Permit", "RateLimiter", "RedisRateLimiter", "limiter_key"]

KEY_PREFIX: Final = "cards:ratelimit:"
#: Idle buckets disappear after this; a new one starts full.
BUCKET_TTL_SECONDS: Final = 3600
MIN_RATE_FRACTION: Final = 0.05
THROTTLE_FACTOR: Final = 0.5

# Each script is the shared prelude (the current rate, recovering linearly since the
# last throttle), then its own body.
_ACQUIRE_LUA: Final = read_lua("worker", "ratelimit_rate.lua", "ratelimit_acquire.lua")
_THROTTLE_LUA: Final = read_lua("worker", "ratelimit_rate.lua", "ratelimit_throttle.lua")
_RATE_ONLY_LUA: Final = read_lua("worker", "ratelimit_rate.lua", "ratelimit_current.lua")


def limiter_key(queue: str, account: str | None) -> str:
    return f"{KEY_PREFIX}{queue}:{account or '-'}"


@dataclass(frozen=True)
class Permit:
    """``go``: call Stripe after sleeping ``wait`` seconds; else come back in ``wait`` seconds."""

    go: bool
    wait: float


class RateLimiter(ABC):
    """A shared budget of Stripe calls per second, by key."""

    @abstractmethod
    def acquire(self, key: str, rate: float) -> Permit:
        """Take a token for one call at ``rate`` calls/s, or say how long to come back after."""

    @abstractmethod
    def throttled(self, key: str, rate: float) -> float:
        """Stripe answered 429 under this budget: slow down; the new rate."""

    @abstractmethod
    def current_rate(self, key: str, rate: float) -> float:
        """The rate in force now (below ``rate`` while recovering from a throttle)."""


class RedisRateLimiter(RateLimiter):
    def __init__(
        self,
        client: redis.Redis,
        *,
        burst_seconds: float = 0.2,
        max_wait_seconds: float = 1.0,
        recovery_seconds: float = 30.0,
    ) -> None:
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._throttle = client.register_script(_THROTTLE_LUA)
        self._rate = client.register_script(_RATE_ONLY_LUA)
        self.burst_seconds = burst_seconds
        self.max_wait_seconds = max_wait_seconds
        self.recovery_seconds = recovery_seconds

    def acquire(self, key: str, rate: float) -> Permit:
        go, wait = self._acquire(
            keys=[key],
            args=[
                rate,
                self.recovery_seconds,
                self.burst_seconds,
                self.max_wait_seconds,
                BUCKET_TTL_SECONDS,
            ],
        )
        return Permit(go=bool(int(go)), wait=float(wait))

    def throttled(self, key: str, rate: float) -> float:
        return float(
            self._throttle(
                keys=[key],
                args=[
                    rate,
                    self.recovery_seconds,
                    MIN_RATE_FRACTION,
                    THROTTLE_FACTOR,
                    BUCKET_TTL_SECONDS,
                ],
            )
        )

    def current_rate(self, key: str, rate: float) -> float:
        return float(self._rate(keys=[key], args=[rate, self.recovery_seconds]))
