"""Prometheus metrics: what happened, from the committed log; how things stand, at scrape time.

Counters and histograms of generations are derived from committed events (a follower task
reads the log from the head at startup), never from calls sprinkled through the code: a
reply counts once it is durable, whichever code path wrote it. Gauges (queue depth, log
head, projection lag, the engine's batch and KV-cache counters) are read from the live
objects when Prometheus scrapes. SSE clients are counted by an ASGI middleware
(app.api.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

READ_BATCH = 1000
WAIT_SECONDS = 30.0
PREFIX = "localchat"
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
GENERATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
COMMON_OUTCOMES = (("completed", "stop"), ("completed", "length"), ("cancelled", ""),
                   ("interrupted", ""), ("failed", "timeout"))

# The `_created` timestamp series only double the output; counters here start with the
# process anyway.
disable_created_metrics()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.generations = Counter(
            f"{PREFIX}_generations", "Replies ended, by outcome (completed, failed, "
            "cancelled, interrupted) and reason (finish reason or error code).",
            ["outcome", "reason"], registry=r)
        for outcome, reason in COMMON_OUTCOMES:  # present at zero from the first scrape
            self.generations.labels(outcome, reason)
        self.queued = Counter(f"{PREFIX}_replies_queued", "Replies queued.", registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens_generated", "Tokens generated.", registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens",
                                     "Prompt tokens of started replies.", registry=r)
        self.first_token = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From a reply's start to its first token.", buckets=FIRST_TOKEN_BUCKETS, registry=r)
        self.token_latency = Histogram(
            f"{PREFIX}_token_latency_seconds",
            "Mean time between tokens of each completed reply.", buckets=LATENCY_BUCKETS,
            registry=r)
        self.generation_time = Histogram(
            f"{PREFIX}_generation_seconds", "Processing time of completed replies.",
            buckets=GENERATION_BUCKETS, registry=r)
        self.sse_clients = Gauge(f"{PREFIX}_sse_clients", "Open event streams.", registry=r)
        self.followed = 0  # the last log position counted
        self._task: asyncio.Task[None] | None = None

    # -- from the log --------------------------------------------------------------------

    def observe(self, event: Any) -> None:
        """Count one committed event (only a reply's life matters here)."""
        kind = type(event).__qualname__.rpartition(".")[2]
        if kind == "ReplyQueued":
            self.queued.inc()
        elif kind == "ReplyStarted":
            self.prompt_tokens.inc(event.prompt_tokens)
        elif kind == "TokensGenerated":
            self.tokens.inc(event.token_count)
        elif kind == "ReplyCompleted":
            self.generations.labels("completed", event.finish_reason).inc()
            ttft, seconds, count = (event.time_to_first_token, event.processing_time,
                                    event.token_count)
            if ttft is not None:
                self.first_token.observe(ttft)
                if count > 1 and seconds is not None and seconds >= ttft:
                    self.token_latency.observe((seconds - ttft) / (count - 1))
            if seconds is not None:
                self.generation_time.observe(seconds)
        elif kind == "ReplyFailed":
            self.generations.labels("failed", event.code).inc()
        elif kind == "ReplyCancelled":
            self.generations.labels("cancelled", "").inc()
        elif kind == "ReplyInterrupted":
            self.generations.labels("interrupted", "").inc()

    async def follow(self, services: Services) -> None:
        """Count every event committed after `self.followed`, forever."""
        while True:
            head = services.head.position
            try:
                batch = await services.event_log.select(self.followed, READ_BATCH)
            except Exception:  # a metrics hiccup must never take the server down
                log.exception("metrics could not read the event log")
                await asyncio.sleep(1)
                continue
            for logged in batch:
                self.followed = logged.position
                self.observe(logged.event)
            if len(batch) < READ_BATCH:
                await services.head.wait_beyond(head, timeout=WAIT_SECONDS)

    def start(self, services: Services) -> None:
        """Count from the current head (Prometheus counters start at zero with a process)."""
        self.followed = services.head.position
        self.registry.register(StateCollector(services))
        self._task = asyncio.create_task(self.follow(services), name="metrics-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class StateCollector(Collector):
    """Gauges read when scraped."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        s = self._services
        actor = s.actor
        yield _gauge("queue_depth", "Replies waiting for the model.", actor.queue_depth)
        yield _gauge("generating", "Replies being generated now.", _generating(s))
        yield _gauge("model_loaded", "1 when a model is loaded.", int(s.model_loaded))
        yield _gauge("event_store_head", "Position of the newest committed event.",
                     s.head.position)
        yield _gauge("metrics_position", "The last log position these counters include.",
                     s.metrics.followed if s.metrics else 0)
        head = s.head.position
        lag = GaugeMetricFamily(f"{PREFIX}_projection_lag",
                                "Events committed but not yet in a read model.",
                                labels=["projection"])
        position = GaugeMetricFamily(f"{PREFIX}_projection_position",
                                     "The last event a read model includes.",
                                     labels=["projection"])
        for name, at in s.projections.positions().items():
            lag.add_metric([name], max(0, head - at))
            position.add_metric([name], at)
        yield lag
        yield position
        yield from _engine_metrics(actor.engine)


def _generating(services: Services) -> int:
    busy = getattr(services.actor.engine, "busy", None)
    if isinstance(busy, int):
        return busy
    return int(services.actor.generating)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _engine_metrics(engine: Any) -> Iterator[Metric]:
    """Batch occupancy and KV-cache counters from a batching engine's `stats`; zeros for an
    engine that decodes one reply at a time and keeps no per-chat cache."""
    stats = getattr(engine, "stats", None)
    n_parallel = int(getattr(engine, "n_parallel", 1) or 1)
    occupancy = stats.occupancy(n_parallel) if stats is not None else 0.0
    yield _gauge("batch_slots", "Replies the engine can decode together.", n_parallel)
    yield _gauge("batch_occupancy",
                 "Mean share of the batch's slots decoding together per step.", occupancy)
    steps = CounterMetricFamily(f"{PREFIX}_batch_steps", "Decode steps of the engine.",
                                value=getattr(stats, "steps", 0))
    yield steps
    lookups = CounterMetricFamily(
        f"{PREFIX}_kv_cache_lookups",
        "A returning chat's KV state: in its slot (resident), restored from disk, or missed.",
        labels=["result"])
    lookups.add_metric(["resident"], getattr(stats, "kv_resident", 0))
    lookups.add_metric(["restored"], getattr(stats, "kv_restored", 0))
    lookups.add_metric(["miss"], getattr(stats, "kv_misses", 0))
    yield lookups
    yield CounterMetricFamily(f"{PREFIX}_kv_cache_evictions",
                              "Idle chats' KV states moved to disk to free a slot.",
                              value=getattr(stats, "kv_evictions", 0))
    yield CounterMetricFamily(f"{PREFIX}_prompt_tokens_evaluated",
                              "Prompt tokens run through the model (after KV reuse).",
                              value=getattr(stats, "prompt_tokens_evaluated", 0))
