"""Admin API over the event history, the projections and the server's state."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_admin, services_of
from app.event_log import LoggedEvent
from app.http_input import query_int
from app.usecases.errors import InvalidInput, NotFound
from projections import messages as messages_read
from projections import sessions as sessions_read
from projections import users as users_read
from projections.base import iso

REDACTED_FIELDS = frozenset({"password_hash"})
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


async def events(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 100, 1, 1000)
    type_name = request.query_params.get("type") or None
    if type_name is not None and not type_name.replace(".", "").replace("_", "").isalnum():
        raise InvalidInput("type", "must be an event type such as ChatSession.ReplyCompleted.")
    originator = request.query_params.get("originator_id") or None
    originator_id = None
    if originator is not None:
        try:
            originator_id = UUID(originator)
        except ValueError:
            raise InvalidInput("originator_id", "must be a UUID.") from None
    logged = await services.event_log.select(after, limit, type_name, originator_id)
    next_after = logged[-1].position if logged else after
    return JSONResponse({"events": [event_view(item) for item in logged],
                         "next_after": next_after})


async def stats(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    db = services.read_db
    return JSONResponse({
        "users": await users_read.count_users(db),
        "sessions": await sessions_read.count_sessions(db),
        "messages": await messages_read.count_messages(db),
        "events": await services.event_log.head(),
        "queue_depth": services.actor.queue_depth,
        "generating": services.actor.generating,
        "model": services.model_id if services.model_loaded else None,
        "tokens_per_second_recent": services.actor.tokens_per_second_recent(),
    })


async def projection_list(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    head = await services.event_log.head()
    positions = services.projections.positions()
    return JSONResponse([
        {"name": name, "position": position, "head": head, "lag": max(0, head - position)}
        for name, position in positions.items()
    ])


async def rebuild(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    name = request.path_params["name"]
    if name not in services.projections.names:
        raise NotFound("projection")
    services.projections.request_rebuild(name)
    return JSONResponse({"name": name, "status": "rebuilding"}, 202)


routes = [
    Route("/api/admin/events/", events, methods=["GET"]),
    Route("/api/admin/stats/", stats, methods=["GET"]),
    Route("/api/admin/projections/", projection_list, methods=["GET"]),
    Route("/api/admin/projections/{name}/rebuild/", rebuild, methods=["POST"]),
]
