"""The ASGI application: `uvicorn app.main:app`."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from eventsourcing.persistence import OperationalError as StoreOperationalError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from app import errors, i18n
from app.api import admin, auth, exports, health, llm, messages, openai_compat, search, sessions
from app.api import branches as branches_api
from app.api import metrics as metrics_api
from app.api import profile as profile_api
from app.config import Settings
from app.pages import accounts, assets, chat
from app.pages import admin as admin_pages
from app.pages import branches as branches_page
from app.pages import exports as exports_page
from app.pages import history as history_page
from app.pages import language as language_page
from app.pages import profile as profile_page
from app.pages import search as search_page
from app.pages import signals as signals_page
from app.pages.errors import http_error_page, use_case_error_page
from app.security_headers import SecurityHeaders
from app.services import start_services, stop_services
from app.startup import OneLineStartupErrors, StartupError
from app.storage import storage_problem, why
from app.usecases import accounts as account_cases
from app.usecases.errors import UseCaseError

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/healthz", "/metrics", "/v1/")


def is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIXES)


async def on_use_case_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UseCaseError)
    if openai_compat.is_openai(request):
        return await openai_compat.openai_error(request, exc)
    if is_api(request):
        return await errors.use_case_error(request, exc)
    return use_case_error_page(request, exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if openai_compat.is_openai(request):
        return await openai_compat.openai_error(request, exc)
    if is_api(request):
        return await errors.http_error(request, exc)
    return http_error_page(request, exc)


async def on_storage_error(request: Request, exc: Exception) -> Response:
    """The disk refusing a write (full, read-only) is 503 `storage_unavailable`; another
    error of these classes is a 500, answered here so the connection stays open."""
    if storage_problem(exc):
        log.error("storage refused %s %s: %s", request.method, request.url.path, why(exc))
        return await on_use_case_error(request, errors.storage_unavailable())
    return await on_server_error(request, exc)


async def on_server_error(request: Request, exc: Exception) -> Response:
    if storage_problem(exc):  # e.g. PostgreSQL unreachable (psycopg's own errors)
        return await on_storage_error(request, exc)
    if openai_compat.is_openai(request):
        return await openai_compat.openai_error(request, exc)
    return await errors.server_error(request, exc)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            services = await start_services(settings)
            await account_cases.restore_sign_in_throttle(services)
        except Exception as error:  # a full or read-only disk found while starting
            if not storage_problem(error):
                raise
            raise StartupError(f"DATA_DIR {settings.data_dir} refused a write while starting"
                               f" ({why(error)}); free space or make it writable, then "
                               "start again.") from error
        app.state.services = services
        try:
            yield
        finally:
            await stop_services(services)

    routes = [
        *profile_api.routes, *profile_page.routes, *signals_page.routes,
        *branches_api.routes, *branches_page.routes, *history_page.routes,
        *language_page.routes,
        *exports.routes, *exports_page.routes,  # before the {session_id} routes
        *health.routes, *auth.routes, *sessions.routes, *messages.routes, *admin.routes,
        *search.routes, *llm.routes, *openai_compat.routes, *metrics_api.routes,
        *accounts.routes, *chat.routes, *search_page.routes, *assets.routes, *admin_pages.routes,
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(OneLineStartupErrors),
                    Middleware(SecurityHeaders, hsts=settings.cookie_secure),
                    Middleware(metrics_api.SseClientsMiddleware),
                    Middleware(i18n.LanguageMiddleware)],
        exception_handlers={
            UseCaseError: on_use_case_error,
            HTTPException: on_http_error,
            StoreOperationalError: on_storage_error,
            sqlite3.OperationalError: on_storage_error,
            # PostgreSQL unreachable (the read models' pool timing out included): handled
            # here, not by the last-resort handler, which also re-raises and drops the line.
            psycopg.OperationalError: on_storage_error,
            OSError: on_storage_error,
            Exception: on_server_error,
        },
    )


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
app = create_app()
