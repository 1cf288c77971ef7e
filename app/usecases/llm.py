"""The LLM API's use cases: list models, and run one generation as a recorded chat reply.

A generation is a reply in a hidden chat session of the caller's, through the same
inference actor and the same events as any chat, so it streams, cancels, survives restarts
and is audited like one. The session's config says where it came from
(`origin: "api"`, `api: "generate" | "chat.completions"`); session lists leave such
sessions out, while their owner can still read them by id. Per-request sampling goes into
the session's config at creation: `temperature`, `top_p`, `max_tokens`, and for the engine
`seed` (int or None) and `stop` (a list of strings, possibly empty).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from app.inference.registry import ModelFile
from app.services import Services
from app.streaming import follow_session
from app.usecases import chats, fields
from app.usecases.errors import N_, InvalidInput, Message, NotFound, Unavailable
from domain.sessions import auto_title

API_ORIGIN = "api"
GENERATE, CHAT_COMPLETIONS = "generate", "chat.completions"
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 200
SEED_RANGE = (-(2**63), 2**63 - 1)
ROLES = ("system", "user", "assistant")


# -- models ------------------------------------------------------------------------------


def loaded_model_id(services: Services) -> str | None:
    return services.actor.engine.info.id if services.actor.engine else None


def list_models(services: Services) -> list[dict[str, Any]]:
    """[{id, path, size_bytes, n_ctx, loaded, default}]: n_ctx is the context a reply gets
    (the loaded engine's, else N_CTX within what the file was trained for)."""
    registry = services.models
    loaded = loaded_model_id(services)
    engine = services.actor.engine
    listed = []
    for model in registry.models():
        if engine is not None and model.id == loaded:
            n_ctx = engine.info.n_ctx
        else:
            n_ctx = min(services.settings.n_ctx, model.n_ctx_train or services.settings.n_ctx)
        listed.append({
            "id": model.id, "path": str(model.path), "size_bytes": model.size_bytes,
            "n_ctx": n_ctx, "loaded": model.id == loaded, "default": registry.is_default(model),
        })
    return listed


def find_model(services: Services, model_id: str | None) -> ModelFile | None:
    """The registry's model `model_id` (None: whichever is loaded); NotFound if unknown."""
    if model_id is None:
        return None
    model = services.models.find(model_id)
    if model is None:
        raise NotFound("model")
    return model


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One generation: the last user message answers `earlier` turns under `system_prompt`."""

    kind: str  # GENERATE or CHAT_COMPLETIONS
    prompt: str
    system_prompt: str
    sampling: Sampling
    earlier: list[tuple[str, str]] = field(default_factory=list)  # (role, content)


def _sampling(services: Services, values: Mapping[str, Any], max_tokens_field: str,
              allow_seed_stop: bool) -> Sampling:
    s = services.settings
    temperature = fields.number(values, "temperature", low=0, high=2)
    top_p = fields.number(values, "top_p", low=0, high=1)
    max_tokens = fields.integer(values, max_tokens_field, low=1,
                                high=chats.max_tokens_limit(services))
    seed: int | None = None
    stop: tuple[str, ...] = ()
    if allow_seed_stop:
        seed = fields.integer(values, "seed", low=SEED_RANGE[0], high=SEED_RANGE[1])
        stop = _stop(values.get("stop"))
    return Sampling(
        temperature=s.default_temperature if temperature is None else temperature,
        top_p=s.default_top_p if top_p is None else top_p,
        max_tokens=s.default_max_tokens if max_tokens is None else max_tokens,
        seed=seed, stop=stop,
    )


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or len(items) > MAX_STOP_STRINGS:
        raise InvalidInput("stop", Message(N_("must be a string or a list of at most %(n)s"
                                              " strings."), {"n": MAX_STOP_STRINGS}))
    checked = [fields.text({"stop": item}, "stop", max_len=MAX_STOP_CHARS) for item in items]
    return tuple(item for item in checked if item)


def generate_request(services: Services, values: Mapping[str, Any]) -> Request:
    """POST /api/llm/generate/ {prompt, max_tokens?, temperature?, top_p?}."""
    prompt = fields.required_text(values, "prompt", max_len=services.settings.max_message_chars,
                                  allow_blank=False)
    return Request(kind=GENERATE, prompt=prompt,
                   system_prompt=services.settings.default_system_prompt,
                   sampling=_sampling(services, values, "max_tokens", allow_seed_stop=False))


def chat_request(services: Services, values: Mapping[str, Any]) -> Request:
    """An OpenAI chat completion: system messages become the system prompt, the last
    message must be the user's, the turns before it are recorded as they were given."""
    s = services.settings
    n = fields.integer(values, "n", low=1, high=1)
    del n  # only one choice is ever generated
    raw = values.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("messages", "must be a non-empty list of {role, content}.")
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    for i, message in enumerate(raw):
        name = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidInput(name, "must be an object with role and content.")
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role not in ROLES:
            raise InvalidInput(f"{name}.role", Message(N_("must be one of %(choices)s."),
                                                       {"choices": ", ".join(ROLES)}))
        content = _content(message.get("content"), f"{name}.content", s.max_message_chars)
        if role == "system":
            system.append(content)
        else:
            turns.append((role, content))
    if not turns or turns[-1][0] != "user":
        raise InvalidInput("messages", "the last message must be the user's.")
    system_prompt = "\n\n".join(system) if system else s.default_system_prompt
    if len(system_prompt) > s.max_system_prompt_chars:
        raise InvalidInput("messages", Message(N_("the system prompt must be at most %(n)s"
                                                  " characters."),
                                               {"n": s.max_system_prompt_chars}))
    max_field = "max_completion_tokens" if values.get("max_tokens") is None else "max_tokens"
    return Request(kind=CHAT_COMPLETIONS, prompt=turns[-1][1], system_prompt=system_prompt,
                   sampling=_sampling(services, values, max_field, allow_seed_stop=True),
                   earlier=turns[:-1])


def _content(raw: Any, name: str, max_len: int) -> str:
    """A message's text: a string, or OpenAI's list of {type: "text", text} parts."""
    if isinstance(raw, list):
        parts = []
        for part in raw:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidInput(name, "only text parts are supported.")
            parts.append(fields.required_text(part, "text", max_len=max_len))
        raw = "".join(parts)
    return fields.required_text({name: raw}, name, max_len=max_len)


# -- running one -------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    session_id: UUID
    reply_id: UUID
    after: int  # the log position just before the reply was queued
    model: str
    created: int  # unix seconds


def session_config(services: Services, request: Request, model: str) -> dict[str, Any]:
    sampling = request.sampling
    return {
        **chats.default_config(services),
        "system_prompt": request.system_prompt, "temperature": sampling.temperature,
        "top_p": sampling.top_p, "max_tokens": sampling.max_tokens, "model": model,
        "seed": sampling.seed, "stop": list(sampling.stop),
        "origin": API_ORIGIN, "api": request.kind,
    }


def _imported(earlier: list[tuple[str, str]]) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [{"role": role, "content": content, "timestamp": now, "status": "complete",
             "token_count": None, "processing_time": None,
             "metadata": {"provided_by": "client"} if role == "assistant" else {}}
            for role, content in earlier]


async def start(services: Services, user_id: str, request: Request,
                model: ModelFile | None = None) -> Queued:
    """Record the hidden session, the prompt and a queued reply; hand it to the actor.

    With `model`, that model answers: the server switches to it when idle (else 503)."""
    async with services.switcher.using(model):
        return await _start(services, user_id, request)


async def _start(services: Services, user_id: str, request: Request) -> Queued:
    with chats.held_place(services, user_id) as queue_position:
        return await _record(services, user_id, request, queue_position)


async def _record(services: Services, user_id: str, request: Request,
                  queue_position: int) -> Queued:
    model = loaded_model_id(services) or services.model_id
    config = session_config(services, request, model)
    owner = UUID(user_id)
    if request.earlier:
        # Earlier turns are recorded as given (MessageImported, source "api"), not generated.
        first_user = next((c for r, c in request.earlier if r == "user"), request.prompt)
        session_id, _ = await services.command(
            services.chat.import_session, owner, auto_title(first_user), config,
            _imported(request.earlier), API_ORIGIN)
    else:
        session_id, _ = await services.command(services.chat.start_session, owner, "", config)
    _message_id, reply_id, position = await services.command(
        services.chat.post_message, session_id, owner, request.prompt, queue_position)
    services.actor.enqueue(session_id, reply_id, position, user_id)
    await services.settle(position)  # the session is readable (and cancellable) by id
    return Queued(session_id=session_id, reply_id=reply_id, after=position - 1, model=model,
                  created=int(time.time()))


# What the caller sees of a running generation, in order: Begin, Piece..., then one End.
@dataclass(frozen=True)
class Begin:
    position: int
    prompt_tokens: int


@dataclass(frozen=True)
class Piece:
    position: int
    index: int
    text: str
    token_count: int


@dataclass(frozen=True)
class End:
    position: int
    outcome: str  # "completed", "failed", "cancelled", "interrupted"
    content: str
    token_count: int
    processing_time: float | None
    finish_reason: str  # "stop", "length", "cancelled", "error"
    error_code: str | None = None
    error_message: str | None = None


Progress = Begin | Piece | End


async def follow(services: Services, queued: Queued) -> AsyncIterator[Progress]:
    """The reply's life from the committed log, ending with its End."""
    content: list[str] = []
    tokens = 0
    async for logged in follow_session(services, queued.session_id, queued.after):
        e: Any = logged.event
        if getattr(e, "reply_id", None) != queued.reply_id:
            continue
        kind = type(e).__qualname__.rpartition(".")[2]
        if kind == "ReplyStarted":
            yield Begin(logged.position, e.prompt_tokens)
        elif kind == "TokensGenerated":
            content.append(e.text)
            tokens += e.token_count
            yield Piece(logged.position, e.index, e.text, e.token_count)
        elif kind == "ReplyCompleted":
            yield End(logged.position, "completed", e.content, e.token_count,
                      e.processing_time, e.finish_reason)
            return
        elif kind == "ReplyFailed":
            yield End(logged.position, "failed", "".join(content), tokens, None, "error",
                      e.code, e.message)
            return
        elif kind in ("ReplyCancelled", "ReplyInterrupted"):
            outcome = "cancelled" if kind == "ReplyCancelled" else "interrupted"
            yield End(logged.position, outcome, e.content, tokens, None, "cancelled",
                      outcome, "The reply was stopped before it ended.")
            return


async def cancel(services: Services, user_id: str, queued: Queued) -> None:
    """Stop the generation (a client that went away, or a stop string the engine missed)."""
    with contextlib.suppress(NotFound):  # deleted meanwhile: its replies are stopped
        await chats.cancel_reply(services, user_id, str(queued.session_id))


@dataclass
class Result:
    text: str
    token_count: int
    prompt_tokens: int
    processing_time: float | None
    finish_reason: str
    model: str


async def run(services: Services, user_id: str, queued: Queued,
              stop: tuple[str, ...] = ()) -> Result:
    """Wait for the whole reply. A failed one raises Unavailable (or InvalidInput when the
    prompt does not fit the context)."""
    prompt_tokens = 0
    cutter = StopCutter(stop)
    async for step in follow(services, queued):
        if isinstance(step, Begin):
            prompt_tokens = step.prompt_tokens
        elif isinstance(step, Piece):
            cutter.push(step.text)
            if cutter.stopped:
                await cancel(services, user_id, queued)
        else:
            raise_if_failed(step)
            text = cutter.cut(step.content)
            reason = "stop" if cutter.found_in(step.content) else step.finish_reason
            return Result(text=text, token_count=step.token_count, prompt_tokens=prompt_tokens,
                          processing_time=step.processing_time,
                          finish_reason="stop" if reason == "cancelled" and stop else reason,
                          model=queued.model)
    raise AssertionError("the session's log ended without the reply's end")


def raise_if_failed(end: End) -> None:
    if end.outcome == "failed":
        if end.error_code == "context_too_long":
            raise InvalidInput("messages", end.error_message or "too long for the context.",
                               code="context_too_long")
        raise Unavailable(end.error_code or "generation_failed",
                          end.error_message or "The generation failed.",
                          chats.QUEUE_RETRY_SECONDS)
    if end.outcome == "interrupted":
        raise Unavailable("interrupted", N_("The server stopped while generating."),
                          chats.QUEUE_RETRY_SECONDS)


class StopCutter:
    """Stop strings enforced on the text a client receives, in case the engine does not
    honour the session's `stop` key: releases text only once no stop string can start in
    it, and reports when one appeared."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._text = ""
        self._released = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        """Text now safe to send."""
        if self.stopped:
            return ""
        self._text += piece
        if not self._stop:
            out, self._released = self._text[self._released:], len(self._text)
            return out
        cut = self._first_stop(self._text)
        if cut is not None:
            self.stopped = True
            out = self._text[self._released:cut]
            self._released = cut
            return out
        hold = max((_overlap(self._text, s) for s in self._stop), default=0)
        end = len(self._text) - hold
        out = self._text[self._released:end] if end > self._released else ""
        self._released = max(self._released, end)
        return out

    def rest(self) -> str:
        """At the end of a reply no stop string ended: what was held back."""
        if self.stopped:
            return ""
        out, self._released = self._text[self._released:], len(self._text)
        return out

    def _first_stop(self, text: str) -> int | None:
        found = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def cut(self, text: str) -> str:
        index = self._first_stop(text) if self._stop else None
        return text if index is None else text[:index]

    def found_in(self, text: str) -> bool:
        return bool(self._stop) and self._first_stop(text) is not None


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that begins `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
