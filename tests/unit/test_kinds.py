"""The table of job kinds: one entry per task, the kind each job is sent as."""

from __future__ import annotations

import pytest

from cards import kinds
from cards.companion_jobs import validate_assign_job, validate_list_job
from cards.jobs import validate_job
from worker.idempotency import idempotency_key


def test_every_kind_has_its_own_name_and_task() -> None:
    assert len({k.name for k in kinds.KINDS}) == len(kinds.KINDS)
    assert len({k.task_name for k in kinds.KINDS}) == len(kinds.KINDS)
    assert all(k.task_name == f"cards.{k.name}" for k in kinds.KINDS)


@pytest.mark.parametrize(
    ("job", "kind"),
    [
        (validate_job({"userId": "cus_A", "default_source": "pm_B"}), kinds.SET_DEFAULT_CARD),
        (validate_assign_job({"userId": "cus_A", "source": "tok_B"}), kinds.ASSIGN_CARD),
        (validate_list_job({"userId": "cus_A"}), kinds.LIST_CARDS),
    ],
)
def test_a_job_is_sent_as_its_models_first_kind(job: kinds.Job, kind: kinds.Kind) -> None:
    assert kinds.kind_of(job) is kind
    assert kind.validate is not None and kind.model is type(job)


def test_the_writing_kinds_key_prefixes() -> None:
    assert idempotency_key("j") == "cards-sdc:j"
    assert kinds.SET_DEFAULT_CARD.key_prefix == "cards-sdc"
    assert kinds.SET_DEFAULT_CARDS.key_prefix == "cards-sdc"
    assert kinds.ASSIGN_CARD.key_prefix == "cards-assign"
    assert kinds.CHECK_DEFAULT_CARD.key_prefix is None
    assert kinds.LIST_CARDS.key_prefix is None
