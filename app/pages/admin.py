"""The admin pages: dashboard (live over SSE), users, event browser (with a live tail),
session time travel, projections. Thin adapters over app/usecases/admin.py; every handler
first checks that the caller is an admin (anyone else gets 403, anonymous browsers are
sent to sign in).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth import optional_user, require_admin, services_of
from app.http_input import query_int, resume_position
from app.i18n import gettext as _
from app.pages.render import fragment, page
from app.pages.sparkline import sparkline
from app.services import Services
from app.usecases import admin
from app.usecases.errors import InvalidInput, NotFound

DASHBOARD_SECONDS = 2.0  # the live dashboard redraws at least this often (clocks, rates)
DASHBOARD_MIN_SECONDS = 0.25  # and at most this often while the log moves
TAIL_WAIT = 15.0
USER_ACTIONS = {"disable": admin.disable_user, "enable": admin.enable_user,
                "grant": admin.grant_admin, "revoke": admin.revoke_admin}
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def admin_page_user(request: Request) -> dict[str, Any] | None:
    """The admin calling, None for an anonymous browser (sent to sign in); 403 otherwise."""
    if await optional_user(request) is None:
        return None
    return await require_admin(request)


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)


def pretty_data(view: dict[str, Any]) -> str:
    """An event's payload for people: indented, Korean as Korean (not \\u escapes)."""
    return json.dumps(view["data"], ensure_ascii=False, indent=2)


def pretty(view: dict[str, Any]) -> dict[str, Any]:
    return {**view, "pretty": pretty_data(view)}


# -- dashboard -----------------------------------------------------------------------------


async def stats_html(services: Services) -> str:
    figures = await admin.dashboard(services)
    flow = figures["throughput"]
    return fragment(
        "admin/_stats.html", d=figures,
        tps_chart=sparkline(flow.tokens_per_second, _("Tokens per second"), " tok/s"),
        ttft_chart=sparkline(flow.time_to_first_token, _("Time to first token"), " s"),
    )


async def dashboard(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    return page(request, "admin/dashboard.html", {
        "user": user, "section": "dashboard", "stats": await stats_html(services_of(request)),
    })


async def _dashboard_stream(services: Services) -> AsyncIterator[ServerSentEvent]:
    while True:
        head = services.head.position
        yield ServerSentEvent(data=await stats_html(services), event="stats")
        # Redraw as soon as something is recorded, so even a short reply shows while it
        # is being written (a fixed 2 s tick could miss it), at most a few times a second.
        await services.head.wait_beyond(head, DASHBOARD_SECONDS)
        await asyncio.sleep(DASHBOARD_MIN_SECONDS)


async def dashboard_live(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    return EventSourceResponse(_dashboard_stream(services),
                               ping=services.settings.sse_ping_seconds, headers=SSE_HEADERS)


# -- users ---------------------------------------------------------------------------------


async def users(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    return page(request, "admin/users.html", {
        "user": user, "section": "users", "users": await admin.list_users(services_of(request)),
    })


async def user_action(request: Request) -> Response:
    me = await require_admin(request)
    action = USER_ACTIONS.get(request.path_params["action"])
    if action is None:
        raise NotFound("action")
    changed = await action(services_of(request), me["id"], request.path_params["user_id"])
    return HTMLResponse(fragment("admin/_user_row.html", u=changed))


# -- event browser -------------------------------------------------------------------------


def _optional_position(request: Request, name: str) -> int | None:
    if not request.query_params.get(name):
        return None
    return query_int(request, name, 0, 0, 2**62)


async def events(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    query = admin.EventQuery.of(request.query_params)
    context: dict[str, Any] = {"user": user, "section": "events", "query": query,
                               "types": admin.event_types(), "tail": bool(
                                   request.query_params.get("tail"))}
    try:
        shown = await admin.browse_events(
            services, query, after=_optional_position(request, "after"),
            before=_optional_position(request, "before"),
            limit=query_int(request, "limit", admin.PAGE_SIZE, 1, admin.MAX_PAGE))
    except InvalidInput as error:
        context.update(error=error, events=[], shown=None)
        return page(request, "admin/events.html", context, 400)
    params = query.params()
    context.update(
        shown=shown, events=[pretty(view) for view in shown.events],
        older=f"?{urlencode({**params, 'before': shown.first})}" if shown.has_older else None,
        newer=f"?{urlencode({**params, 'after': shown.last})}" if shown.has_newer else None,
        newest=f"?{urlencode(params)}",
        tail_url=f"/admin/events/tail?{urlencode({**params, 'last_event_id': shown.last})}",
        tail_link=f"?{urlencode({**params, 'tail': 1})}",
    )
    return page(request, "admin/events.html", context)


async def _tail(services: Services, query: admin.EventQuery, after: int
                ) -> AsyncIterator[ServerSentEvent]:
    while True:
        # The index the filters use is a projection: wait until it has taken in more.
        await services.applied.wait_beyond(after, TAIL_WAIT)
        upto = services.applied.position
        if upto <= after:
            continue
        views = await admin.events_after(services, query, after, upto)
        for view in views:
            yield ServerSentEvent(data=fragment("admin/_event_row.html", e=pretty(view)),
                                  event="row", id=str(view["position"]))
        after = views[-1]["position"] if len(views) == admin.MAX_PAGE else upto


async def events_tail(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    query = admin.EventQuery.of(request.query_params)
    await admin.events_after(services, query, 0, 1, limit=1)  # bad filters: 400 now, not later
    return EventSourceResponse(_tail(services, query, resume_position(request)),
                               ping=services.settings.sse_ping_seconds, headers=SSE_HEADERS)


# -- sessions and time travel --------------------------------------------------------------


async def sessions(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    owner = request.query_params.get("user") or None
    return page(request, "admin/sessions.html", {
        "user": user, "section": "sessions", "owner": owner,
        "sessions": await admin.list_sessions(services_of(request), owner),
    })


async def timeline(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    shown = await admin.frame(services_of(request), request.path_params["session_id"],
                              step=_optional_position(request, "step"),
                              at=_optional_position(request, "at"))
    return page(request, "admin/timeline.html", {
        "user": user, "section": "sessions", "f": shown, "sync": False,
        "session_id": request.path_params["session_id"], "event_json": pretty_data(shown.event),
    })


async def timeline_frame(request: Request) -> Response:
    await require_admin(request)
    shown = await admin.frame(services_of(request), request.path_params["session_id"],
                              step=_optional_position(request, "step"),
                              at=_optional_position(request, "at"))
    # Step buttons move the slider too; the slider's own requests leave it alone.
    return HTMLResponse(fragment("admin/_frame.html", f=shown,
                                 sync=bool(request.query_params.get("sync")),
                                 session_id=request.path_params["session_id"],
                                 event_json=pretty_data(shown.event)))


# -- projections ---------------------------------------------------------------------------


async def projections(request: Request) -> Response:
    user = await admin_page_user(request)
    if user is None:
        return to_login(request)
    services = services_of(request)
    return page(request, "admin/projections.html", {
        "user": user, "section": "projections",
        "projections": await admin.projections(services),
        "followers": await admin.followers(services),
    })


async def projections_table(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    return HTMLResponse(fragment("admin/_projections.html",
                                 projections=await admin.projections(services),
                                 followers=await admin.followers(services)))


async def rebuild(request: Request) -> Response:
    await require_admin(request)
    services = services_of(request)
    admin.rebuild(services, request.path_params["name"])
    return HTMLResponse(fragment("admin/_projections.html",
                                 projections=await admin.projections(services),
                                 followers=await admin.followers(services),
                                 requested=request.path_params["name"]))


routes = [
    Route("/admin", dashboard, methods=["GET"]),
    Route("/admin/live", dashboard_live, methods=["GET"]),
    Route("/admin/users", users, methods=["GET"]),
    Route("/admin/users/{user_id}/{action}", user_action, methods=["POST"]),
    Route("/admin/events", events, methods=["GET"]),
    Route("/admin/events/tail", events_tail, methods=["GET"]),
    Route("/admin/sessions", sessions, methods=["GET"]),
    Route("/admin/sessions/{session_id}", timeline, methods=["GET"]),
    Route("/admin/sessions/{session_id}/frame", timeline_frame, methods=["GET"]),
    Route("/admin/projections", projections, methods=["GET"]),
    Route("/admin/projections/table", projections_table, methods=["GET"]),
    Route("/admin/projections/{name}/rebuild", rebuild, methods=["POST"]),
]
