"""Chat sessions: list, create, read, update, delete."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import validation as v
from app.auth import require_user, services_of
from app.errors import invalid, not_found
from app.replies import stop_replies
from app.services import Services
from domain.errors import NotFound
from projections import sessions as sessions_read

CONFIG_KEYS = ("system_prompt", "temperature", "max_tokens", "top_p", "model")


def session_fields(body: dict[str, Any], services: Services) -> tuple[str | None, dict[str, Any]]:
    """(title, config changes) from a create or update body; absent fields are left out."""
    s = services.settings
    title = v.text(body, "title", max_len=s.max_title_chars, strip=True)
    n_ctx = services.actor.engine.info.n_ctx if services.actor.engine else s.n_ctx
    config: dict[str, Any] = {
        "system_prompt": v.text(body, "system_prompt", max_len=s.max_system_prompt_chars),
        "temperature": v.number(body, "temperature", low=0, high=2),
        "top_p": v.number(body, "top_p", low=0, high=1),
        "max_tokens": v.integer(body, "max_tokens", low=1,
                                high=min(s.max_tokens_limit, n_ctx - 1)),
        "model": v.text(body, "model", max_len=200),
    }
    if config["model"] is not None and config["model"] != services.model_id:
        raise invalid("model", f"unknown model; available: {services.model_id}.")
    return title, {k: value for k, value in config.items() if value is not None}


def default_config(services: Services) -> dict[str, Any]:
    s = services.settings
    return {
        "system_prompt": s.default_system_prompt, "temperature": s.default_temperature,
        "top_p": s.default_top_p, "max_tokens": s.default_max_tokens, "model": services.model_id,
    }


def parse_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise not_found("session") from None


async def owned_session(request: Request, user: dict[str, Any]) -> dict[str, Any]:
    """The caller's session from the path, else 404 (also for someone else's)."""
    services = services_of(request)
    session_id = parse_id(request.path_params["session_id"])
    session = await sessions_read.get_session(services.read_db, user["id"], str(session_id))
    if session is None:
        raise not_found("session")
    return session


async def list_or_create(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    if request.method == "GET":
        q = request.query_params.get("q", "").strip()
        if len(q) > 500:
            raise invalid("q", "must be at most 500 characters.")
        limit = v.query_int(request, "limit", 50, 1, 500)
        found = await sessions_read.list_sessions(services.read_db, user["id"], q, limit)
        return JSONResponse(found)
    body = await v.read_json(request, services.settings.max_body_bytes, allow_empty=True)
    title, config = session_fields(body, services)
    session_id, position = await services.command(
        services.chat.start_session, UUID(user["id"]), title or "",
        {**default_config(services), **config},
    )
    await services.settle(position)
    session = await sessions_read.get_session(services.read_db, user["id"], str(session_id))
    return JSONResponse(session, 201)


async def detail(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    session = await owned_session(request, user)
    if request.method == "GET":
        return JSONResponse(session)
    if request.method == "DELETE":
        await delete_session(services, UUID(session["id"]), UUID(user["id"]))
        return Response(status_code=204)
    body = await v.read_json(request, services.settings.max_body_bytes)
    title, config = session_fields(body, services)
    if title is not None and not title:
        raise invalid("title", "must not be empty.")
    try:
        position = await services.command(services.chat.update_session, UUID(session["id"]),
                                          UUID(user["id"]), title, config)
    except NotFound:
        raise not_found("session") from None
    await services.settle(position)
    updated = await sessions_read.get_session(services.read_db, user["id"], session["id"])
    return JSONResponse(updated)


async def delete_session(services: Services, session_id: UUID, owner_id: UUID) -> None:
    """Stop its replies, then delete; the history stays in the event store for audit."""
    await stop_replies(services, session_id)
    try:
        position = await services.command(services.chat.delete_session, session_id, owner_id)
    except NotFound:
        raise not_found("session") from None
    await services.settle(position)


routes = [
    Route("/api/sessions/", list_or_create, methods=["GET", "POST"]),
    Route("/api/sessions/{session_id}/", detail, methods=["GET", "PUT", "PATCH", "DELETE"]),
]
