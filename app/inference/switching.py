"""Switching the loaded model to another file of the registry, between replies.

One model is loaded at a time (a second would double the memory). A reply for another
model switches only when the actor is idle: nothing queued, nothing generating. While the
new file loads, the actor has no engine, so every request that would queue a reply gets
503 `model_not_loaded` with Retry-After and a message naming the model being loaded; a
request arriving while other replies are still running gets 503 `model_busy`. A file that
fails to load leaves the previous model loaded again.

With no model loaded at all (its file was missing at start, or a load failed), the next
reply loads one on demand: the model it asks for, else the file loaded last (MODEL_PATH at
first), once that file is there. A reply is where the model is needed, so a file put back
costs no restart, no background polling and no health probe waiting on a load that may
take minutes; while nothing is there a reply costs one `stat`. A file that failed to load
is tried again only once it changed (size or modification time: put back, or replaced).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
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
Stamp = tuple[int, int]  # a file's size and modification time (ns)


class ModelSwitcher:
    def __init__(self, actor: InferenceActor, build: EngineFactory,
                 default: Path | None = None) -> None:
        self._actor = actor
        self._build = build
        self._lock = asyncio.Lock()
        self.loading: str | None = None  # the model id being loaded now
        self._pending = 0  # requests between choosing their model and queueing the reply
        # The file a reply without a model of its own loads when none is: the one loaded
        # last, MODEL_PATH at first. None: nothing is loaded on demand (ENGINE_URL).
        self._fallback = default
        self._refused: dict[Path, Stamp] = {}  # files that failed to load, as they were

    @asynccontextmanager
    async def using(self, model: ModelFile | None) -> AsyncIterator[None]:
        """Queue a reply for `model` (None: whichever is loaded) inside this block: no
        switch can start until the reply is queued, and then it waits for the reply."""
        if model is not None:
            await self.ensure(model)
        elif (self._actor.engine is None and self.loading is None
              and self._fallback is not None):  # else the queue says what is missing
            await self._load_back(self._fallback, self._fallback.stem)
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
        if engine is None:  # no model at all (a failed start, a file gone): load this one
            if self._fallback is not None and await self._load_back(model.path, model.id):
                return
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
        stamp = _stamp(model.path)
        try:
            await anyio.to_thread.run_sync(_close, old)
            try:
                new = await anyio.to_thread.run_sync(self._build, model.path)
            except Exception:
                log.exception("loading %s failed; loading %s again", model.id, old.info.id)
                self._refuse(model.path, stamp)
                await self._restore(old)
                # The error names the file (a path): it stays in the log.
                raise Unavailable("model_load_failed", Message(
                    N_("The model %(model)s could not be loaded; ask the administrator."),
                    {"model": model.id}), LOADING_RETRY_SECONDS) from None
            self._actor.engine = new
            self._actor.load_error = None
            self._loaded(model.path)
            log.info("switched model from %s to %s", old.info.id, model.id)
        finally:
            self.loading = None


    async def _restore(self, old: Engine) -> None:
        path = Path(old.info.path)
        stamp = _stamp(path)
        try:
            self._actor.engine = await anyio.to_thread.run_sync(self._build, path)
            self._actor.load_error = None
        except Exception:  # the server keeps serving everything but replies
            log.exception("loading %s again failed", old.info.id)
            self._refuse(path, stamp)
            self._actor.load_error = "The model could not be loaded; ask the administrator."

    async def _load_back(self, path: Path, model_id: str) -> bool:
        """With no model loaded, load `path` if its file is there and did not fail to load
        as it is now: True once loaded, False if there is nothing to try (the caller says
        what is missing), Unavailable if the load fails."""
        stamp = _stamp(path)
        if stamp is None or self._refused.get(path) == stamp:
            return False
        # No await between the checks (the caller's too) and this: one load at a time.
        self.loading, error = model_id, self._actor.load_error
        self._actor.load_error = f"The model {model_id} is loading; try again shortly."
        try:
            new = await anyio.to_thread.run_sync(self._build, path)
        except Exception:
            log.exception("loading %s failed", model_id)
            self._refuse(path, stamp)
            self._actor.load_error = "The model could not be loaded; ask the administrator."
            raise Unavailable("model_load_failed", Message(
                N_("The model %(model)s could not be loaded; ask the administrator."),
                {"model": model_id}), LOADING_RETRY_SECONDS) from None
        except BaseException:  # cancelled: nothing changed
            self._actor.load_error = error
            raise
        finally:
            self.loading = None
        self._actor.engine = new
        self._actor.load_error = None
        self._loaded(path)
        log.info("model %s loaded (no model was; its file is there now)", model_id)
        return True

    def _loaded(self, path: Path) -> None:
        self._refused.pop(path, None)
        if self._fallback is not None:
            self._fallback = path

    def _refuse(self, path: Path, stamp: Stamp | None) -> None:
        if stamp is not None:  # a file that is not there is looked for again anyway
            self._refused[path] = stamp


def _stamp(path: Path) -> Stamp | None:
    """The file's size and modification time, None if it is not a file (missing)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_size, found.st_mtime_ns) if stat.S_ISREG(found.st_mode) else None


def _close(engine: Engine) -> None:
    """Free the engine's model (an engine without `close` goes with its last reference)."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
