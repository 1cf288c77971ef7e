"""GET /metrics in Prometheus' text format, and the middleware counting open SSE streams."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import services_of
from app.metrics import Metrics
from app.usecases.errors import Unavailable


async def metrics(request: Request) -> Response:
    """No auth, like /healthz: operators scrape it from inside their network."""
    registry = services_of(request).metrics
    if registry is None:
        raise Unavailable("metrics_unavailable", "Metrics are not collected.", 30)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


class SseClientsMiddleware:
    """Counts responses that are event streams while they are open (API and pages alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        counted: list[Metrics] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and not counted:
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    state = getattr(scope.get("app"), "state", None)
                    services = getattr(state, "services", None)
                    found = getattr(services, "metrics", None)
                    if isinstance(found, Metrics):
                        found.sse_clients.inc()
                        counted.append(found)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            for found in counted:
                found.sse_clients.dec()


routes = [Route("/metrics", metrics, methods=["GET"])]
