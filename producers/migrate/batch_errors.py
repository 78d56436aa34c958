"""Why a batch-api migration stopped: one exception class per meaning.

Kept apart from the client and the engine (which import the Stripe SDK and httpx),
so that ``cards`` commands that never run a batch job do not pay for those imports.
"""

from __future__ import annotations

__all__ = ["BatchCanceled", "BatchJobRefused", "FileTransferFailed"]


class BatchJobRefused(Exception):
    """Stripe refused a batch-job call (create, retrieve, cancel); says Stripe's message."""


class FileTransferFailed(Exception):
    """The upload or the output download did not go through (expired URL, network)."""


class BatchCanceled(Exception):
    """A batch job of the migration was canceled (``cards migrate cancel``)."""
