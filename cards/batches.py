"""The bulk batch contract: many ``set_default_card`` rows in one task message.

A migration sends thousands of rows. One Celery message per row costs the
worker more CPU in Celery's own bookkeeping (the message, its events, its
acknowledgement) than in the Stripe call (BENCHMARKS.md), so ``cards migrate``
sends ``cards.set_default_cards`` messages of up to :data:`MAX_BATCH_ROWS`
rows: ``{"jobs": [<set_default_card fields>, …], "migration_id": "m…"}``
(``migration_id`` is optional; it names the batch's migration in task events,
so Flower shows it).

Every row is still a job of its own: it carries its own ``job_id``, under
which the worker stores the row's envelope, so a row is read back exactly
like a single job (``cards result``, a migration's progress), and is
validated on its own. The batch as a whole is refused only when it is not a
batch at all, or when a row has no usable ``job_id`` (its answer would have
nowhere to go): then no row is run.

Parameters:
    MAX_BATCH_ROWS: most rows in one message; keeps a message small (about
        200 bytes a row) and a redelivered batch cheap to skip through.
"""

from __future__ import annotations

from typing import Any, Final

from cards.jobs import InvalidJob, check_job_id

__all__ = ["BATCH_TASK_NAME", "MAX_BATCH_ROWS", "validate_batch"]

BATCH_TASK_NAME: Final = "cards.set_default_cards"
MAX_BATCH_ROWS: Final = 500
BATCH_FIELDS: Final = frozenset({"jobs", "migration_id"})


def _refused(problem: str, field: str = "jobs") -> InvalidJob:
    return InvalidJob([problem], [field])


def validate_batch(args: tuple[Any, ...], fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a batch message, each a dict with a valid, unique ``job_id``.

    Raises :class:`InvalidJob` naming the first problem; the rows' other fields
    are left to :func:`cards.jobs.validate_job`, row by row. (Pure.)
    """
    if args:
        raise _refused("send the batch as keyword arguments (kwargs), not positional args")
    unknown = sorted(name for name in fields if name not in BATCH_FIELDS)
    if unknown:
        raise _refused(
            f"a batch has only the fields 'jobs' and 'migration_id', not {unknown[0][:40]!a}",
            unknown[0],
        )
    migration_id = fields.get("migration_id")
    if migration_id is not None:
        if not isinstance(migration_id, str):
            raise _refused("migration_id must be a string", "migration_id")
        try:
            check_job_id(migration_id, "migration_id")
        except ValueError as exc:
            raise _refused(str(exc), "migration_id") from None
    rows = fields.get("jobs")
    if not isinstance(rows, list) or not rows:
        raise _refused("jobs must be a non-empty JSON array of job objects")
    if len(rows) > MAX_BATCH_ROWS:
        raise _refused(f"jobs must hold at most {MAX_BATCH_ROWS} rows")
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _refused(f"jobs[{index}] must be a JSON object of named fields")
        job_id = row.get("job_id")
        if not isinstance(job_id, str):
            raise _refused(f"jobs[{index}].job_id is required: a row's answer is stored under it")
        try:
            check_job_id(job_id, f"jobs[{index}].job_id")
        except ValueError as exc:
            raise _refused(str(exc)) from None
        if job_id in seen:
            raise _refused(f"jobs[{index}].job_id repeats an earlier row's")
        seen.add(job_id)
    return rows
