"""One event as plain JSON data: what the admin API, the event browser and the CLI show."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from app.event_log import LoggedEvent
from projections.base import iso

# A password hash can be attacked offline; a token hash identifies a live sign-in.
REDACTED_FIELDS = frozenset({"password_hash", "token_hash"})
ENVELOPE_FIELDS = ("originator_id", "originator_version", "timestamp")


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {str(k): _plain(item) for k, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


def event_view(logged: LoggedEvent) -> dict[str, Any]:
    event: Any = logged.event  # every event of ours is an eventsourcing DomainEvent
    data = {
        key: "[redacted]" if key in REDACTED_FIELDS else _plain(value)
        for key, value in event.__dict__.items()
        if key not in ENVELOPE_FIELDS
    }
    return {
        "id": str(logged.position),
        "position": logged.position,
        "originator_id": str(event.originator_id),
        "originator_version": event.originator_version,
        "type": type(event).__qualname__,
        "timestamp": iso(event.timestamp),
        "data": data,
    }
