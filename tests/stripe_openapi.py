"""Stripe's published OpenAPI description as the judge of requests and responses.

The description (``spec3.json``, from Stripe's public ``stripe/openapi`` repository)
is read from beside the repository, ``<repo>/../shared/reference/stripe-openapi/``,
or from ``$STRIPE_OPENAPI_SPEC``; it is never copied into the repo. Tests that need
it skip, naming the path, when it is absent. It is loaded once per process.

- :meth:`StripeSpec.request_problems`: a request as it went over the wire (method,
  path, query string, form body, headers) against its operation: nested
  ``parent[child]`` form fields are decoded, string leaves are typed by the schema
  (integers, booleans, arrays from ``x[0]``), and the result is validated with
  ``openapi-schema-validator``. Unknown parameters are refused at every level, as
  Stripe refuses them (the spec closes only the top level).
- :meth:`StripeSpec.response_problems`: a JSON answer against the operation's (or a
  named component's) schema; extra fields pass, missing or mistyped ones do not.

One adaptation of the validator: Stripe writes ``nullable: true`` beside ``anyOf``
(for expandable fields), where OAS 3.0.3 gives it no effect; Stripe's answers put
``null`` there, so ``null`` is accepted when the schema says ``nullable``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jsonschema import validators
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator

from stripe_emulator import forms

REPO = Path(__file__).resolve().parent.parent
SPEC_ENV = "STRIPE_OPENAPI_SPEC"
DEFAULT_SPEC = REPO.parent / "shared" / "reference" / "stripe-openapi" / "spec3.json"
#: Stripe's documented cap on an ``Idempotency-Key`` header.
MAX_IDEMPOTENCY_KEY = 255
_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]+")


def spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


def _nullable_any_of(
    validator: Any, any_of: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if instance is None and schema.get("nullable") is True:
        return
    yield from OAS30Validator.VALIDATORS["anyOf"](validator, any_of, instance, schema)


def _closed_properties(
    validator: Any, properties: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    yield from OAS30Validator.VALIDATORS["properties"](validator, properties, instance, schema)
    if validator.is_type(instance, "object") and "additionalProperties" not in schema:
        for name in instance:
            if name not in properties:
                yield ValidationError(f"unknown parameter {name!r}")


#: Responses: OAS 3.0 with Stripe's ``nullable`` beside ``anyOf``.
ResponseValidator = validators.extend(OAS30Validator, {"anyOf": _nullable_any_of})
#: Requests: the same, with every object that lists its properties closed.
RequestValidator = validators.extend(ResponseValidator, {"properties": _closed_properties})


def _problems(validator: Any, instance: Any) -> list[str]:
    found = []
    for error in validator.iter_errors(instance):
        where = "".join(f"[{p}]" for p in error.absolute_path) or "(root)"
        rule = f"{error.validator}={str(error.validator_value)[:60]}"
        found.append(f"{where}: fails {rule}: …{error.message[-100:]}")
    return found


class StripeSpec:
    """The loaded description, with cached validators per operation."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.version: str = document["info"]["version"]
        self._root = {"components": document["components"]}
        self._routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", path) + "$"), path)
            for path in document["paths"]
        ]

    # ------------------------------------------------------------------ lookup

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(template, operation, path parameters) for a concrete request path."""
        for pattern, template in self._routes:
            match = pattern.match(path)
            ops = self.document["paths"][template]
            if match and method.lower() in ops:
                names = re.findall(r"\{([^}]+)\}", template)
                return template, ops[method.lower()], dict(zip(names, match.groups(), strict=True))
        raise KeyError(f"no operation {method} {path} in the spec")

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def component(self, name: str) -> Mapping[str, Any]:
        return self.document["components"]["schemas"][name]  # type: ignore[no-any-return]

    def body_schema(self, method: str, path: str) -> Mapping[str, Any]:
        _, op, _ = self.operation(method, path)
        content = op["requestBody"]["content"]["application/x-www-form-urlencoded"]
        return content["schema"]  # type: ignore[no-any-return]

    def query_schema(self, op: Mapping[str, Any], where: str) -> dict[str, Any]:
        params = [p for p in op.get("parameters", []) if p["in"] == where]
        return {
            "type": "object",
            "properties": {p["name"]: p["schema"] for p in params},
            "required": [p["name"] for p in params if p.get("required")],
            "additionalProperties": False,
        }

    def _request_validator(self, schema: Mapping[str, Any]) -> Any:
        return RequestValidator({**self._root, **schema})

    # -------------------------------------------------------------- decoding

    def typed(self, schema: Mapping[str, Any], value: Any) -> Any:
        """Form values (strings, nested dicts) typed as ``schema`` says, for validation."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            for branch in schema["anyOf"]:
                candidate = self.typed(branch, value)
                if self._request_validator(branch).is_valid(candidate):
                    return candidate
            return value
        kind = schema.get("type")
        if isinstance(value, str):
            if kind == "integer" and re.fullmatch(r"-?\d+", value):
                return int(value)
            if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", value):
                return float(value)
            if kind == "boolean" and value in ("true", "false"):
                return value == "true"
            return value
        if isinstance(value, dict) and kind == "array":
            if not all(key.isdigit() for key in value):
                return value
            items = schema.get("items", {})
            return [self.typed(items, value[k]) for k in sorted(value, key=int)]
        if isinstance(value, dict):
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            out = {}
            for key, item in value.items():
                sub = props.get(key, extra if isinstance(extra, dict) else {})
                out[key] = self.typed(sub, item)
            return out
        return value

    def decoded(self, schema: Mapping[str, Any], raw: str) -> Any:
        return self.typed(schema, forms.decode(parse_qsl(raw, keep_blank_values=True)))

    # ------------------------------------------------------------- the checks

    def request_problems(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: str = "",
        headers: Mapping[str, str] | None = None,
        stripe_version: str | None = None,
    ) -> list[str]:
        """Why Stripe would refuse this request, by the spec ([] when it would accept it)."""
        try:
            _, op, path_params = self.operation(method, path)
        except KeyError as exc:
            return [str(exc)]
        problems = [
            f"path {p}"
            for p in _problems(self._request_validator(self.query_schema(op, "path")), path_params)
        ]
        query_schema = self.query_schema(op, "query")
        problems += [
            f"query {p}"
            for p in _problems(
                self._request_validator(query_schema), self.decoded(query_schema, query)
            )
        ]
        if body:
            content = op.get("requestBody", {}).get("content", {})
            form = content.get("application/x-www-form-urlencoded")
            if form is None:
                problems.append("body: the operation takes no form body")
            else:
                schema = form["schema"]
                validator = self._request_validator(schema)
                problems += [f"body {p}" for p in _problems(validator, self.decoded(schema, body))]
        problems += _header_problems(method, headers or {}, stripe_version)
        return problems

    def exchange_problems(self, exchange: Mapping[str, Any], stripe_version: str) -> list[str]:
        """Request and answer of one exchange the emulator captured (``capture_requests``)."""
        method, path = exchange["method"], exchange["path"]
        found = self.request_problems(
            method,
            path,
            query=exchange["query"],
            body=exchange["body"],
            headers=exchange["headers"],
            stripe_version=stripe_version,
        )
        return found + self.response_problems(
            json.loads(exchange["response"]), operation=(method, path), status=exchange["status"]
        )

    def response_problems(
        self,
        body: Any,
        *,
        component: str | None = None,
        operation: tuple[str, str] | None = None,
        status: int = 200,
    ) -> list[str]:
        """Why this answer does not fit the spec's schema ([] when it does)."""
        if component is not None:
            schema: Mapping[str, Any] = {"$ref": f"#/components/schemas/{component}"}
        else:
            assert operation is not None
            _, op, _ = self.operation(*operation)
            answer = op["responses"].get(str(status)) or op["responses"]["default"]
            schema = answer["content"]["application/json"]["schema"]
        return _problems(ResponseValidator({**self._root, **schema}), body)


def _header_problems(
    method: str, headers: Mapping[str, str], stripe_version: str | None
) -> list[str]:
    """The headers Stripe's docs (not the spec) describe: version, account, idempotency."""
    lower = {k.lower(): v for k, v in headers.items()}
    problems = []
    if stripe_version is not None and lower.get("stripe-version") != stripe_version:
        problems.append(f"header Stripe-Version is {lower.get('stripe-version')!r}")
    account = lower.get("stripe-account")
    if account is not None and not _ACCOUNT.fullmatch(account):
        problems.append("header Stripe-Account is not an acct_ id")
    key = lower.get("idempotency-key")
    if key is not None and (method.upper() != "POST" or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        problems.append("header Idempotency-Key: only on POST, 1 to 255 characters")
    return problems


@lru_cache(maxsize=1)
def load_spec() -> StripeSpec | None:
    """The description, loaded once per process; None when the file is absent."""
    path = spec_path()
    if not path.is_file():
        return None
    return StripeSpec(json.loads(path.read_text(encoding="utf-8")))


def missing_reason() -> str:
    return (
        f"Stripe's OpenAPI description not found at {spec_path()} "
        f"(set {SPEC_ENV} to its spec3.json to run the conformance checks)"
    )
