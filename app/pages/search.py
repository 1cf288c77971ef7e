"""The sidebar's message search: an htmx fragment of results, each linking to its message."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.i18n import gettext as _
from app.pages import messages
from app.pages.render import fragment
from app.usecases import search
from app.usecases.errors import InvalidInput

RESULTS = 20


async def results(request: Request) -> Response:
    user = await require_user(request)
    q = request.query_params.get("q", "")
    if not q.strip():  # a cleared search box clears the results
        return HTMLResponse(fragment("chat/_search_results.html", q="", results=[]))
    try:
        found = await search.search(services_of(request), user["id"], q, RESULTS)
    except InvalidInput as error:
        return HTMLResponse(fragment("chat/_search_results.html", q=q, results=[],
                                     error=_("The search %(problem)s") % {
                                         "problem": messages.problem(error)}))
    return HTMLResponse(fragment("chat/_search_results.html", q=q, results=found))


routes = [Route("/search", results, methods=["GET"])]
