"""Static files: our own under /static, and the pinned npm packages under /vendor."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parents[2]
VENDOR_FILES = {
    "htmx.min.js": ROOT / "node_modules/htmx.org/dist/htmx.min.js",
    "sse.js": ROOT / "node_modules/htmx-ext-sse/dist/sse.js",
}


async def vendor(request: Request) -> Response:
    path = VENDOR_FILES.get(request.path_params["name"])
    if path is None:
        raise HTTPException(404)
    return FileResponse(path, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


routes: list[BaseRoute] = [
    Mount("/static", StaticFiles(directory=ROOT / "static"), name="static"),
    Route("/vendor/{name:str}", vendor, methods=["GET"]),
]
