"""Jobs in, events out: what a caller hands an engine and what it hears back.

A request carries the whole prompt, its sampling, an optional key (the chat, whose KV state
an engine may keep between turns) and deadlines. The engine answers through the job's
listener, in order: `Started`, `Text` per generated token, then one `Done` or `Failed`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from app.inference.engine import (
    Finished,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Token,
    Turn,
)
from app.inference.sampling import GenerationParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]  # the whole prompt; what the chat's slot already holds is not re-read
    params: GenerationParams
    key: str | None = None  # the chat: its KV state is kept between turns under this key
    timeout: float | None = None  # seconds from submit until the reply must be complete
    first_token_timeout: float | None = None  # seconds from submit until its first token
    turns: tuple[Turn, ...] = ()  # the prompt as messages, for a remote engine (see engine.py)


@dataclass(frozen=True)
class Started:
    prompt_tokens: int
    reused_tokens: int  # prompt tokens found in the KV state, not evaluated again
    cache: str  # "resident" (in its slot), "restored" (from disk), "miss", "none" (no key)


@dataclass(frozen=True)
class Text:
    text: str  # may be "" (half a character, or text a stop string may still claim)
    tokens: int  # generated tokens this accounts for: 1, or 0 for text released at the end


@dataclass(frozen=True)
class Done:
    reason: str  # "stop", "length", "cancelled", "interrupted" (engine closed)


# What a user is told when the model raises; the exception itself goes to the server log
# (it may name files or internals).
MODEL_FAILED = "The model failed while writing this reply; the server log has the details."


@dataclass(frozen=True)
class Failed:
    code: str  # "timeout", "context_too_long", "generation_failed"; remote: "engine_..."
    message: str


Event = Started | Text | Done | Failed
EventSink = Callable[[Event], None]


@dataclass
class JobStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    evaluated_tokens: int = 0  # prompt tokens this job ran through the model
    generated_tokens: int = 0
    cache: str = ""
    wait_seconds: float | None = None  # submit to slot
    first_token_seconds: float | None = None  # submit to first token


class Job:
    """A submitted request: its handle for cancelling, its counters, its outcome."""

    def __init__(self, job_id: int, request: GenerationRequest, sink: EventSink,
                 wake: Callable[[], None] | None = None) -> None:
        self.id = job_id
        self.request = request
        self.key = request.key
        self.stats = JobStats(prompt_tokens=len(request.prompt))
        self.outcome: Done | Failed | None = None
        self.done = threading.Event()
        self.submitted = time.monotonic()
        self._sink = sink
        self.cancelled = False
        self._wake = wake

    def cancel(self) -> None:
        """Ask the engine to end this reply; it sends `Done("cancelled")` soon after."""
        self.cancelled = True
        if self._wake is not None:
            self._wake()

    def emit(self, event: Event) -> bool:
        """Pass an event to the job's listener; False (and the job cancelled) if it broke."""
        try:
            self._sink(event)
            return True
        except Exception:  # a broken listener ends its own reply, no other
            log.exception("event listener of job %s failed; cancelling it", self.id)
            self.cancelled = True
            return False

    def expired(self, now: float) -> Done | Failed | None:
        """How the job must end now, if it must: cancelled, or past one of its deadlines."""
        if self.cancelled:
            return Done("cancelled")
        request, waited = self.request, now - self.submitted
        if request.timeout is not None and waited > request.timeout:
            return Failed("timeout", f"The reply took longer than {request.timeout:g} seconds.")
        if (request.first_token_timeout is not None and self.stats.first_token_seconds is None
                and waited > request.first_token_timeout):
            return Failed("timeout", "The reply did not begin within "
                                     f"{request.first_token_timeout:g} seconds.")
        return None


class JobEngine(Protocol):
    """An engine taking jobs: `n_parallel` of them decode at once, the rest wait inside."""

    info: ModelInfo
    n_parallel: int

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int
                ) -> PreparedPrompt: ...

    def submit(self, request: GenerationRequest, sink: EventSink) -> Job: ...


def stream_job(engine: JobEngine, prompt: PreparedPrompt, params: SamplingParams
               ) -> Iterator[Token | Finished]:
    """The one-reply-at-a-time `Engine.stream` over an engine taking jobs."""
    events: queue.Queue[Event] = queue.Queue()
    job = engine.submit(GenerationRequest(
        prompt.tokens, GenerationParams(params.temperature, params.top_p, params.max_tokens),
        turns=prompt.turns,
    ), events.put)
    try:
        while True:
            event = events.get()
            if isinstance(event, Text):
                yield Token(event.text)
            elif isinstance(event, Done):
                if event.reason in ("stop", "length"):
                    yield Finished(event.reason)
                return
            elif isinstance(event, Failed):
                raise RuntimeError(event.message)
    finally:
        job.cancel()  # a caller that stops iterating ends the reply
