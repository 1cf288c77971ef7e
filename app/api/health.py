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
    projections = "failing" if services.projections.failing else "ok"
    # DATA_DIR holds the SQLite store, the KV cache, the vectors and the secret (on
    # PostgreSQL all but the store): a disk refusing writes there is unhealthy too.
    data_dir = "ok" if await services.data_dir_probe.writable() else "error"
    healthy = store == "ok" and projections == "ok" and data_dir == "ok"
    # API.md's fields, then ours beside them.
    body = {"status": "ok" if healthy else "error", "model_loaded": services.model_loaded,
            "event_store": store, "projections": projections, "data_dir": data_dir}
    return JSONResponse(body, 200 if healthy else 503)


routes = [Route("/healthz", healthz, methods=["GET"])]
