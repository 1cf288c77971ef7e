"""Admin API over the event history, the projections and the server's state."""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.audit.event_view import event_view
from app.auth import require_admin, services_of
from app.http_input import query_int
from app.usecases import admin as admin_cases
from app.usecases.errors import InvalidInput, NotFound
from projections import messages as messages_read
from projections import sessions as sessions_read
from projections import users as users_read


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


async def timeline(request: Request) -> Response:
    await require_admin(request)
    at = None
    if request.query_params.get("at"):
        at = query_int(request, "at", 0, 0, 2**62)
    return JSONResponse(await admin_cases.timeline(
        services_of(request), request.path_params["session_id"], at))


async def user_list(request: Request) -> Response:
    await require_admin(request)
    return JSONResponse(await admin_cases.list_users(services_of(request)))


USER_ACTIONS = {"disable": admin_cases.disable_user, "enable": admin_cases.enable_user,
                "grant-admin": admin_cases.grant_admin, "revoke-admin": admin_cases.revoke_admin}


async def user_action(request: Request) -> Response:
    me = await require_admin(request)
    action = USER_ACTIONS.get(request.path_params["action"])
    if action is None:
        raise NotFound("action")
    return JSONResponse(await action(services_of(request), me["id"],
                                     request.path_params["user_id"]))


routes = [
    Route("/api/admin/events/", events, methods=["GET"]),
    Route("/api/admin/sessions/{session_id}/timeline/", timeline, methods=["GET"]),
    Route("/api/admin/users/", user_list, methods=["GET"]),
    Route("/api/admin/users/{user_id}/{action}/", user_action, methods=["POST"]),
    Route("/api/admin/stats/", stats, methods=["GET"]),
    Route("/api/admin/projections/", projection_list, methods=["GET"]),
    Route("/api/admin/projections/{name}/rebuild/", rebuild, methods=["POST"]),
]
