"""The composition root: builds the event store, projections, readers and the actor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import anyio

from app.cluster import Cluster, start_cluster
from app.config import Settings
from app.conversations import ConversationReader
from app.event_store import (
    EventLogReader,
    event_store_env,
    is_postgres,
    open_event_log,
    read_models_for,
)
from app.inference.actor import InferenceActor, Tuning
from app.inference.batched_engine import BatchedEngine
from app.inference.engine import Engine
from app.inference.registry import ModelFile, ModelRegistry, parse_paths
from app.inference.remote_engine import RemoteEngine, parse_urls
from app.inference.switching import ModelSwitcher
from app.metrics import Metrics
from app.security import (
    LoginLimiter,
    Network,
    RateWindow,
    load_secret,
    parse_networks,
    private_data_dir,
)
from app.startup import StartupError
from app.storage import WritableProbe, check_writable, why
from app.stream_hub import ChatFeeds
from app.usecases.errors import N_, Unavailable
from app.watch import ChangeWatch, PositionWatch, StreamCounter
from domain.application import ChatApplication
from domain.errors import DomainError
from projections import messages as messages_read
from projections.database import ReadDB, ReadModels
from projections.runner import ProjectionRunner
from projections.vectors import VectorFollower, VectorIndex

log = logging.getLogger(__name__)
T = TypeVar("T")

SETTLE_TIMEOUT = 10.0
SETTLE_SLICE = 0.25  # how often a waiting writer checks whether the projections fail


@dataclass
class Services:
    settings: Settings
    chat: ChatApplication
    projections: ProjectionRunner
    read_models: ReadModels
    read_db: ReadDB
    event_log: EventLogReader
    head: PositionWatch
    applied: PositionWatch
    actor: InferenceActor
    conversations: ConversationReader
    login_limiter: LoginLimiter
    secret: bytes
    trusted_proxies: tuple[Network, ...] = ()
    registrations: RateWindow = field(default_factory=lambda: RateWindow(60, 60))
    # Password hashing runs in these few threads, not the shared worker pool it could fill.
    hashing: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    changes: ChangeWatch = field(default_factory=lambda: ChangeWatch(asyncio.get_running_loop()))
    streams: StreamCounter = field(default_factory=lambda: StreamCounter(20))
    actor_task: asyncio.Task[None] | None = None
    metrics: Metrics | None = None
    # Semantic search; None when the vector index could not be opened (keyword search stays).
    vectors: VectorIndex | None = None
    vector_follower: VectorFollower | None = None
    # Several workers on one PostgreSQL store (app/cluster); None on SQLite (one process).
    cluster: Cluster | None = None

    async def command(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a domain command in a worker thread (the event store is synchronous)."""
        return await anyio.to_thread.run_sync(lambda: fn(*args))

    async def settle(self, position: int) -> None:
        """Wait until the read models include `position`, so the caller reads its own write.

        While the projections are failing, answer at once instead of after the timeout."""
        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        while not await self.applied.wait_until(position, SETTLE_SLICE):
            if self.projections.failing:
                raise Unavailable("read_models_failing", N_("The server cannot update its views"
                                  " right now; your change is saved. Try again shortly."), 5)
            if asyncio.get_running_loop().time() >= deadline:
                raise Unavailable("read_models_behind", N_("The server is busy; try again."), 1)

    @cached_property
    def chat_feeds(self) -> ChatFeeds:
        """One log reader per watched chat for its live streams (made by the first one)."""
        return ChatFeeds(self.event_log, self.changes, self.head)

    @cached_property
    def models(self) -> ModelRegistry:
        s = self.settings
        return ModelRegistry(s.models_dir, parse_paths(s.model_paths), s.model_path)

    @cached_property
    def switcher(self) -> ModelSwitcher:
        build = lambda path: build_engine(self.settings, path)  # noqa: E731
        if self.settings.engine_url:
            return _FixedModel(self.actor, build)
        return ModelSwitcher(self.actor, build, self.settings.model_path)

    @cached_property
    def data_dir_probe(self) -> WritableProbe:
        """Whether DATA_DIR takes writes, for /healthz (one test write per few seconds)."""
        return WritableProbe(self.settings.data_dir)

    @property
    def model_loaded(self) -> bool:
        return self.actor.engine is not None

    @property
    def model_id(self) -> str:
        engine = self.actor.engine
        return engine.info.id if engine else self.settings.model_id


async def start_services(settings: Settings) -> Services:
    try:  # running as root, permission bits prove nothing: only a real write tells
        check_writable(settings.data_dir)
    except OSError as error:
        raise StartupError(f"DATA_DIR {settings.data_dir} is not writable ({why(error)}); "
                           "make it writable or set DATA_DIR, then start again.") from None
    private_data_dir(settings.data_dir)
    loop = asyncio.get_running_loop()
    chat = ChatApplication(env=event_store_env(settings))
    read_models = read_models_for(settings)
    runner = ProjectionRunner(chat, read_models)
    head = PositionWatch(loop, chat.head())
    applied = PositionWatch(loop)
    chat.add_head_listener(head.advance_threadsafe)
    changes = ChangeWatch(loop)
    chat.add_change_listener(changes.changed_threadsafe)
    chat.add_head_listener(runner.wake)
    runner.add_listener(applied.advance_threadsafe)
    await anyio.to_thread.run_sync(runner.catch_up)
    runner.start()

    read_db = await read_models.connect_read()
    event_log = await open_event_log(settings, chat)
    conversations = ConversationReader(chat, runner, read_models, settings.n_ctx)
    actor = InferenceActor(chat, conversations, Tuning(
        max_queue=settings.max_queue, timeout=settings.generation_timeout,
        flush_interval=settings.token_flush_interval, flush_count=settings.token_flush_count,
        first_token_timeout=settings.first_token_timeout,
        max_queued_per_user=settings.max_queued_per_user,
    ))
    services = Services(
        settings=settings, chat=chat, projections=runner, read_models=read_models,
        read_db=read_db,
        event_log=event_log, head=head, applied=applied, actor=actor,
        conversations=conversations,
        login_limiter=LoginLimiter(settings.login_max_failures, settings.login_window_seconds),
        secret=load_secret(settings.secret_key, settings.data_dir),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        registrations=RateWindow(settings.register_max_per_address,
                                 settings.register_window_seconds),
        hashing=anyio.CapacityLimiter(settings.hash_concurrency),
        changes=changes, streams=StreamCounter(settings.max_streams_per_user),
    )
    if is_postgres(settings):
        services.cluster = await start_cluster(services)
    else:
        await interrupt_open_replies(services)
    await anyio.to_thread.run_sync(start_vectors, services)
    await load_model(services)
    services.actor_task = asyncio.create_task(actor.run(), name="inference-actor")
    services.metrics = Metrics()
    services.metrics.start(services)
    return services


async def interrupt_open_replies(services: Services) -> None:
    """Replies a crash left queued or streaming end as `interrupted`, keeping their text."""
    await services.settle(await anyio.to_thread.run_sync(services.projections.catch_up))
    for session_id, reply_id in await messages_read.open_replies(services.read_db):
        rid = UUID(reply_id)
        try:
            await services.command(services.chat.change_reply, UUID(session_id),
                                   lambda s, rid=rid: s.interrupt_reply(rid))
            log.info("reply %s was left open by a stop; marked interrupted", reply_id)
        except DomainError as error:
            log.info("reply %s: %s", reply_id, error)


def start_vectors(services: Services) -> None:
    """Open the vector index and start its follower (it embeds off the request path)."""
    data_dir = services.settings.data_dir
    try:
        services.vectors = VectorIndex(data_dir / "chroma")
        actor = services.actor
        services.vector_follower = VectorFollower(
            services.chat, services.vectors, data_dir / "vectors.sqlite",
            busy=lambda: actor.generating or actor.queue_depth > 0)
    except Exception:  # search without the semantic half beats no server
        log.exception("vector index unavailable; search is keyword-only")
        services.vectors = None
        return
    services.conversations.vectors = services.vectors  # long memory recalls from it
    services.chat.add_head_listener(services.vector_follower.wake)
    services.vector_follower.start()


class _FixedModel(ModelSwitcher):
    """With a remote engine the servers decide the model: replies never switch it."""

    async def ensure(self, model: ModelFile) -> None:
        return None


def build_engine(settings: Settings, path: Path) -> Engine:
    """The engine for one model file (at startup, and when a reply switches models), or
    the remote servers of ENGINE_URL (then `path` is not used)."""
    urls = parse_urls(settings.engine_url)
    if urls:
        return RemoteEngine(urls, settings.engine_api_key, settings.engine_parallel,
                            settings.engine_model, settings.n_ctx)
    return BatchedEngine(
        path, n_ctx=settings.n_ctx, n_parallel=settings.n_parallel,
        n_threads=settings.n_threads, n_gpu_layers=settings.n_gpu_layers,
        n_batch=settings.n_batch, use_mmap=settings.use_mmap, use_mlock=settings.use_mlock,
        flash_attn=settings.flash_attn, cache_dir=settings.data_dir / "kv-cache",
        cache_bytes=settings.kv_cache_bytes)


async def load_model(services: Services) -> None:
    settings = services.settings
    # Users see only that the model is missing; its path and the error go to the log.
    if not settings.engine_url and not settings.model_path.is_file():
        services.actor.load_error = "The model file is missing; ask the administrator."
        log.error("No model file at %s. Run 'make model' or set MODEL_PATH.",
                  settings.model_path)
        return
    try:
        services.actor.engine = await anyio.to_thread.run_sync(
            build_engine, settings, settings.model_path)
        log.info("model %s loaded", services.actor.engine.info.id)
    except Exception as error:  # a broken file must not stop the server from serving
        services.actor.load_error = "The model could not be loaded; ask the administrator."
        log.exception("model load failed: %s", error)


async def stop_services(services: Services) -> None:
    if services.metrics is not None:
        await services.metrics.stop()
    if services.actor_task is not None:
        services.actor.shutdown()
        services.actor_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await services.actor_task
    if services.cluster is not None:  # after the actor: its last records hold the lock
        await anyio.to_thread.run_sync(services.cluster.stop)
    close = getattr(services.actor.engine, "close", None)
    if callable(close):  # the batching engine saves its chats' KV states for the next start
        await anyio.to_thread.run_sync(close)
    services.conversations.close()
    if services.vector_follower is not None:
        await anyio.to_thread.run_sync(services.vector_follower.stop)
    services.projections.stop()
    await services.read_db.close()
    await services.event_log.close()
    services.chat.close()
