"""Per-endpoint parameter schemas and their validation.

Validation is the step *before* an endpoint "starts executing" in Stripe's idempotency
model: a request refused here is answered 400 and nothing is saved under its
``Idempotency-Key``. A schema maps parameter names to :class:`Param`; :func:`validate`
walks the decoded form and returns cleaned values. Unknown names anywhere give
``parameter_unknown`` with the full bracketed name as ``param``, like Stripe. The
parameter types and their errors: ``docs/emulator.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import StripeError, empty_parameter, invalid_request, missing_parameter
from .errors import unknown_parameter as _unknown

Kind = Literal["string", "integer", "boolean", "metadata", "object", "list", "string_or_object"]
Schema = Mapping[str, "Param"]

METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
LIST_MAX_ITEMS = 100
STRING_MAX_LENGTH = 5000
"""Stripe's ``maxLength`` for a string parameter that names no other."""
QUOTED_PREFIX = 20
"""How much of an over-long string a refusal quotes back."""


@dataclass(frozen=True, slots=True)
class Param:
    kind: Kind
    required: bool = False
    unsettable: bool = False
    choices: frozenset[str] | None = None
    invalid_choice: str | None = None
    """Message template for a value outside ``choices``; ``{value}`` and ``{param}``."""
    fields: Schema | None = None
    item: Param | None = None
    max_length: int | None = None


def string(
    *,
    required: bool = False,
    unsettable: bool = False,
    choices: frozenset[str] | None = None,
    invalid_choice: str | None = None,
    max_length: int = STRING_MAX_LENGTH,
) -> Param:
    return Param(
        "string",
        required=required,
        unsettable=unsettable,
        choices=choices,
        invalid_choice=invalid_choice,
        max_length=max_length,
    )


def integer(*, required: bool = False) -> Param:
    return Param("integer", required=required)


def boolean() -> Param:
    return Param("boolean")


def metadata() -> Param:
    return Param("metadata", unsettable=True)


def obj(fields: Schema, *, required: bool = False, unsettable: bool = False) -> Param:
    return Param("object", required=required, unsettable=unsettable, fields=fields)


def string_or_object(fields: Schema, *, required: bool = False) -> Param:
    """A parameter that is either an id (``source=tok_x``) or a hash (``source[number]=``)."""
    return Param("string_or_object", required=required, fields=fields, max_length=STRING_MAX_LENGTH)


def array(item: Param) -> Param:
    return Param("list", item=item)


def expand(*allowed: str) -> Param:
    return array(
        string(
            choices=frozenset(allowed),
            invalid_choice="This property cannot be expanded ({value}).",
        )
    )


def validate(schema: Schema, data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in data.items():
        full = f"{prefix}[{name}]" if prefix else name
        spec = schema.get(name)
        if spec is None:
            raise _unknown(full)
        out[name] = _clean(spec, raw, full)
    for name, spec in schema.items():
        if spec.required and out.get(name) is None:
            full = f"{prefix}[{name}]" if prefix else name
            if name in out:
                raise empty_parameter(full)
            raise missing_parameter(full)
    return out


def _clean(spec: Param, raw: Any, full: str) -> Any:
    kind = spec.kind
    if kind == "string":
        if not isinstance(raw, str):
            raise invalid_request(f"Invalid string: {full} must be a string", param=full)
        if raw == "":
            if spec.unsettable:
                return None
            raise empty_parameter(full)
        _check_length(spec, raw, full)
        if spec.choices is not None and raw not in spec.choices:
            template = spec.invalid_choice or "Invalid {param}: must be one of {options}"
            raise invalid_request(
                template.format(value=raw, param=full, options=", ".join(sorted(spec.choices))),
                param=full,
            )
        return raw
    if kind == "integer":
        if not isinstance(raw, str):
            raise invalid_request(f"Invalid integer: {full} must be an integer", param=full)
        if raw == "":
            raise empty_parameter(full)
        try:
            return int(raw, 10)
        except ValueError:
            raise invalid_request(
                f"Invalid integer: {raw}", code="parameter_invalid_integer", param=full
            ) from None
    if kind == "boolean":
        if raw in ("true", "false"):
            return raw == "true"
        raise invalid_request(f"Invalid boolean: {raw}", param=full)
    if kind == "metadata":
        return _clean_metadata(raw, full)
    if kind == "string_or_object":
        if isinstance(raw, str):
            if raw == "":
                raise empty_parameter(full)
            _check_length(spec, raw, full)
            return raw
        assert spec.fields is not None
        return validate(spec.fields, raw, full)
    if kind == "object":
        if raw == "" and spec.unsettable:
            return None
        if not isinstance(raw, dict):
            raise invalid_request("Invalid hash", param=full)
        assert spec.fields is not None
        return validate(spec.fields, raw, full)
    # list
    assert spec.item is not None
    if not isinstance(raw, dict):
        raise invalid_request("Invalid array", param=full)
    return _clean_list(spec.item, raw, full)


def _check_length(spec: Param, raw: str, full: str) -> None:
    if spec.max_length is not None and len(raw) > spec.max_length:
        raise invalid_request(
            f"Invalid string: {raw[:QUOTED_PREFIX]}...; must be at most "
            f"{spec.max_length} characters",
            param=full,
        )


def _clean_list(item: Param, raw: dict[str, Any], full: str) -> list[Any]:
    if len(raw) > LIST_MAX_ITEMS:
        raise invalid_request(f"Invalid array: at most {LIST_MAX_ITEMS} items", param=full)
    indexed: list[tuple[int, Any]] = []
    for key, value in raw.items():
        if not key.isdigit():
            raise invalid_request("Invalid array", param=full)
        indexed.append((int(key), value))
    indexed.sort(key=lambda pair: pair[0])
    return [_clean(item, value, f"{full}[{index}]") for index, value in indexed]


def _clean_metadata(raw: Any, full: str) -> dict[str, str] | None:
    if raw == "":
        return None
    if not isinstance(raw, dict):
        raise invalid_request("Invalid hash", param=full)
    if len(raw) > METADATA_MAX_KEYS:
        raise invalid_request(
            f"Invalid {full}: metadata may have at most {METADATA_MAX_KEYS} keys", param=full
        )
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid_request("Invalid string", param=f"{full}[{key}]")
        if len(key) > METADATA_MAX_KEY_LENGTH:
            raise invalid_request(
                f"Metadata keys can have up to {METADATA_MAX_KEY_LENGTH} characters",
                param=f"{full}[{key}]",
            )
        if len(value) > METADATA_MAX_VALUE_LENGTH:
            raise invalid_request(
                f"Metadata values can have up to {METADATA_MAX_VALUE_LENGTH} characters",
                param=f"{full}[{key}]",
            )
        out[key] = value
    return out


__all__ = [
    "Param",
    "Schema",
    "StripeError",
    "array",
    "boolean",
    "expand",
    "integer",
    "metadata",
    "obj",
    "string",
    "string_or_object",
    "validate",
]
