"""The id rules of every job contract, each written once as an annotated type.

An id type (``CustomerId``, ``JobId``, …) is ``Annotated[StrictStr, <rule>]``; the
rule validates in pydantic models, and gives the fast-path pattern (``quick``,
for ``fullmatch``, length cap included) and the OpenAPI pattern (``pattern``,
with ``max_length`` beside it) that accept exactly the same values.
Messages name the field and the rule, never the value. See docs/contract.md.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from types import UnionType
from typing import Annotated, Any, Final, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    StrictStr,
    ValidationInfo,
)
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "ACCOUNT",
    "ASSIGN_SOURCE",
    "CUSTOMER",
    "DEFAULT_SOURCE",
    "HTTP_URL_PATTERN",
    "JOB_ID",
    "MAX_CALLBACK_URL_LENGTH",
    "MAX_JOB_ID_LENGTH",
    "MAX_STRIPE_ID_LENGTH",
    "AccountId",
    "AssignSourceId",
    "CallbackUrl",
    "CustomerId",
    "DefaultSourceId",
    "IdRule",
    "JobId",
    "JobIdRule",
    "StripeIdRule",
    "check_job_id",
    "check_stripe_id",
    "id_rules",
]

#: Stripe ids are prefix + letters and digits; Stripe documents 255 as the cap.
MAX_STRIPE_ID_LENGTH: Final = 255
#: job_id becomes part of the idempotency key (Stripe allows 255 characters).
MAX_JOB_ID_LENGTH: Final = 128
MAX_CALLBACK_URL_LENGTH: Final = 2048
#: What the OpenAPI schema says of a callback URL (pydantic's AnyHttpUrl decides).
HTTP_URL_PATTERN: Final = r"^https?://"

_ALNUM: Final = "[A-Za-z0-9]"
_JOB_ID_FIRST: Final = _ALNUM
_JOB_ID_REST: Final = "[A-Za-z0-9_.:-]"
#: Suffixes of ids derived from a job id (a key generation's idempotency key
#: ``…:g2``, the callback task ``…:callback``): no job id may end with one, so
#: no job id can name another job's derived id.
_RESERVED: Final = "g[0-9]+|callback"


class IdRule(ABC):
    """One id rule: ``check`` validates, ``quick`` and ``pattern`` accept the same strings.

    As ``Annotated`` metadata it runs ``check`` after pydantic's type check, with
    the model field's name in the message.
    """

    max_length: int
    #: Accepts (``fullmatch``) exactly the strings ``check`` accepts.
    quick: re.Pattern[str]
    #: The OpenAPI pattern (``^…$``); together with ``max_length``, the same set.
    pattern: str

    def json_schema(self) -> dict[str, Any]:
        """The rule as OpenAPI keywords, for a path or query parameter."""
        return {"pattern": self.pattern, "maxLength": self.max_length}

    @abstractmethod
    def check(self, value: str, field: str) -> str:
        """``value`` if it follows the rule; else ``ValueError`` naming ``field``."""

    def _validate(self, value: str, info: ValidationInfo) -> str:
        return self.check(value, info.field_name or "value")

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.with_info_after_validator_function(self._validate, handler(source))


def _one_of(prefixes: tuple[str, ...]) -> str:
    """``cus_``, or ``(card|src|pm)_`` for several prefixes (all end with ``_``)."""
    if len(prefixes) == 1:
        return re.escape(prefixes[0])
    stems = [re.escape(p.removesuffix("_")) for p in prefixes]
    return "(" + "|".join(stems) + ")_"


class StripeIdRule(IdRule):
    """A Stripe id: one of ``prefixes``, then letters and digits, at most 255 characters."""

    def __init__(self, prefixes: tuple[str, ...], max_length: int = MAX_STRIPE_ID_LENGTH) -> None:
        assert all(p.endswith("_") for p in prefixes), prefixes
        self.prefixes = prefixes
        self.max_length = max_length
        bodies = (f"{re.escape(p)}{_ALNUM}{{1,{max_length - len(p)}}}" for p in prefixes)
        self.quick = re.compile("|".join(bodies))
        self.pattern = f"^{_one_of(prefixes)}{_ALNUM}+$"

    def check(self, value: str, field: str) -> str:
        return check_stripe_id(value, field, self.prefixes, self.max_length)


class JobIdRule(IdRule):
    """A job id: letters, digits, ``_ . : -``, at most 128, not ending with a reserved suffix."""

    def __init__(self, max_length: int = MAX_JOB_ID_LENGTH) -> None:
        self.max_length = max_length
        rest = f"{_JOB_ID_REST}{{0,{max_length - 1}}}"
        self.quick = re.compile(rf"(?!.*:(?:{_RESERVED})\Z){_JOB_ID_FIRST}{rest}")
        self.pattern = rf"^(?!.*:({_RESERVED})$){_JOB_ID_FIRST}{_JOB_ID_REST}*$"

    def check(self, value: str, field: str) -> str:
        return check_job_id(value, field, self.max_length)


_ID_BODY = re.compile(f"{_ALNUM}+")
_JOB_ID = re.compile(f"{_JOB_ID_FIRST}{_JOB_ID_REST}*")
_RESERVED_SUFFIX = re.compile(f".*:(?:{_RESERVED})")


def check_stripe_id(
    value: str, field: str, prefixes: tuple[str, ...], max_length: int = MAX_STRIPE_ID_LENGTH
) -> str:
    """``value`` if it is ``<prefix><letters and digits>``; else ``ValueError`` naming ``field``."""
    if not value.startswith(prefixes):
        wanted = " or ".join(f'"{p}"' for p in prefixes)
        raise ValueError(f"{field} must start with {wanted}")
    if len(value) > max_length:
        raise ValueError(f"{field} must be at most {max_length} characters")
    prefix = next(p for p in prefixes if value.startswith(p))
    if not _ID_BODY.fullmatch(value[len(prefix) :]):
        raise ValueError(f'{field} must be "{prefix}" followed by letters and digits only')
    return value


def check_job_id(value: str, field: str = "job_id", max_length: int = MAX_JOB_ID_LENGTH) -> str:
    """``value`` if it is a valid job id; else ``ValueError`` naming ``field``."""
    if len(value) > max_length:
        raise ValueError(f"{field} must be at most {max_length} characters")
    if not _JOB_ID.fullmatch(value):
        raise ValueError(
            f"{field} must be letters, digits and _ . : - only, starting with a letter or digit"
        )
    if _RESERVED_SUFFIX.fullmatch(value):
        raise ValueError(f'{field} must not end with ":g<digits>" or ":callback" (reserved)')
    return value


CUSTOMER: Final = StripeIdRule(("cus_",))
#: ``card_``/``src_`` set ``default_source``; ``pm_`` sets the default PaymentMethod.
DEFAULT_SOURCE: Final = StripeIdRule(("card_", "src_", "pm_"))
#: A card token (``tok_…``, single use) or a reusable card source (``src_…``).
ASSIGN_SOURCE: Final = StripeIdRule(("tok_", "src_"))
ACCOUNT: Final = StripeIdRule(("acct_",))
JOB_ID: Final = JobIdRule()

CustomerId = Annotated[StrictStr, CUSTOMER]
DefaultSourceId = Annotated[StrictStr, DEFAULT_SOURCE]
AssignSourceId = Annotated[StrictStr, ASSIGN_SOURCE]
AccountId = Annotated[StrictStr, ACCOUNT]
JobId = Annotated[StrictStr, JOB_ID]


def _no_credentials(value: AnyHttpUrl, info: ValidationInfo) -> AnyHttpUrl:
    # Credentials would be sent to whoever answers, as Basic auth.
    if value.username or value.password:
        raise ValueError(f"{info.field_name or 'value'} must not contain credentials")
    return value


CallbackUrl = Annotated[
    AnyHttpUrl, Field(max_length=MAX_CALLBACK_URL_LENGTH), AfterValidator(_no_credentials)
]


def _rule_in(annotation: Any) -> IdRule | None:
    """The id rule an annotation carries, looking through ``X | None``."""
    if get_origin(annotation) in (Union, UnionType):
        rules = [r for arg in get_args(annotation) if (r := _rule_in(arg)) is not None]
        return rules[0] if len(rules) == 1 else None
    if get_origin(annotation) is Annotated:
        return next((m for m in get_args(annotation)[1:] if isinstance(m, IdRule)), None)
    return None


def id_rules(model: type[BaseModel]) -> dict[str, IdRule]:
    """The id rule of each of ``model``'s fields that has one, by field name."""
    found: dict[str, IdRule] = {}
    for name, info in model.model_fields.items():
        rule = next((m for m in info.metadata if isinstance(m, IdRule)), None)
        rule = rule or _rule_in(info.annotation)
        if rule is not None:
            found[name] = rule
    return found
