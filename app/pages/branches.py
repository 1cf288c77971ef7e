"""Editing a sent message from the chat page, and viewing an earlier version."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.auth import optional_user, require_user, services_of
from app.http_input import read_form
from app.pages.chat import SETTINGS_FIELDS, SIDEBAR_SESSIONS, to_login
from app.pages.render import limits, page
from app.usecases import branches, chats


async def edit(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    p = request.path_params
    form = await read_form(request, services.settings.max_body_bytes)
    queued = await branches.edit_message(services, user["id"], p["session_id"],
                                         p["message_id"], form.get("content"))
    # The page shows the new branch from a fresh snapshot; its stream follows from there.
    assert queued["message"]["role"] == "user"
    session_id = chats.session_uuid(p["session_id"])
    return Response(status_code=204, headers={"HX-Redirect": f"/chats/{session_id}"})


async def version_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    p = request.path_params
    session, messages, is_current = await branches.conversation_through(
        services, user["id"], p["session_id"], p["message_id"])
    if is_current:
        return RedirectResponse(f"/chats/{session['id']}#msg-{p['message_id']}", 303)
    config = session["config"]
    return page(request, "chat/page.html", {
        "user": user, "session": session, "active_id": session["id"],
        "sessions": await chats.list_sessions(services, user["id"], limit=SIDEBAR_SESSIONS),
        "messages": messages, "session_id": session["id"],
        # The stream starts at the head: this view never changes, new events are elsewhere.
        "position": services.head.position,
        "model_loaded": services.model_loaded, "limits": limits(request),
        "values": {key: config.get(key, "") for key in SETTINGS_FIELDS},
        "versions": await branches.version_map(services, session["id"]),
        "viewing": p["message_id"],
    })


routes = [
    Route("/chats/{session_id}/messages/{message_id}/edit", edit, methods=["POST"]),
    Route("/chats/{session_id}/versions/{message_id}", version_page, methods=["GET"]),
]
