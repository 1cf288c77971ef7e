"""The ASGI application: `uvicorn app.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from app.api import admin, auth, health, messages, sessions
from app.config import Settings
from app.errors import ApiError, api_error, http_error, server_error
from app.services import start_services, stop_services


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            await stop_services(services)

    routes = [
        *health.routes, *auth.routes, *sessions.routes, *messages.routes, *admin.routes,
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: server_error,
        },
    )


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
