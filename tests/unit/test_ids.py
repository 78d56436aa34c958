"""Each id rule's three forms agree: ``check``, the quick pattern, and the OpenAPI pattern."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cards import ids
from cards.companion_jobs import AssignCardJob, ListCardsJob
from cards.jobs import SetDefaultCardJob

RULES = {
    "customer": ids.CUSTOMER,
    "default_source": ids.DEFAULT_SOURCE,
    "assign_source": ids.ASSIGN_SOURCE,
    "account": ids.ACCOUNT,
    "job_id": ids.JOB_ID,
}
EDGES = "_-.:/ \t\n\x00éK１٣\u200b"


def _values(rule: ids.IdRule) -> st.SearchStrategy[str]:
    starts = [*getattr(rule, "prefixes", ()), "", "a", "tok_", "cus", "-"]
    bodies = st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + "_.:-", max_size=20),
        st.text(alphabet=string.ascii_letters + EDGES, max_size=12),
        st.text(max_size=8),
    )
    long = st.integers(rule.max_length - 8, rule.max_length + 2).map(lambda n: "a" * n)
    suffixes = st.sampled_from(["", ":g1", ":g", ":callback", ":callbacks", "\n"])
    return st.one_of(
        st.builds(lambda s, b, t: s + b + t, st.sampled_from(starts), bodies, suffixes),
        st.builds(lambda s, b: s + b, st.sampled_from(starts), long),
    )


def _accepts(rule: ids.IdRule, value: str) -> bool:
    try:
        rule.check(value, "field")
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", list(RULES))
@given(data=st.data())
def test_quick_and_openapi_patterns_accept_exactly_what_check_accepts(
    name: str, data: st.DataObject
) -> None:
    rule = RULES[name]
    value = data.draw(_values(rule))
    accepted = _accepts(rule, value)
    assert (rule.quick.fullmatch(value) is not None) == accepted
    described = re.fullmatch(rule.pattern.rstrip("$") + r"\Z", value)
    assert (described is not None and len(value) <= rule.max_length) == accepted


def test_each_model_field_carries_its_rule() -> None:
    assert ids.id_rules(SetDefaultCardJob) == {
        "userId": ids.CUSTOMER,
        "default_source": ids.DEFAULT_SOURCE,
        "job_id": ids.JOB_ID,
        "stripe_account": ids.ACCOUNT,
    }
    assert ids.id_rules(AssignCardJob) == {
        "userId": ids.CUSTOMER,
        "job_id": ids.JOB_ID,
        "stripe_account": ids.ACCOUNT,
        "source": ids.ASSIGN_SOURCE,
    }
    assert set(ids.id_rules(ListCardsJob)) == {"userId", "job_id", "stripe_account"}


@pytest.mark.parametrize(
    ("rule", "value", "message"),
    [
        (ids.CUSTOMER, "card_1", 'userId must start with "cus_"'),
        (ids.DEFAULT_SOURCE, "x", 'userId must start with "card_" or "src_" or "pm_"'),
        (ids.ASSIGN_SOURCE, "tok_a-b", 'userId must be "tok_" followed by letters and digits only'),
        (ids.ACCOUNT, "acct_" + "a" * 251, "userId must be at most 255 characters"),
        (ids.JOB_ID, "a:g12", 'userId must not end with ":g<digits>" or ":callback" (reserved)'),
    ],
)
def test_messages_name_the_field_and_the_rule(rule: ids.IdRule, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        rule.check(value, "userId")
