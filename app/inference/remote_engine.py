"""A remote engine: replies written by OpenAI-compatible servers (`ENGINE_URL`).

llama.cpp's llama-server, vLLM, or another LocalChat's `/v1` take the conversation as chat
messages and stream `chat.completion.chunk`s back; each chunk becomes a `Text` event and
the finish reason `Done`, exactly as from the in-process engines, so the actor records a
remote reply like any other. Several URLs serve one queue: each takes `ENGINE_PARALLEL`
replies at once, a new reply goes to the least busy one (one that just failed to connect
comes last), and a reply whose server cannot be reached is tried on the next one.

Every request runs as a task on one event loop in the engine's own thread (the actor calls
engines off its loop); cancelling a reply cancels its task, which closes its connection, so
the remote server stops writing it too. What goes wrong reaches the user as a short message
naming no URL; the details go to the server log.

Context fitting: a server may report its context on `/v1/models` (vLLM `max_model_len`,
llama-server `meta.n_ctx_train`, or `context_length` / `n_ctx`), else `N_CTX` is used. The
remote tokenizer is unknown here, so a prompt's size is *estimated* on the safe side: one
token per UTF-8 byte of non-ASCII text (Korean runs close to that on small vocabularies) and
one per 2.5 ASCII characters, plus a few per turn; the oldest turns are dropped (starting
at a user turn) until the estimate and the reply's budget fit. A server that still finds
the prompt too long fails the reply as `context_too_long`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from app.inference.engine import (
    ContextTooLong,
    Finished,
    ModelInfo,
    PreparedPrompt,
    SamplingParams,
    Token,
    Turn,
)
from app.inference.jobs import (
    Done,
    EventSink,
    Failed,
    GenerationRequest,
    Job,
    Started,
    Text,
    stream_job,
)
from app.inference.sampling import TextStream

log = logging.getLogger(__name__)

MIN_REPLY_TOKENS = 16  # as the in-process prompter: less room than this is too long
TOKENS_PER_TURN = 4  # role markers and separators of a chat template
TOKENS_PER_PROMPT = 8  # BOS, the assistant header after the last turn
ASCII_CHARS_PER_TOKEN = 2.5
CONNECT_SECONDS = 10.0
PROBE_SECONDS = 10.0
PROBE_RETRY_SECONDS = 5.0  # a server that did not answer the probe is asked again after this
SHUN_SECONDS = 5.0  # a server that refused a connection goes last for this long
CLOSE_SECONDS = 5.0  # how long close waits for running replies to end
ERROR_BODY_BYTES = 2000  # of a refused request's body, for the log
REMOTE_PROMPT_TEMPLATE = "remote"

# What users are told, under the failure codes engine_unreachable, engine_lost, engine_busy,
# engine_refused, context_too_long and generation_failed; the URL and the remote's own words
# go to the server log.
UNREACHABLE = "The inference server could not be reached; try again shortly."
LOST = "The connection to the inference server was lost while writing this reply; try again."
BUSY = "The inference server is busy; try again shortly."
REFUSED = "The inference server refused the request; the server log has the details."
REMOTE_FAILED = "The inference server failed while writing this reply; try again shortly."
TOO_LONG = ("The conversation is too long for the inference server's context. Shorten the "
            "message or the system prompt.")


def parse_urls(raw: str) -> list[str]:
    """ENGINE_URL: base URLs separated by commas; a trailing `/v1` is accepted."""
    urls = []
    for part in raw.split(","):
        url = part.strip().rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        if url:
            urls.append(url)
    return urls


def estimate_tokens(text: str) -> int:
    """An estimate of a text's tokens under an unknown tokenizer, erring high."""
    ascii_chars = sum(1 for c in text if c < "\x80")
    other_bytes = len(text.encode("utf-8")) - ascii_chars
    return other_bytes + math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN)


def fit_turns(system_prompt: str, history: Sequence[Turn], max_tokens: int,
              n_ctx: int) -> PreparedPrompt:
    """The newest turns (from a user turn on) whose estimate fits beside the reply."""
    system = [Turn("system", system_prompt)] if system_prompt else []
    sizes = [estimate_tokens(t.content) + TOKENS_PER_TURN for t in history]
    fixed = TOKENS_PER_PROMPT + sum(estimate_tokens(t.content) + TOKENS_PER_TURN
                                    for t in system)
    starts = [0] + [i for i, turn in enumerate(history) if i > 0 and turn.role == "user"]
    chosen = starts[-1]  # the newest start stays even when it does not fit
    for start in starts:
        if fixed + sum(sizes[start:]) + max_tokens <= n_ctx:
            chosen = start
            break
    count = fixed + sum(sizes[chosen:])
    budget = min(max_tokens, n_ctx - count)
    if budget < min(MIN_REPLY_TOKENS, max_tokens):
        raise ContextTooLong(
            f"The message needs about {count} tokens, but the model's context holds "
            f"{n_ctx} including the reply. Shorten the message or the system prompt.")
    return PreparedPrompt(tokens=[0] * count, dropped_turns=chosen, max_tokens=budget,
                          turns=tuple(system + list(history[chosen:])))


def context_of(entry: dict[str, Any]) -> int | None:
    """The context length a /v1/models entry reports, if any (servers name it differently)."""
    meta = entry.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    for value in (entry.get("max_model_len"), entry.get("context_length"), entry.get("n_ctx"),
                  meta.get("n_ctx"), meta.get("n_ctx_train")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass
class Endpoint:
    base: str
    running: int = 0
    served: int = 0  # replies it took (whatever their end)
    refused_at: float = -math.inf  # when a connection to it last failed


class Lost(Exception):
    """The stream ended before its finish reason: the server went away mid-reply."""


class RemoteEngine:
    """A JobEngine over one or more OpenAI-compatible servers."""

    def __init__(self, urls: Sequence[str], api_key: str = "", parallel: int = 4,
                 model: str = "", n_ctx: int = 4096) -> None:
        if not urls:
            raise ValueError("a remote engine needs at least one URL")
        self.endpoints = [Endpoint(url) for url in urls]
        self.n_parallel = parallel * len(self.endpoints)
        self._parallel = parallel
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._model, self._default_ctx = model, n_ctx
        self._probed_at = -math.inf
        self.info = ModelInfo(id=model or "remote", path="", size_bytes=0, n_ctx=n_ctx,
                              prompt_template=REMOTE_PROMPT_TEMPLATE)
        self.probe()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._live: dict[int, tuple[Job, concurrent.futures.Future[None]]] = {}
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_SECONDS), headers=self._headers)
        self._thread = threading.Thread(target=self._loop.run_forever, name="remote-engine",
                                        daemon=True)
        self._thread.start()

    @property
    def busy(self) -> int:
        return sum(e.running for e in self.endpoints)

    # -- the model: what the servers say they serve ------------------------------------

    def probe(self) -> bool:
        """Read the model id and context from the servers' /v1/models; True if one answered.

        A server that does not answer leaves the configured id and N_CTX in place; the
        probe is repeated at the next reply's preparation, so a late server is picked up."""
        self._probed_at = time.monotonic()
        contexts: list[int] = []
        model_id: str | None = None
        for endpoint in self.endpoints:
            try:
                response = httpx.get(f"{endpoint.base}/v1/models", headers=self._headers,
                                     timeout=PROBE_SECONDS)
                response.raise_for_status()
                entries = [e for e in response.json().get("data", []) if isinstance(e, dict)]
            except (httpx.HTTPError, ValueError, AttributeError) as error:
                log.warning("inference server %s: /v1/models failed: %r", endpoint.base, error)
                continue
            entry = next((e for e in entries if e.get("id") == self._model), None)
            if entry is None and not self._model and entries:
                entry = entries[0]
            if entry is None:
                log.warning("inference server %s does not list model %r", endpoint.base,
                            self._model)
                continue
            model_id = model_id or str(entry.get("id"))
            contexts.append(context_of(entry) or self._default_ctx)
        if model_id is None:
            return False
        self.info = ModelInfo(id=model_id, path="", size_bytes=0, n_ctx=min(contexts),
                              prompt_template=REMOTE_PROMPT_TEMPLATE)
        self._probed_at = math.inf  # answered: no need to ask again
        log.info("remote model %s, context %d tokens", model_id, self.info.n_ctx)
        return True

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int
                ) -> PreparedPrompt:
        if time.monotonic() - self._probed_at > PROBE_RETRY_SECONDS:
            self.probe()
        return fit_turns(system_prompt, history, max_tokens, self.info.n_ctx)

    def stream(self, prompt: PreparedPrompt, params: SamplingParams
               ) -> Iterator[Token | Finished]:
        return stream_job(self, prompt, params)

    # -- jobs ----------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: EventSink) -> Job:
        job_id = next(self._ids)
        job = Job(job_id, request, sink, wake=lambda: self._cancel(job_id))
        with self._lock:
            if self._closing:
                _end(job, Done("interrupted"))
                return job
            future = asyncio.run_coroutine_threadsafe(self._run(job), self._loop)
            self._live[job_id] = (job, future)
        return job

    def _cancel(self, job_id: int) -> None:
        with self._lock:
            live = self._live.get(job_id)
        if live is not None:
            live[1].cancel()  # cancels the task in the loop, closing its connection

    def close(self) -> None:
        """Running replies end as interrupted; then the loop and its connections stop."""
        with self._lock:
            self._closing = True
            live = list(self._live.values())
        for _job, future in live:
            future.cancel()
        for job, _future in live:
            job.done.wait(CLOSE_SECONDS)
        if self._loop.is_running():
            closing = asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop)
            closing.result(CLOSE_SECONDS)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_SECONDS)

    def _choose(self, tried: set[int]) -> int | None:
        """The least busy server not tried yet (one that just refused comes last)."""
        now = time.monotonic()
        candidates = [i for i in range(len(self.endpoints)) if i not in tried]
        if not candidates:
            return None
        return min(candidates, key=lambda i: (
            self.endpoints[i].running >= self._parallel,
            now - self.endpoints[i].refused_at < SHUN_SECONDS,
            self.endpoints[i].running))

    async def _run(self, job: Job) -> None:
        outcome = job.expired(time.monotonic())
        if outcome is not None:
            _end(job, outcome)
            return
        request = job.request
        job.emit(Started(len(request.prompt), 0, "none"))
        deadlines = [job.submitted + t for t in (request.timeout, request.first_token_timeout)
                     if t is not None]
        outcome = Failed("engine_unreachable", UNREACHABLE)
        try:
            async with asyncio.timeout_at(min(deadlines, default=None)) as scope:
                tried: set[int] = set()
                while (index := self._choose(tried)) is not None:
                    tried.add(index)
                    endpoint = self.endpoints[index]
                    endpoint.running += 1
                    try:
                        outcome = await self._exchange(job, endpoint, scope)
                        endpoint.served += 1
                        break
                    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                        # Nothing was sent: the next server may take it.
                        endpoint.refused_at = time.monotonic()
                        log.warning("inference server %s unreachable: %r", endpoint.base, error)
                    finally:
                        endpoint.running -= 1
        except TimeoutError:
            outcome = job.expired(time.monotonic()) or Failed("timeout", "The reply timed out.")
        except asyncio.CancelledError:
            outcome = (Done("interrupted") if self._closing
                       else job.expired(time.monotonic()) or Done("cancelled"))
        except Exception:  # never leave a job without its end
            log.exception("remote reply %s failed", job.id)
            outcome = Failed("generation_failed", REMOTE_FAILED)
        with self._lock:
            self._live.pop(job.id, None)
        _end(job, outcome)

    async def _exchange(self, job: Job, endpoint: Endpoint,
                        scope: asyncio.Timeout) -> Done | Failed:
        """One streamed chat completion; connection failures before it starts propagate."""
        request, params = job.request, job.request.params
        body: dict[str, Any] = {
            "model": self.info.id,
            "messages": [{"role": t.role, "content": t.content} for t in request.turns],
            "stream": True, "stream_options": {"include_usage": True},
            "temperature": params.temperature, "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        url = f"{endpoint.base}/v1/chat/completions"
        try:
            async with self._client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    return await _refused(endpoint, response)
                return await self._read(job, response, scope)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except (httpx.HTTPError, Lost) as error:
            log.warning("inference server %s: reply %s lost: %r", endpoint.base, job.id, error)
            return Failed("engine_lost", LOST)
        except ValueError as error:  # a chunk that is not JSON
            log.warning("inference server %s: unreadable stream: %r", endpoint.base, error)
            return Failed("generation_failed", REMOTE_FAILED)

    async def _read(self, job: Job, response: httpx.Response,
                    scope: asyncio.Timeout) -> Done | Failed:
        text = TextStream(job.request.params.stop)  # in case a server ignores `stop`
        finish: str | None = None
        counted = 0
        usage: int | None = None
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # comments, event names, blank separators
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                return _stream_error(chunk["error"])
            if isinstance(chunk.get("usage"), dict):
                tokens = chunk["usage"].get("completion_tokens")
                usage = tokens if isinstance(tokens, int) else usage
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str) and content:
                    if job.stats.first_token_seconds is None:
                        job.stats.first_token_seconds = time.monotonic() - job.submitted
                        if job.request.timeout is not None:  # the first-token limit is met
                            scope.reschedule(job.submitted + job.request.timeout)
                        else:
                            scope.reschedule(None)
                    counted += 1
                    job.stats.generated_tokens += 1
                    job.emit(Text(text.push(content.encode("utf-8")), 1))
                    if text.stopped:
                        return Done("stop")
                if choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
            if job.cancelled:
                return Done("cancelled")
        else:
            if finish is None:
                raise Lost("the stream ended without a finish reason or [DONE]")
        rest = text.flush()
        if usage is not None and usage > counted:  # a chunk may carry several tokens
            job.stats.generated_tokens += usage - counted
            job.emit(Text(rest, usage - counted))
        elif rest:
            job.emit(Text(rest, 0))
        return Done("length" if finish == "length" else "stop")


async def _refused(endpoint: Endpoint, response: httpx.Response) -> Failed:
    """A non-200 answer: busy (429, 503), context too long, or anything else refused."""
    raw = (await response.aread())[:ERROR_BODY_BYTES]
    log.warning("inference server %s answered %d: %s", endpoint.base, response.status_code,
                raw.decode("utf-8", errors="replace"))
    if response.status_code in (429, 503):
        return Failed("engine_busy", BUSY)
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and _too_long(error):
        return Failed("context_too_long", TOO_LONG)
    if response.status_code >= 500:
        return Failed("generation_failed", REMOTE_FAILED)
    return Failed("engine_refused", REFUSED)


def _too_long(error: dict[str, Any]) -> bool:
    """Servers say so in their error's code or type (LocalChat, llama-server)."""
    return (error.get("code") in ("context_too_long", "context_length_exceeded")
            or error.get("type") == "exceed_context_size_error")


def _stream_error(error: Any) -> Failed:
    log.warning("inference server reported an error mid-stream: %r", error)
    if isinstance(error, dict) and _too_long(error):
        return Failed("context_too_long", TOO_LONG)
    return Failed("generation_failed", REMOTE_FAILED)


def _end(job: Job, outcome: Done | Failed) -> None:
    job.outcome = outcome
    job.emit(outcome)
    job.done.set()
