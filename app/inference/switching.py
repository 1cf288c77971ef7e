"""Switching the loaded model to another file of the registry, between replies.

One model is loaded at a time (a second would double the memory). A reply for another
model switches only when the actor is idle: nothing queued, nothing generating. While the
new file loads, the actor has no engine, so every request that would queue a reply gets
503 `model_not_loaded` with Retry-After and a message naming the model being loaded; a
request arriving while other replies are still running gets 503 `model_busy`. A file that
fails to load leaves the previous model loaded again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

from app.inference.actor import InferenceActor
from app.inference.engine import Engine
from app.inference.registry import ModelFile
from app.usecases.errors import N_, Message, Unavailable

log = logging.getLogger(__name__)

BUSY_RETRY_SECONDS = 10
LOADING_RETRY_SECONDS = 15

EngineFactory = Callable[[Path], Engine]


class ModelSwitcher:
    def __init__(self, actor: InferenceActor, build: EngineFactory) -> None:
        self._actor = actor
        self._build = build
        self._lock = asyncio.Lock()
        self.loading: str | None = None  # the model id being loaded now
        self._pending = 0  # requests between choosing their model and queueing the reply

    @asynccontextmanager
    async def using(self, model: ModelFile | None) -> AsyncIterator[None]:
        """Queue a reply for `model` (None: whichever is loaded) inside this block: no
        switch can start until the reply is queued, and then it waits for the reply."""
        if model is not None:
            await self.ensure(model)
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def ensure(self, model: ModelFile) -> None:
        """Make `model` the loaded one, or raise Unavailable saying when to retry."""
        engine = self._actor.engine
        if engine is not None and engine.info.id == model.id:
            return
        if self.loading is not None:
            raise Unavailable("model_not_loaded", Message(
                N_("The model %(model)s is loading; try again shortly."),
                {"model": self.loading}), LOADING_RETRY_SECONDS)
        if engine is None:  # no model at all (a failed start): nothing to switch from
            raise Unavailable("model_not_loaded", self._actor.load_error
                              or "The model is not loaded.", LOADING_RETRY_SECONDS)
        if self._actor.queue_depth or self._actor.generating or self._pending:
            raise Unavailable("model_busy", Message(
                N_("The server is answering with %(current)s; switching to %(model)s waits"
                   " until it is idle."), {"current": engine.info.id, "model": model.id}),
                BUSY_RETRY_SECONDS)
        async with self._lock:
            await self._switch(engine, model)

    async def _switch(self, old: Engine, model: ModelFile) -> None:
        # No await between the idle check and this: no reply can be queued in between.
        self.loading = model.id
        self._actor.engine = None
        self._actor.load_error = (f"Switching from {old.info.id} to {model.id}; "
                                  "try again shortly.")
        try:
            await anyio.to_thread.run_sync(_close, old)
            try:
                new = await anyio.to_thread.run_sync(self._build, model.path)
            except Exception:
                log.exception("loading %s failed; loading %s again", model.id, old.info.id)
                await self._restore(old)
                # The error names the file (a path): it stays in the log.
                raise Unavailable("model_load_failed", Message(
                    N_("The model %(model)s could not be loaded; ask the administrator."),
                    {"model": model.id}), LOADING_RETRY_SECONDS) from None
            self._actor.engine = new
            self._actor.load_error = None
            log.info("switched model from %s to %s", old.info.id, model.id)
        finally:
            self.loading = None


    async def _restore(self, old: Engine) -> None:
        try:
            self._actor.engine = await anyio.to_thread.run_sync(
                self._build, Path(old.info.path))
            self._actor.load_error = None
        except Exception:  # the server keeps serving everything but replies
            log.exception("loading %s again failed", old.info.id)
            self._actor.load_error = "The model could not be loaded; ask the administrator."


def _close(engine: Engine) -> None:
    """Free the engine's model (an engine without `close` goes with its last reference)."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
