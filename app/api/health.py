"""Liveness for operators and load balancers (no auth)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.auth import services_of

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    services = services_of(request)
    try:
        await services.event_log.head()
        store = "ok"
    except Exception:
        log.exception("event store check failed")
        store = "error"
    body = {"status": "ok" if store == "ok" else "error", "model_loaded": services.model_loaded,
            "event_store": store}
    return JSONResponse(body, 200 if store == "ok" else 503)


routes = [Route("/healthz", healthz, methods=["GET"])]
