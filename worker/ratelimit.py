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

__all__ = ["Permit", "RateLimiter", "RedisRateLimiter", "limiter_key"]

KEY_PREFIX: Final = "cards:ratelimit:"
#: Idle buckets disappear after this; a new one starts full.
BUCKET_TTL_SECONDS: Final = 3600
MIN_RATE_FRACTION: Final = 0.05
THROTTLE_FACTOR: Final = 0.5

# Shared by the scripts: the current rate, recovering linearly since the last throttle.
_RATE_LUA = """
local function current_rate(state, now, full, recovery)
  local floor_rate = tonumber(state[3])
  if not floor_rate then return full end
  local since = now - tonumber(state[4])
  return math.min(full, floor_rate + full * since / recovery)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local full = tonumber(ARGV[1])
local recovery = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'floor', 'throttled_at')
local rate = current_rate(state, now, full, recovery)
"""

_ACQUIRE_LUA = (
    _RATE_LUA
    + """
local burst = math.max(1, full * tonumber(ARGV[3]))
local max_wait = tonumber(ARGV[4])
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
  if wait > max_wait then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
    return {0, tostring(wait)}
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, tostring(wait)}
"""
)

_THROTTLE_LUA = (
    _RATE_LUA
    + """
local lowest = full * tonumber(ARGV[3])
local slowed = math.max(lowest, rate * tonumber(ARGV[4]))
local tokens = math.min(0, tonumber(state[1]) or 0)
redis.call('HSET', KEYS[1], 'floor', tostring(slowed), 'throttled_at', tostring(now),
           'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return tostring(slowed)
"""
)

_RATE_ONLY_LUA = _RATE_LUA + "\nreturn tostring(rate)\n"


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
