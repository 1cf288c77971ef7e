"""A start that cannot succeed says why in one line, not a traceback.

Starlette reports any exception in the lifespan to the server as its whole traceback; for a
`StartupError` (a condition the operator fixes, such as an unwritable DATA_DIR) this
middleware sends the error's one-line message instead, and uvicorn exits with status 3."""

from __future__ import annotations

import contextlib
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StartupError(Exception):
    """The server cannot start; the message says what to fix, in one line."""


class OneLineStartupErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            # Starlette sends `startup.failed` from inside its `except`: the error is current.
            error = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(error, StartupError):
                message = {**message, "message": f"Cannot start: {error}"}
            await send(message)

        with contextlib.suppress(StartupError):  # already reported, in one line
            await self.app(scope, receive, send_one_line)
