"""The chat pages: the session list, one conversation, and the htmx actions on them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from uuid import UUID

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth import optional_user, require_user, services_of
from app.http_input import read_form
from app.pages import messages
from app.pages.live import live_events
from app.pages.render import fragment, limits, page
from app.usecases import branches, chats, history
from app.usecases.errors import InvalidInput

SETTINGS_FIELDS = ("system_prompt", "temperature", "top_p", "max_tokens")
SIDEBAR_SESSIONS = 200


def to_login(request: Request) -> Response:
    return RedirectResponse(f"/login?next={quote(request.url.path, safe='')}", 303)


def path_session(request: Request) -> str:
    return str(request.path_params["session_id"])


async def index(request: Request) -> Response:
    return RedirectResponse("/chats", 303)


async def chats_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    if request.method == "POST":
        await require_user(request)  # CSRF
        session = await chats.start_session(services, user["id"], {})
        return Response(status_code=204, headers={"HX-Redirect": f"/chats/{session['id']}"})
    sessions = await chats.list_sessions(services, user["id"], limit=SIDEBAR_SESSIONS)
    if sessions:
        return RedirectResponse(f"/chats/{sessions[0]['id']}", 303)
    return page(request, "chat/page.html", {"user": user, "sessions": [], "session": None,
                                            "active_id": None})


async def chat_page(request: Request) -> Response:
    user = await optional_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    shown = await chats.conversation(services, user["id"], path_session(request),
                                     limit=history.PAGE)
    config = shown.session["config"]
    return page(request, "chat/page.html", {
        "user": user,
        "session": shown.session,
        "sessions": await chats.list_sessions(services, user["id"], limit=SIDEBAR_SESSIONS),
        "active_id": shown.session["id"],
        "messages": shown.messages,
        "session_id": shown.session["id"],
        "position": shown.position,
        "model_loaded": services.model_loaded,
        "limits": limits(request),
        "values": {key: config.get(key, "") for key in SETTINGS_FIELDS},
        "versions": await branches.version_map(services, shown.session["id"]),
        "page_size": history.PAGE,
    })


async def post_message(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session_id = path_session(request)
    await chats.owned_session(services, user["id"], session_id)
    form = await read_form(request, services.settings.max_body_bytes)
    await chats.post_message(services, user["id"], session_id, form.get("content"))
    return Response(status_code=204)  # the message and its reply arrive over the live stream


async def regenerate(request: Request) -> Response:
    user = await require_user(request)
    await chats.regenerate(services_of(request), user["id"], path_session(request))
    return Response(status_code=204)


async def cancel(request: Request) -> Response:
    user = await require_user(request)
    await chats.cancel_reply(services_of(request), user["id"], path_session(request))
    return Response(status_code=204)


def form_numbers(form: dict[str, str]) -> dict[str, Any]:
    """Form fields are text; numbers that do not parse stay text, so validation names them."""
    values: dict[str, Any] = {"system_prompt": form.get("system_prompt")}
    for key, kind in (("temperature", float), ("top_p", float), ("max_tokens", int)):
        raw = form.get(key, "").strip()
        try:
            values[key] = kind(raw) if raw else None
        except ValueError:
            values[key] = raw
    return values


async def settings(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await chats.owned_session(services, user["id"], path_session(request))
    form = await read_form(request, services.settings.max_body_bytes)
    values = {key: form.get(key, "") for key in SETTINGS_FIELDS}
    context: dict[str, Any] = {"session": session, "values": values, "limits": limits(request)}
    try:
        await chats.update_session(services, user["id"], session["id"], form_numbers(form))
    except InvalidInput as error:
        context["errors"] = {error.field: messages.problem(error)}
        return HTMLResponse(fragment("chat/_settings.html", **context), 422)
    return HTMLResponse(fragment("chat/_settings.html", saved=True, **context))


async def rename(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await chats.owned_session(services, user["id"], path_session(request))
    active_id = _active_session(request)
    max_title = services.settings.max_title_chars
    if request.method == "GET":
        return HTMLResponse(fragment("chat/_rename.html", item=session, active_id=active_id,
                                     max_title=max_title))
    form = await read_form(request, services.settings.max_body_bytes)
    try:
        renamed = await chats.rename_session(services, user["id"], session["id"],
                                             form.get("title"))
    except InvalidInput as error:
        return HTMLResponse(fragment("chat/_rename.html", item=session, active_id=active_id,
                                     max_title=max_title, error=messages.problem(error)), 422)
    return HTMLResponse(fragment("chat/_session_item.html", item=renamed, active_id=active_id))


async def item(request: Request) -> Response:
    user = await require_user(request)
    session = await chats.owned_session(services_of(request), user["id"], path_session(request))
    return HTMLResponse(fragment("chat/_session_item.html", item=session,
                                 active_id=_active_session(request)))


async def delete(request: Request) -> Response:
    user = await require_user(request)
    session_id = path_session(request)
    await chats.delete_session(services_of(request), user["id"], session_id)
    if _active_session(request) == str(chats.session_uuid(session_id)):
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
    session = await chats.owned_session(services_of(request), user["id"], path_session(request))
    return await live_events(request, UUID(session["id"]))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/chats", chats_page, methods=["GET", "POST"]),
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
