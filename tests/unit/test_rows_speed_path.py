"""The scan's quick path decides every row exactly as validate_job and read_rows do.

``accepts_quickly`` must say yes exactly where ``validate_job`` accepts (over the
fields a migration row may carry, as plain strings), and ``check_rows`` must
count the same rows, hand on the same invalid rows with the same lines and
problems, and the same own job ids, as ``read_rows`` does, whatever the text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cards.jobs import (
    MAX_JOB_ID_LENGTH,
    MAX_STRIPE_ID_LENGTH,
    SOURCE_PREFIXES,
    InvalidJob,
    accepts_quickly,
    validate_job,
)
from producers.migrate.scan import (
    ALLOWED_FIELDS,
    FileFormat,
    UnreadableFile,
    check_rows,
    read_rows,
    scan,
)

ALNUM = string.ascii_letters + string.digits
#: Characters next to the rules' edges: job id punctuation, whitespace, controls, a comma
#: and quote for the CSV, and non-ASCII letters and digits that Unicode-aware checks
#: (str.isalnum, \w, case folding) would take for ASCII ones.
TRICKY = "_-.:/ \t\n\r\x00\x0b\x1f\x7f,\"'éßİıK１²٣ǅ\u200b\ufeff\u2028"

#: A valid value of each field the quick check decides.
VALID = {
    "userId": "cus_A1b2",
    "default_source": "card_A1b2",
    "stripe_account": "acct_A1b2",
    "job_id": "j-1.a_b:C",
}
#: Each field's prefixes and longest valid value.
PREFIXES_OF = {
    "userId": ("cus_",),
    "default_source": SOURCE_PREFIXES,
    "stripe_account": ("acct_",),
    "job_id": ("j",),
}
MAX_LENGTH_OF = {
    "userId": MAX_STRIPE_ID_LENGTH,
    "default_source": MAX_STRIPE_ID_LENGTH,
    "stripe_account": MAX_STRIPE_ID_LENGTH,
    "job_id": MAX_JOB_ID_LENGTH,
}
OTHER_PREFIXES = ("", "tok_", "CUS_", "cus", "card-", " cus_", "acct", "-")
JOB_ID_CHARS = ALNUM + "_.:-"

bodies = st.one_of(
    st.text(alphabet=ALNUM, max_size=30),
    st.text(alphabet=ALNUM + TRICKY, max_size=30),
    st.text(max_size=12),
)


def valid_values(field: str) -> st.SearchStrategy[str]:
    if field == "job_id":
        return st.builds(
            str.__add__, st.sampled_from(ALNUM), st.text(alphabet=JOB_ID_CHARS, max_size=24)
        )
    return st.builds(
        str.__add__,
        st.sampled_from(PREFIXES_OF[field]),
        st.text(alphabet=ALNUM, min_size=1, max_size=24),
    )


@st.composite
def near_valid_values(draw: st.DrawFn, field: str) -> str:
    """A valid value with one character put in or replaced anywhere: the edge cases
    (a non-ASCII letter or digit, "_", a trailing newline) next to a valid value."""
    value = draw(valid_values(field))
    at = draw(st.integers(0, len(value)))
    char = draw(st.sampled_from(TRICKY) | st.characters(exclude_categories=["Cs"]))
    return value[:at] + char + value[at + draw(st.integers(0, 1)) :]


def long_values(field: str) -> st.SearchStrategy[str]:
    """Values one short of, at, and one past the field's length cap."""
    cap = MAX_LENGTH_OF[field]
    return st.builds(
        lambda prefix, size, tail: prefix + "a" * (size - len(prefix) - len(tail)) + tail,
        st.sampled_from(PREFIXES_OF[field]),
        st.sampled_from([cap - 1, cap, cap + 1]),
        st.sampled_from(["", "9", "-", " ", "\n"]),
    )


def field_values(field: str) -> st.SearchStrategy[str]:
    any_prefix = st.sampled_from(tuple(PREFIXES_OF[field]) + OTHER_PREFIXES)
    return st.one_of(
        valid_values(field),
        near_valid_values(field),
        st.builds(str.__add__, any_prefix, bodies),
        long_values(field),
        st.just(""),
    )


#: Any value of any field: valid, near-valid or not, for the CSV and JSONL files.
values = st.one_of(*(field_values(field) for field in ALLOWED_FIELDS))
#: Rows as a migration file gives them: mostly valid fields, each often just off.
row_fields = st.fixed_dictionaries(
    {"userId": field_values("userId"), "default_source": field_values("default_source")},
    optional={
        "job_id": field_values("job_id"),
        "stripe_account": field_values("stripe_account"),
    },
) | st.dictionaries(st.sampled_from(ALLOWED_FIELDS), values, max_size=4)


def full_decision(fields: object) -> tuple[bool, str | None]:
    """validate_job's decision, and the accepted job's id."""
    try:
        job = validate_job(fields)
    except InvalidJob:
        return False, None
    return True, job.job_id


@given(row_fields)
@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@example({"userId": "cus_A", "default_source": "card_B"})
@example({"userId": "cus_A\n", "default_source": "card_B"})
@example({"userId": "cus_", "default_source": "pm_1"})
@example({"userId": "cus_K", "default_source": "card_１"})
@example({"userId": "cus_A", "default_source": "src_B", "job_id": "-x"})
@example({"userId": "cus_A", "default_source": "src_B", "job_id": "a" * MAX_JOB_ID_LENGTH})
@example({"userId": "cus_" + "a" * (MAX_STRIPE_ID_LENGTH - 4), "default_source": "pm_1"})
@example({"userId": "cus_" + "a" * (MAX_STRIPE_ID_LENGTH - 3), "default_source": "pm_1"})
@example({"userId": "cus_A", "default_source": "card_B", "stripe_account": "acct_"})
def test_the_quick_check_accepts_exactly_what_validate_job_accepts(fields: dict[str, str]) -> None:
    accepted, job_id = full_decision(fields)
    assert accepts_quickly(fields) is accepted
    if accepted:
        assert job_id == fields.get("job_id")  # the scan takes the job id from the row


def edge_values(field: str) -> list[str]:
    """Every tricky character at the start, middle and end of a valid value's body, and
    every prefix at the length cap and one past it."""
    value = VALID[field]
    cut = len(PREFIXES_OF[field][0]) if field != "job_id" else 0
    found = []
    for char in TRICKY + "\u212a\u0130\uff21":  # Kelvin sign, dotted I, fullwidth A
        found += [
            value[:cut] + char + value[cut:],
            value[: cut + 2] + char + value[cut + 2 :],
            value + char,
        ]
    for prefix in PREFIXES_OF[field]:
        for size in (MAX_LENGTH_OF[field], MAX_LENGTH_OF[field] + 1):
            found.append(prefix + "a" * (size - len(prefix)))
    return found


@pytest.mark.parametrize("field", list(VALID))
def test_the_quick_check_decides_every_edge_value_as_validate_job(field: str) -> None:
    for value in edge_values(field):
        fields = {**VALID, field: value}
        assert accepts_quickly(fields) is full_decision(fields)[0], (field, value)


other_values = st.one_of(
    st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2), values
)


@given(st.dictionaries(st.text(max_size=16) | st.sampled_from(ALLOWED_FIELDS), other_values))
@settings(max_examples=500)
@example({"userId": "cus_A", "default_source": "card_B", "callback_url": "https://x.test/"})
@example({"userId": "cus_A", "default_source": "card_B", "requested_at": "2026-01-01T00:00Z"})
@example({"userId": "cus_A", "default_source": "card_B", "job_id": None})
def test_the_quick_check_says_yes_only_where_validate_job_does(fields: dict[str, object]) -> None:
    if accepts_quickly(fields):
        assert full_decision(fields)[0]


@pytest.mark.parametrize("fields", [None, [], "cus_A", ("userId", "cus_A")])
def test_the_quick_check_leaves_anything_but_a_dict_to_validate_job(fields: object) -> None:
    assert not accepts_quickly(fields)


# --- check_rows against read_rows -------------------------------------------------------------


def by_read_rows(text: str, file_format: FileFormat) -> object:
    try:
        rows = list(read_rows(io.StringIO(text, newline=""), file_format))
    except UnreadableFile as exc:
        return ("unreadable", str(exc))
    invalid = [(row.line, row.problem) for row in rows if row.job is None]
    own_ids = [(row.job.job_id, row.line) for row in rows if row.job and row.job.job_id]
    return len(rows), len(rows) - len(invalid), invalid, own_ids


def by_check_rows(text: str, file_format: FileFormat) -> object:
    invalid: list[tuple[int, str | None]] = []
    own_ids: list[tuple[str, int]] = []
    try:
        tally = check_rows(
            io.StringIO(text, newline=""),
            file_format,
            on_invalid=lambda row: invalid.append((row.line, row.problem)),
            on_job_id=lambda job_id, line: own_ids.append((job_id, line)),
        )
    except UnreadableFile as exc:
        return ("unreadable", str(exc))
    return tally.rows, tally.valid, invalid, own_ids


headers = st.one_of(
    st.permutations(["userId", "default_source"]),
    st.permutations(list(ALLOWED_FIELDS)),
    st.permutations(["userId", "default_source", "job_id"]),
    st.sampled_from([["userId"], ["userId", "default_source", "userId"], [" userId", "x"]]),
)


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    header = draw(headers)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["row", "row", "row", "blank", "width", "raw"]))
        if kind == "row":
            writer.writerow([draw(values | st.just("")) for _ in header])
        elif kind == "blank":
            out.write("\n")
        elif kind == "width":
            writer.writerow([draw(values) for _ in range(draw(st.integers(1, 5)))])
        else:  # whatever text: stray quotes, lone carriage returns, a broken quote
            out.write(draw(st.text(alphabet=ALNUM + TRICKY, max_size=20)) + "\n")
    return out.getvalue()


@given(csv_texts())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@example('userId,default_source\ncus_A,card_B\n"cus_C,card_D\ncus_E,card_F\n')
@example('userId,default_source\n\ncus_A,"card_\nB"\r\ncus_A,card_B\n\n')
@example("userId,default_source,job_id\ncus_A,card_B,j1\ncus_A,card_B,j1\ncus_A,card_B,\n")
@example("default_source,userId\r\ncard_B,cus_A\r\n")
@example("")
def test_check_rows_counts_and_reports_csv_rows_as_read_rows_does(text: str) -> None:
    assert by_check_rows(text, FileFormat.CSV) == by_read_rows(text, FileFormat.CSV)


json_values = st.one_of(st.none(), st.integers(), st.booleans(), values)


@st.composite
def jsonl_texts(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["object", "object", "object", "blank", "raw"]))
        if kind == "object":
            keys = st.sampled_from(ALLOWED_FIELDS) | st.text(max_size=8)
            obj = draw(st.dictionaries(keys, json_values, max_size=5))
            lines.append(json.dumps(obj, ensure_ascii=draw(st.booleans())))
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
        else:
            lines.append(draw(st.sampled_from(["[1]", "{broken", '"s"', "null", "5"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


@given(jsonl_texts())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@example('{"userId": "cus_A", "default_source": "card_B", "job_id": "j1"}\n\n{"userId": 1}\n')
@example('{"userId": "cus_A", "default_source": "card_B", "job_id": null}\n')
@example('{"userId": "cus_A", "default_source": "card_B", "userId": "cus_bad!"}\n')
def test_check_rows_counts_and_reports_jsonl_rows_as_read_rows_does(text: str) -> None:
    assert by_check_rows(text, FileFormat.JSONL) == by_read_rows(text, FileFormat.JSONL)


def test_the_scan_of_a_large_usual_file_matches_read_rows(tmp_path: Path) -> None:
    lines = ["userId,default_source"]
    for i in range(5000):
        user, source = f"cus_{i:014d}", f"card_{i:024X}"
        if i % 37 == 0:
            source = f"tok_{i}"
        if i % 53 == 0:
            user = f"cus_{i}-x"
        lines.append(f"{user},{source}")
    content = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode()
    path = tmp_path / "usual.csv"
    path.write_bytes(content)
    seen: list[tuple[int, str | None]] = []
    result = scan(path, FileFormat.CSV, lambda row: seen.append((row.line, row.problem)))
    expected = by_read_rows(content.decode("utf-8-sig"), FileFormat.CSV)
    assert (result.rows, result.valid, seen, []) == expected
    assert result.invalid == len(seen) > 0
    assert result.sha256 == hashlib.sha256(content).hexdigest()


def test_a_file_that_is_not_utf8_is_unreadable_in_the_scan(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"userId,default_source\ncus_A,card_\xe9\n")
    with pytest.raises(UnreadableFile, match=r"latin1\.csv is not UTF-8 text"):
        scan(path, FileFormat.CSV)
