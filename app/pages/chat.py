"""The chat pages: the session list, one conversation, and the htmx actions on them."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import quote
from uuid import UUID

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app import validation as v
from app.api.sessions import (
    default_config,
    delete_session,
    owned_session,
    parse_id,
    session_fields,
)
from app.auth import optional_user, require_user, services_of
from app.errors import ApiError
from app.pages.live import live_events
from app.pages.render import fragment, limits, page
from app.replies import queue_reply, stop_replies
from projections import messages as messages_read
from projections import sessions as sessions_read

SETTINGS_FIELDS = ("system_prompt", "temperature", "top_p", "max_tokens")


def to_login(request: Request) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path, safe='')}", 303)


async def index(request: Request) -> Response:
    return RedirectResponse("/chats", 303)


async def chats(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    if request.method == "POST":
        await require_user(request)  # CSRF
        session_id, position = await services.command(
            services.chat.start_session, UUID(user["id"]), "", default_config(services))
        await services.settle(position)
        return Response(status_code=204, headers={"HX-Redirect": f"/chats/{session_id}"})
    sessions = await sessions_read.list_sessions(services.read_db, user["id"], limit=200)
    if sessions:
        return RedirectResponse(f"/chats/{sessions[0]['id']}", 303)
    return page(request, "chat/page.html", {"user": user, "sessions": [], "session": None,
                                            "active_id": None})


async def chat_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    session_id = parse_id(request.path_params["session_id"])
    # Messages first: the position they reflect is where the live stream resumes.
    position, messages = await messages_read.snapshot(services.read_db, str(session_id))
    session = await owned_session(request, user)
    config = session["config"]
    return page(request, "chat/page.html", {
        "user": user,
        "session": session,
        "sessions": await sessions_read.list_sessions(services.read_db, user["id"], limit=200),
        "active_id": session["id"],
        "messages": messages,
        "session_id": session["id"],
        "position": position,
        "model_loaded": services.model_loaded,
        "limits": limits(request),
        "values": {key: config.get(key, "") for key in SETTINGS_FIELDS},
    })


async def post_message(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    form = await v.read_form(request, services.settings.max_body_bytes)
    content = v.text(form, "content", max_len=services.settings.max_message_chars,
                     required=True, allow_blank=False)
    assert content is not None
    session_id = UUID(session["id"])
    record = partial(services.chat.post_message, session_id, UUID(user["id"]), content)
    await queue_reply(services, session_id, record)
    return Response(status_code=204)  # the message and its reply arrive over the live stream


async def regenerate(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    session_id = UUID(session["id"])
    await queue_reply(services, session_id,
                      partial(services.chat.regenerate, session_id, UUID(user["id"])))
    return Response(status_code=204)


async def cancel(request: Request) -> Response:
    user = await require_user(request)
    session = await owned_session(request, user)
    await stop_replies(services_of(request), UUID(session["id"]))
    return Response(status_code=204)


def form_numbers(form: dict[str, str]) -> dict[str, Any]:
    """Form fields are text; numbers that do not parse stay text, so validation names them."""
    body: dict[str, Any] = {"system_prompt": form.get("system_prompt")}
    for key, kind in (("temperature", float), ("top_p", float), ("max_tokens", int)):
        raw = form.get(key, "").strip()
        try:
            body[key] = kind(raw) if raw else None
        except ValueError:
            body[key] = raw
    return body


async def settings(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    form = await v.read_form(request, services.settings.max_body_bytes)
    values = {key: form.get(key, "") for key in SETTINGS_FIELDS}
    context: dict[str, Any] = {"session": session, "values": values, "limits": limits(request)}
    try:
        _title, config = session_fields(form_numbers(form), services)
    except ApiError as error:
        field, _, problem = error.message.partition(": ")
        context["errors"] = {field: problem}
        return HTMLResponse(fragment("chat/_settings.html", **context), 422)
    position = await services.command(services.chat.update_session, UUID(session["id"]),
                                      UUID(user["id"]), None, config)
    await services.settle(position)
    return HTMLResponse(fragment("chat/_settings.html", saved=True, **context))


async def rename(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    active_id = _active_session(request)
    if request.method == "GET":
        return HTMLResponse(fragment("chat/_rename.html", item=session, active_id=active_id,
                                     max_title=services.settings.max_title_chars))
    form = await v.read_form(request, services.settings.max_body_bytes)
    try:
        title = v.text(form, "title", max_len=services.settings.max_title_chars,
                       required=True, allow_blank=False, strip=True)
    except ApiError as error:
        return HTMLResponse(fragment("chat/_rename.html", item=session, active_id=active_id,
                                     max_title=services.settings.max_title_chars,
                                     error=error.message.partition(": ")[2]), 422)
    position = await services.command(services.chat.update_session, UUID(session["id"]),
                                      UUID(user["id"]), title, {})
    await services.settle(position)
    return await item(request)


async def item(request: Request) -> Response:
    user = await require_user(request)
    session = await owned_session(request, user)
    return HTMLResponse(fragment("chat/_session_item.html", item=session,
                                 active_id=_active_session(request)))


async def delete(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    await delete_session(services, UUID(session["id"]), UUID(user["id"]))
    if _active_session(request) == session["id"]:
        return Response(status_code=204, headers={"HX-Redirect": "/chats"})
    return HTMLResponse("")  # the sidebar item is replaced by nothing


def _active_session(request: Request) -> str | None:
    """The session the page that sent this htmx request shows, from HX-Current-URL."""
    current = request.headers.get("hx-current-url", "")
    marker = "/chats/"
    if marker not in current:
        return None
    return current.split(marker, 1)[1].split("/", 1)[0].split("?", 1)[0] or None


async def events(request: Request) -> Response:
    user = await require_user(request)
    session = await owned_session(request, user)
    return await live_events(request, UUID(session["id"]))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/chats", chats, methods=["GET", "POST"]),
    Route("/chats/{session_id}", chat_page, methods=["GET"]),
    Route("/chats/{session_id}", delete, methods=["DELETE"]),
    Route("/chats/{session_id}/messages", post_message, methods=["POST"]),
    Route("/chats/{session_id}/regenerate", regenerate, methods=["POST"]),
    Route("/chats/{session_id}/cancel", cancel, methods=["POST"]),
    Route("/chats/{session_id}/settings", settings, methods=["POST"]),
    Route("/chats/{session_id}/rename", rename, methods=["GET", "POST"]),
    Route("/chats/{session_id}/item", item, methods=["GET"]),
    Route("/chats/{session_id}/events", events, methods=["GET"]),
]
