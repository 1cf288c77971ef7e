"""Export downloads and file import for the chat page.

The import form posts the chosen file as multipart (works without JavaScript: the whole
file is imported, then the first new chat opens). With JavaScript (static/js/app.js), a
file of many chats is sent one chat per request, so the page can show "3 / 12" as each is
imported and add it to the sidebar; each request answers the new chats' sidebar items.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from app.auth import optional_user, require_user, services_of
from app.downloads import download, parse_json
from app.errors import status_of
from app.http_input import read_body
from app.pages import messages
from app.pages.render import fragment
from app.security import csrf_token
from app.usecases import exports
from app.usecases.errors import (
    N_,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    TooLarge,
    UseCaseError,
)


async def export(request: Request) -> Response:
    user = await require_user(request)
    return await download(services_of(request), user["id"], request.path_params["session_id"],
                          request.query_params.get("format", "json"))


async def import_file(request: Request) -> Response:
    services = services_of(request)
    limit = services.settings.max_body_bytes
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        user = await optional_user(request)
        if user is None:
            raise NotAuthenticated(N_("Sign in first."))
        raw, sent_csrf = await _uploaded(request, limit)
        # A plain form cannot send the CSRF header, so the token travels as a field.
        expected = csrf_token(services.secret, user["token"])
        if user["via_cookie"] and not hmac.compare_digest(sent_csrf.encode(), expected.encode()):
            raise Forbidden(N_("The CSRF token is missing or wrong; reload the page."),
                            code="csrf_failed")
        _source, sessions = await exports.import_document(services, user["id"],
                                                          parse_json(raw))
        return RedirectResponse(f"/chats/{sessions[0]['id']}" if sessions else "/chats", 303)
    user = await require_user(request)
    # One chat from the page's script: the answer is its sidebar item, or the problem as
    # plain text for the progress line.
    try:
        document = parse_json(await read_body(request, limit))
        _source, sessions = await exports.import_document(services, user["id"], document)
    except UseCaseError as error:
        return PlainTextResponse(messages.message(error), status_of(error))
    items = "".join(fragment("chat/_session_item.html", item=item, active_id=None)
                    for item in sessions)
    return HTMLResponse(items, 201)


async def _uploaded(request: Request, limit: int) -> tuple[bytes, str]:
    """(the file's bytes, the form's CSRF field) of a multipart form within the limit."""
    declared = request.headers.get("content-length")
    if not declared or not declared.isdigit() or int(declared) > limit:
        raise TooLarge.body(limit)
    async with request.form(max_files=1, max_fields=10, max_part_size=limit) as form:
        upload, sent_csrf = form.get("file"), form.get("csrf")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("file", N_("choose a file to import."))
        return await upload.read(), sent_csrf if isinstance(sent_csrf, str) else ""


routes = [
    Route("/chats/import", import_file, methods=["POST"]),
    Route("/chats/{session_id}/export", export, methods=["GET"]),
]
