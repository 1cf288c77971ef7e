"""Queueing and stopping replies: the steps shared by the API and the pages."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from uuid import UUID

from app.errors import ApiError, not_found
from app.inference.actor import ModelNotLoaded, QueueFull
from app.services import Services
from domain.errors import DomainError, NotFound, NothingToRegenerate
from projections import messages as messages_read

QueueCommand = Callable[[int], tuple[UUID, UUID, int]]


async def queue_reply(
    services: Services, session_id: UUID, record: QueueCommand
) -> dict[str, Any]:
    """Record a queued reply with `record(queue_position)`, hand it to the actor.

    Returns the API's 202 body: {message, reply, last_event_id}.
    """
    try:
        position_in_queue = services.actor.next_position()
    except ModelNotLoaded as error:
        raise ApiError(503, "model_not_loaded", str(error), {"Retry-After": "30"}) from None
    except QueueFull as error:
        raise ApiError(503, "queue_full", f"The reply queue is full: {error}",
                       {"Retry-After": "10"}) from None
    try:
        message_id, reply_id, position = await services.command(record, position_in_queue)
    except NotFound:
        raise not_found("session") from None
    except NothingToRegenerate as error:
        raise ApiError(409, "nothing_to_regenerate", str(error)) from None
    services.actor.enqueue(session_id, reply_id)
    await services.settle(position)
    message = await messages_read.get_message(services.read_db, str(message_id))
    reply = await messages_read.get_message(services.read_db, str(reply_id))
    assert message is not None and reply is not None
    # The actor may have started already; answer with the reply as it was queued.
    reply.update(status="queued", content="", token_count=0, processing_time=None,
                 metadata={}, queue_position=position_in_queue)
    # The reply's queued event is the last one recorded; a stream resumed from just before
    # it sees the `queued` event and then every token.
    return {"message": message, "reply": reply, "last_event_id": position - 1}


async def stop_replies(services: Services, session_id: UUID) -> None:
    """Cancel the session's queued replies and signal its running one to stop."""
    withdrawn, _signalled = services.actor.withdraw(session_id)
    for reply_id in withdrawn:
        with contextlib.suppress(DomainError):
            await services.command(services.chat.change_reply, session_id,
                                   lambda s, rid=reply_id: s.cancel_reply(rid))
