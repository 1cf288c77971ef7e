"""Export and import over JSON: GET /api/sessions/{id}/export/ and POST /api/sessions/import/.

An export is a download (Content-Disposition: attachment, the title as the file name);
`?format=markdown` gives the conversation as Markdown instead. An import of LocalChat's
own document answers 201 with the new session, exactly as creating one does; an Open WebUI
or ChatGPT file, which may hold many chats, answers 201 {"format", "sessions": [...]}.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import require_user, services_of
from app.downloads import download, parse_json
from app.http_input import read_body
from app.usecases import exports


async def export(request: Request) -> Response:
    user = await require_user(request)
    return await download(services_of(request), user["id"], request.path_params["session_id"],
                          request.query_params.get("format", "json"))


async def import_(request: Request) -> Response:
    user = await require_user(request)
    services = services_of(request)
    document = parse_json(await read_body(request, services.settings.max_body_bytes))
    source, sessions = await exports.import_document(services, user["id"], document)
    if source == "localchat":
        return JSONResponse(sessions[0], 201)
    return JSONResponse({"format": source, "sessions": sessions}, 201)


# Listed before /api/sessions/{session_id}/ in the app's routes, which would match "import".
routes = [
    Route("/api/sessions/import/", import_, methods=["POST"]),
    Route("/api/sessions/{session_id}/export/", export, methods=["GET"]),
]
