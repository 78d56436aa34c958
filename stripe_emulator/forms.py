"""Decoding of Stripe's form encoding (``application/x-www-form-urlencoded`` with brackets).

:func:`decode` turns the SDKs' flat bracket pairs (``metadata[order]=42``,
``expand[0]=sources``, ``expand[]=sources``) into nested ``dict``s whose leaves are
``str``. Arrays stay dicts keyed by the decimal index; :mod:`stripe_emulator.params`
turns them into lists only where a schema expects a list, so a metadata key ``"0"`` is
not mangled. Malformed keys are refused or kept whole, never silently reinterpreted
(the choices: ``docs/emulator.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from .errors import StripeError, invalid_request

MAX_PAIRS = 2000
"""Refuse absurd bodies early: Stripe objects never need this many parameters."""


def parse_pairs(raw: str) -> list[tuple[str, str]]:
    """Split a query string or form body into ``(key, value)`` pairs, keeping blanks."""
    if not raw:
        return []
    try:
        return parse_qsl(
            raw, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_PAIRS
        )
    except ValueError as exc:
        raise invalid_request(f"Invalid request body: {exc}") from None


def split_key(key: str) -> list[str]:
    """``a[b][0]`` -> ``["a", "b", "0"]``; ``a[]`` -> ``["a", ""]``; ``a[b`` -> ``["a[b"]``."""
    start = key.find("[")
    if start <= 0 or not key.endswith("]"):
        return [key]
    parts = [key[:start]]
    rest = key[start:]
    while rest:
        if rest[0] != "[":
            return [key]
        end = rest.find("]")
        if end < 0:
            return [key]
        inner = rest[1:end]
        if "[" in inner:
            return [key]
        parts.append(inner)
        rest = rest[end + 1 :]
    return parts


def _display(parts: list[str]) -> str:
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest flat bracket pairs. Raises :class:`StripeError` on conflicting shapes."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        node = root
        last = len(parts) - 1
        for depth, part in enumerate(parts):
            if part == "" and depth > 0:
                part = str(len(node))
                parts[depth] = part
            if depth == last:
                if isinstance(node.get(part), dict):
                    raise _shape_error(parts[: depth + 1])
                node[part] = value
                break
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            elif not isinstance(child, dict):
                raise _shape_error(parts[: depth + 1])
            node = child
    return root


def _shape_error(parts: list[str]) -> StripeError:
    return invalid_request("Invalid hash", param=_display(parts))
