"""Search over the caller's own messages: GET /api/search/?q=&limit= (API.md "Search")."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.http_input import query_int
from app.usecases import search


async def search_messages(request: Request) -> Response:
    user = await require_user(request)
    limit = query_int(request, "limit", search.DEFAULT_LIMIT, 1, search.MAX_LIMIT)
    found = await search.search(services_of(request), user["id"], request.query_params.get("q"),
                                limit)
    return JSONResponse(found)


routes = [Route("/api/search/", search_messages, methods=["GET"])]
