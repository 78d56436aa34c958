"""A small synchronous client for the emulator's admin API (``/_emulator/...``).

Used by tests, benchmarks and the demo to configure faults, seed data and read the
ledger. Every method raises :class:`EmulatorAdminError` on a non-2xx answer, carrying the
admin API's ``{"error": ...}`` message. See :mod:`stripe_emulator.admin_api` for the
server side and ``docs/emulator.md`` for the JSON shapes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx

DEFAULT_TIMEOUT_SECONDS = 10.0
SEED_TIMEOUT_SECONDS = 120.0
FaultSpec = str | Mapping[str, Any]


class EmulatorAdminError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"emulator admin API answered {status}: {message}")
        self.status = status
        self.message = message


class EmulatorAdmin:
    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    # ---------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorAdmin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        response = self._http.request(
            method, f"/_emulator{path}", json=json, params=params, **kwargs
        )
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            raise EmulatorAdminError(response.status_code, message)
        return response.json()

    # --------------------------------------------------------------------- API

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def wait_healthy(self, timeout: float = 10.0) -> dict[str, Any]:
        """Poll ``health()`` until it answers or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Merge knobs into the live config, e.g. ``configure(latency_ms=50,
        faults={"error_500": 0.1})``; returns the resulting config."""
        result: dict[str, Any] = self._call("POST", "/config", json=knobs)
        return result

    def script_faults(
        self,
        customer: str,
        faults: Sequence[FaultSpec],
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> dict[str, Any]:
        """Queue ``faults`` (kind names or ``{"kind", "should_retry"}``) for the next
        matching requests to ``customer`` (writes unless ``method`` says otherwise)."""
        body: dict[str, Any] = {"customer": customer, "faults": list(faults)}
        if method is not None:
            body["method"] = method
        if path is not None:
            body["path"] = path
        result: dict[str, Any] = self._call("POST", "/faults", json=body)
        return result

    def pending_faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")["pending"]
        return result

    def clear_faults(self, customer: str | None = None) -> None:
        self._call("DELETE", "/faults", params={"customer": customer} if customer else None)

    def ledger(
        self, *, events: bool = True, since: int = 0, timeout: float | None = None
    ) -> dict[str, Any]:
        params = {"events": "1" if events else "0", "since": str(since)}
        result: dict[str, Any] = self._call("GET", "/ledger", params=params, timeout=timeout)
        return result

    def reset(self, data: bool = False, *, config: bool = False) -> None:
        self._call("POST", "/reset", json={"data": data, "config": config})

    def seed(
        self, n: int, cards_per_customer: int = 2, account: str | None = None
    ) -> list[dict[str, Any]]:
        body = {"customers": n, "cards_per_customer": cards_per_customer, "account": account}
        result: list[dict[str, Any]] = self._call(
            "POST", "/seed", json=body, timeout=SEED_TIMEOUT_SECONDS
        )
        return result

    def get_customer(self, customer_id: str, account: str | None = None) -> dict[str, Any]:
        """The stored customer with ``sources`` expanded; not counted as an API call."""
        params = {"account": account} if account else None
        result: dict[str, Any] = self._call("GET", f"/customers/{customer_id}", params=params)
        return result

    def captured(self) -> list[dict[str, Any]]:
        """The /v1 exchanges seen while ``capture_requests`` is on, oldest first."""
        result: list[dict[str, Any]] = self._call("GET", "/requests")["requests"]
        return result
