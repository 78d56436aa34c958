"""Job answers in Celery's Redis result backend, many at a time.

Bulk batches store their rows' envelopes and migrations read and drop them by
the hundred; Celery's backend API does one key per call. This wrapper is the
one place that reaches into the backend's internals (its key scheme, meta
shape and codec), so that an envelope stored here reads back through
``AsyncResult`` exactly as one stored by Celery itself, pub/sub message
included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery, states

__all__ = ["ResultBackend"]


class ResultBackend:
    """``app``'s Redis result backend, read and written in one round trip per call."""

    def __init__(self, app: Celery) -> None:
        self._backend: Any = app.backend

    @property
    def client(self) -> Any:
        """The backend's Redis client."""
        return self._backend.client

    def key(self, job_id: str) -> bytes:
        """The Redis key that holds job ``job_id``'s result."""
        return bytes(self._backend.get_key_for_task(job_id))

    def read_many(self, job_ids: Iterable[str]) -> list[dict[str, Any] | None]:
        """Each job's stored meta (``status``, ``result``, …), or None where there is none."""
        keys = [self.key(job_id) for job_id in job_ids]
        if not keys:
            return []
        values = self.client.mget(keys)
        return [None if value is None else self.decode(value) for value in values]

    def decode(self, value: bytes) -> dict[str, Any]:
        """A stored (or published) result's meta: ``status``, ``result``, …"""
        meta: dict[str, Any] = self._backend.decode_result(value)
        return meta

    def answered(self, job_ids: Iterable[str]) -> set[str]:
        """The jobs among ``job_ids`` that have a final result."""
        ids = list(job_ids)
        return {
            job_id
            for job_id, meta in zip(ids, self.read_many(ids), strict=True)
            if meta is not None and meta.get("status") in states.READY_STATES
        }

    def store_many(self, answers: Mapping[str, Any], expires: int | None = None) -> None:
        """Store each answer as its job's SUCCESS result: the meta, key, expiry and
        pub/sub message ``store_result`` writes, without its read-before-write."""
        if not answers:
            return
        seconds = expires or self._backend.expires
        with self.client.pipeline(transaction=False) as pipe:
            for job_id, answer in answers.items():
                meta = self._backend._get_result_meta(answer, states.SUCCESS, None, None)
                meta["task_id"] = job_id
                key, value = self.key(job_id), self._backend.encode(meta)
                pipe.set(key, value, ex=int(seconds) if seconds else None)
                pipe.publish(key, value)
            pipe.execute()

    def delete_many(self, job_ids: Iterable[str]) -> None:
        """Drop the results of ``job_ids`` (missing ones are ignored)."""
        keys = [self.key(job_id) for job_id in job_ids]
        if keys:
            self.client.delete(*keys)
