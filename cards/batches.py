"""The bulk batch contract: many ``set_default_card`` rows in one task message.

``cards.set_default_cards`` takes ``{"jobs": [<set_default_card fields>, …],
"migration_id": "m…"?}``, up to :data:`MAX_BATCH_ROWS` rows: one message per
row would cost the worker more in Celery's bookkeeping than in the Stripe call.
Every row stays a job of its own, with its own ``job_id`` (its envelope is stored
there) and its own validation; the batch is refused whole only when it is not a
batch, or when a row has no usable ``job_id``. Details: docs/bulk-batches.md.
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
