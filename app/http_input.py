"""Reading what a request carries: bodies (within the size limit), query parameters and
the stream position to resume from."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from app.usecases import fields
from app.usecases.errors import N_, InvalidInput, Message, TooLarge


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge.body(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge.body(limit)
    return bytes(body)


async def read_json(request: Request, limit: int, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` only where `allow_empty`."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidInput("body", "a JSON object is required.", code="invalid_json")
    try:
        # NaN and ±Infinity (not JSON, but Python's parser reads them) become floats that
        # every field check refuses, so the 400 names the field they were sent in.
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InvalidInput("body", Message(N_("not valid UTF-8 JSON (%(error)s)."),
                                           {"error": str(error)}), code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidInput("body", "must be a JSON object.", code="invalid_json")
    return data


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """An urlencoded form (what HTML forms and htmx send) as a dict of its last values."""
    raw = await read_body(request, limit)
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body", N_("not a valid UTF-8 form."),
                           code="invalid_form") from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    return fields.whole_number(request.query_params.get(name), name, default, low, high)


def resume_position(request: Request) -> int:
    """Where a stream resumes: the Last-Event-ID header (set by EventSource on reconnect)
    wins over `?last_event_id=` (the position a page or client started from)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return parse_position(raw)


def parse_position(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 0
    try:
        position = int(raw.strip())
    except ValueError:
        raise InvalidInput("last_event_id", "must be an event id from this stream.") from None
    if not 0 <= position < 2**63:
        raise InvalidInput("last_event_id", "must be an event id from this stream.")
    return position
