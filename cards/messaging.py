"""The one way to build a Celery app for this project, worker or producer.

Every app reads ``celeryconfig``; when message signing is configured, every
app must also register Celery's ``auth`` serializer with its key and
certificates, or it could neither sign what it sends nor check what it receives.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from cards.settings import get_settings

__all__ = ["celery_app"]


def celery_app(name: str, **options: Any) -> Celery:
    """A Celery app named ``name``; ``options`` go to :class:`celery.Celery`."""
    app = Celery(name, **options)
    app.config_from_object("celeryconfig")
    if get_settings().signs_messages:
        # Leaves JSON enabled for results; every other serializer is disabled.
        app.setup_security(allowed_serializers={"json"}, serializer="json")
    return app
