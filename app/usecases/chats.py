"""Chat sessions and their messages: the use cases behind the JSON API and the pages.

Functions take plain values (ids as the caller gave them, field values as parsed from a
body or a form) and raise the typed errors of app.usecases.errors; nothing here knows HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.inference.actor import ModelNotLoaded, QueueFull, TooManyQueued
from app.services import Services
from app.usecases import fields
from app.usecases.errors import (
    N_,
    Conflict,
    InvalidInput,
    Message,
    NotFound,
    RateLimited,
    Unavailable,
)
from domain import errors as domain_errors
from projections import messages as messages_read
from projections import sessions as sessions_read

CONFIG_KEYS = ("system_prompt", "temperature", "max_tokens", "top_p", "model")
SEARCH_CHARS = 500
MODEL_RETRY_SECONDS = 30
QUEUE_RETRY_SECONDS = 10

# Records a queued reply given its queue position: (message_id, reply_id, log position).
QueueCommand = Callable[[int], tuple[UUID, UUID, int]]


@dataclass(frozen=True)
class Conversation:
    """A session as one consistent snapshot: its messages reflect exactly the events up to
    `position`, so a live stream resumed from there neither misses nor repeats anything."""

    session: dict[str, Any]
    messages: list[dict[str, Any]]
    position: int


# -- settings --------------------------------------------------------------------------------


def default_config(services: Services) -> dict[str, Any]:
    s = services.settings
    return {
        "system_prompt": s.default_system_prompt, "temperature": s.default_temperature,
        "top_p": s.default_top_p, "max_tokens": s.default_max_tokens, "model": services.model_id,
    }


def max_tokens_limit(services: Services) -> int:
    s = services.settings
    n_ctx = services.actor.engine.info.n_ctx if services.actor.engine else s.n_ctx
    return min(s.max_tokens_limit, n_ctx - 1)


def session_fields(
    services: Services, values: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """(title, config changes) from create or update values; absent fields are left out."""
    s = services.settings
    title = fields.text(values, "title", max_len=s.max_title_chars, strip=True)
    config: dict[str, Any] = {
        "system_prompt": fields.text(values, "system_prompt", max_len=s.max_system_prompt_chars),
        "temperature": fields.number(values, "temperature", low=0, high=2),
        "top_p": fields.number(values, "top_p", low=0, high=1),
        "max_tokens": fields.integer(values, "max_tokens", low=1, high=max_tokens_limit(services)),
        "model": fields.text(values, "model", max_len=200),
    }
    if config["model"] is not None and services.models.find(config["model"]) is None:
        available = ", ".join(m.id for m in services.models.models())
        raise InvalidInput("model", Message(N_("unknown model; available: %(models)s."),
                                            {"models": available}))
    return title, {k: value for k, value in config.items() if value is not None}


# -- sessions --------------------------------------------------------------------------------


def session_uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("session") from None


async def owned_session(services: Services, user_id: str, session_id: str) -> dict[str, Any]:
    """The user's session, else NotFound (also for someone else's or a deleted one)."""
    uuid = session_uuid(session_id)
    session = await sessions_read.get_session(services.read_db, user_id, str(uuid))
    if session is None:
        raise NotFound("session")
    return session


async def list_sessions(services: Services, user_id: str, q: str = "",
                        limit: int = 50) -> list[dict[str, Any]]:
    q = q.strip()
    if len(q) > SEARCH_CHARS:
        raise InvalidInput("q", fields.at_most(SEARCH_CHARS))
    return await sessions_read.list_sessions(services.read_db, user_id, q, limit)


async def start_session(services: Services, user_id: str,
                        values: Mapping[str, Any]) -> dict[str, Any]:
    title, config = session_fields(services, values)
    session_id, position = await services.command(
        services.chat.start_session, UUID(user_id), title or "",
        {**default_config(services), **config},
    )
    await services.settle(position)
    return await owned_session(services, user_id, str(session_id))


async def update_session(services: Services, user_id: str, session_id: str,
                         values: Mapping[str, Any]) -> dict[str, Any]:
    session = await owned_session(services, user_id, session_id)
    title, config = session_fields(services, values)
    if title is not None and not title:
        raise InvalidInput("title", N_("must not be empty."))
    try:
        position = await services.command(services.chat.update_session, UUID(session["id"]),
                                          UUID(user_id), title, config)
    except domain_errors.NotFound:
        raise NotFound("session") from None
    await services.settle(position)
    return await owned_session(services, user_id, session["id"])


async def rename_session(services: Services, user_id: str, session_id: str,
                         title: Any) -> dict[str, Any]:
    checked = fields.required_text({"title": title}, "title",
                                   max_len=services.settings.max_title_chars,
                                   allow_blank=False, strip=True)
    return await update_session(services, user_id, session_id, {"title": checked})


async def delete_session(services: Services, user_id: str, session_id: str) -> None:
    """Stop its replies, then delete; the history stays in the event store for audit."""
    session = await owned_session(services, user_id, session_id)
    uuid = UUID(session["id"])
    await _stop_replies(services, uuid)
    try:
        position = await services.command(services.chat.delete_session, uuid, UUID(user_id))
    except domain_errors.NotFound:
        raise NotFound("session") from None
    services.actor.forget(uuid)  # its KV state, in a slot or saved on disk
    await services.settle(position)


# -- messages and replies --------------------------------------------------------------------


async def list_messages(services: Services, user_id: str,
                        session_id: str) -> list[dict[str, Any]]:
    session = await owned_session(services, user_id, session_id)
    return await messages_read.list_messages(services.read_db, session["id"])


async def conversation(services: Services, user_id: str, session_id: str,
                       limit: int | None = None) -> Conversation:
    """The session and its current branch; with `limit`, only the newest messages."""
    uuid = session_uuid(session_id)
    # Messages first: the position they reflect is where a live stream resumes.
    position, messages = await messages_read.snapshot(services.read_db, str(uuid), limit)
    session = await owned_session(services, user_id, str(uuid))
    return Conversation(session=session, messages=messages, position=position)


async def post_message(services: Services, user_id: str, session_id: str,
                       content: Any) -> dict[str, Any]:
    """Record the user's message and queue a reply: {message, reply, last_event_id}."""
    session = await owned_session(services, user_id, session_id)
    text = fields.required_text({"content": content}, "content",
                                max_len=services.settings.max_message_chars, allow_blank=False)
    uuid = UUID(session["id"])

    def record(queue_position: int) -> tuple[UUID, UUID, int]:
        return services.chat.post_message(uuid, UUID(user_id), text, queue_position)

    return await queue_reply(services, uuid, record, session["config"].get("model"),
                              owner=user_id)


async def regenerate(services: Services, user_id: str, session_id: str) -> dict[str, Any]:
    """Queue a new reply to the last user message: {message, reply, last_event_id}."""
    session = await owned_session(services, user_id, session_id)
    uuid = UUID(session["id"])

    def record(queue_position: int) -> tuple[UUID, UUID, int]:
        return services.chat.regenerate(uuid, UUID(user_id), queue_position)

    return await queue_reply(services, uuid, record, session["config"].get("model"),
                              owner=user_id)


async def cancel_reply(services: Services, user_id: str, session_id: str) -> None:
    """The running or queued reply ends as cancelled with the text produced so far."""
    session = await owned_session(services, user_id, session_id)
    await _stop_replies(services, UUID(session["id"]))


async def queue_reply(services: Services, session_id: UUID, record: QueueCommand,
                      model_id: str | None = None, owner: str | None = None) -> dict[str, Any]:
    """Record a reply with `record(queue_position)` and hand it to the actor: the 202 body
    {message, reply, last_event_id} shared by posting, regenerating and editing."""
    # The session's model answers: the server switches to it when idle (else 503). A model
    # whose file is gone falls back to the loaded one.
    model = services.models.find(model_id) if model_id else None
    async with services.switcher.using(model):
        return await _queue_reply_now(services, session_id, record, owner)


async def _queue_reply_now(services: Services, session_id: UUID, record: QueueCommand,
                           owner: str | None = None) -> dict[str, Any]:
    with held_place(services, owner) as queue_position:
        try:
            message_id, reply_id, position = await services.command(record, queue_position)
        except domain_errors.NotFound:
            raise NotFound("session") from None
        except domain_errors.NothingToRegenerate:
            # The domain's own words (the API's text), said here to be translated.
            raise Conflict("nothing_to_regenerate",
                           N_("this session has no user message to answer")) from None
        services.actor.enqueue(session_id, reply_id, position, owner)
    await services.settle(position)
    message = await messages_read.get_message(services.read_db, str(message_id))
    reply = await messages_read.get_message(services.read_db, str(reply_id))
    if message is None or reply is None:  # settled, so both rows exist
        raise LookupError(f"reply {reply_id} is missing from the read model")
    # The actor may have started already; answer with the reply as it was queued.
    reply.update(status="queued", content="", token_count=0, processing_time=None,
                 metadata={}, queue_position=queue_position)
    # The reply's queued event is the last one recorded; a stream resumed from just before
    # it sees the `queued` event and then every token.
    return {"message": message, "reply": reply, "last_event_id": position - 1}


@contextlib.contextmanager
def held_place(services: Services, owner: str | None) -> Iterator[int]:
    """A place on the reply queue, held while the reply is recorded (enqueue it inside):
    its queue position; Unavailable or RateLimited when there is no room."""
    try:
        with services.actor.place(owner) as queue_position:
            yield queue_position
    except ModelNotLoaded as error:
        raise Unavailable("model_not_loaded", str(error), MODEL_RETRY_SECONDS) from None
    except QueueFull as error:
        raise Unavailable("queue_full", Message(N_("The reply queue is full: %(n)s replies are"
                                                   " already waiting."), {"n": error.waiting}),
                          QUEUE_RETRY_SECONDS) from None
    except TooManyQueued as error:  # this user's share of the queue is used up
        raise RateLimited(Message(N_("You already have %(n)s replies waiting."),
                                  {"n": error.cap}), error.retry_after) from None


async def _stop_replies(services: Services, session_id: UUID) -> None:
    """Cancel the session's queued replies and signal its running one to stop."""
    withdrawn, _signalled = services.actor.withdraw(session_id)
    for reply_id in withdrawn:
        with contextlib.suppress(domain_errors.DomainError):
            await services.command(services.chat.change_reply, session_id,
                                   lambda s, rid=reply_id: s.cancel_reply(rid))
    if services.cluster is not None:  # several workers (PostgreSQL): the replies the
        # others generate or have queued
        await services.command(services.cluster.replies.cancel_elsewhere, session_id)
