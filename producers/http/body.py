"""Reading a request's JSON body: the content type, the size limit, the parse.

The body is read as a stream and refused (413) as soon as it passes the
limit, before it is parsed; a declared ``Content-Length`` over the limit is
refused before reading. Anything that is not JSON is a 400, never a 500.
"""

from __future__ import annotations

import json
from typing import Final

from fastapi import Request

from producers.http.errors import BAD_REQUEST, PAYLOAD_TOO_LARGE, GatewayError

__all__ = ["JSON_MEDIA_TYPE", "is_json_media_type", "read_json_body"]

JSON_MEDIA_TYPE: Final = "application/json"


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, with any parameters. Pure."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON_MEDIA_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def _too_large(limit: int) -> GatewayError:
    return GatewayError(PAYLOAD_TOO_LARGE, f"request body is larger than {limit} bytes")


async def read_json_body(request: Request, limit: int) -> object:
    """The request's JSON body, read at most ``limit`` bytes; :class:`GatewayError` if not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if not is_json_media_type(request.headers.get("content-type")):
        raise GatewayError(BAD_REQUEST, f"invalid request: Content-Type must be {JSON_MEDIA_TYPE}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise GatewayError(BAD_REQUEST, "invalid request: the body is not valid JSON") from None
