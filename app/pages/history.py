"""Older messages of a long chat, loaded as the reader scrolls up."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.pages.render import fragment, limits
from app.usecases import branches, history


async def older(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    shown = await history.older(services, user["id"], request.path_params["session_id"],
                                request.query_params.get("before", ""))
    session_id = shown.session["id"]
    return HTMLResponse(fragment(
        "history/_page.html", session=shown.session, session_id=session_id,
        messages=shown.messages, more=shown.more, limits=limits(request),
        versions=await branches.version_map(services, session_id)))


routes = [Route("/chats/{session_id}/older", older, methods=["GET"])]
