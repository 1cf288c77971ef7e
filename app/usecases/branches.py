"""Editing a sent message: a new version starts a branch with a fresh reply; the earlier
versions, and what followed them, stay in the log and can be viewed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.services import Services
from app.usecases import chats, fields
from app.usecases.errors import N_, InvalidInput, NotFound
from projections import messages as messages_read


@dataclass(frozen=True)
class Version:
    """Where a user message stands among the versions of its first version."""

    number: int  # 1-based
    total: int
    previous: str | None
    next: str | None


async def _own_message(services: Services, user_id: str, session_id: str,
                       message_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(session, message) when the message is in the user's session, else NotFound."""
    session = await chats.owned_session(services, user_id, session_id)
    try:
        key = str(UUID(message_id))
    except ValueError:
        raise NotFound("message") from None
    row = await messages_read.branch_row(services.read_db, key)
    if row is None or row["session_id"] != session["id"]:
        raise NotFound("message")
    return session, row


async def edit_message(services: Services, user_id: str, session_id: str, message_id: str,
                       content: Any) -> dict[str, Any]:
    """Record the new version and queue a reply to it: {message, reply, last_event_id}.
    A reply still being written in the session is stopped first (it answers the old one)."""
    session, row = await _own_message(services, user_id, session_id, message_id)
    if row["role"] != "user":
        raise InvalidInput("message_id",
                           N_("is a reply; only your own messages can be edited."))
    text = fields.required_text({"content": content}, "content",
                                max_len=services.settings.max_message_chars, allow_blank=False)
    await chats.cancel_reply(services, user_id, session["id"])
    uuid = UUID(session["id"])

    def record(queue_position: int) -> tuple[UUID, UUID, int]:
        return services.chat.edit_message(uuid, UUID(user_id), UUID(row["id"]), text,
                                          queue_position)

    # The same queueing as posting (chats keeps it private; one place decides the order).
    return await chats.queue_reply(services, uuid, record, owner=user_id)


async def version_map(services: Services, session_id: str) -> dict[str, Version]:
    """{message id: Version} for every version of the session's edited messages."""
    result: dict[str, Version] = {}
    for ids in (await messages_read.versions(services.read_db, session_id)).values():
        for i, message_id in enumerate(ids):
            result[message_id] = Version(
                i + 1, len(ids), ids[i - 1] if i else None,
                ids[i + 1] if i + 1 < len(ids) else None)
    return result


async def conversation_through(services: Services, user_id: str, session_id: str,
                               message_id: str) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                         bool]:
    """(session, messages, is_current): the conversation through one version of a user
    message; is_current when that is the session's current branch."""
    session, row = await _own_message(services, user_id, session_id, message_id)
    if row["role"] != "user":
        raise NotFound("message")
    messages = await messages_read.path_through(services.read_db, session["id"], row["id"])
    return session, messages, bool(row["on_branch"])


async def versions_of(services: Services, user_id: str, session_id: str,
                      message_id: str) -> list[dict[str, Any]]:
    """Every version of a user message, oldest first: {id, content, timestamp, current}."""
    session, row = await _own_message(services, user_id, session_id, message_id)
    if row["role"] != "user":
        raise NotFound("message")
    root = row["version_of"] or row["id"]
    ids = (await messages_read.versions(services.read_db, session["id"])).get(root, [root])
    found = []
    for version_id in ids:
        message = await messages_read.get_message(services.read_db, version_id)
        branch = await messages_read.branch_row(services.read_db, version_id)
        if message and branch:
            found.append({"id": version_id, "content": message["content"],
                          "timestamp": message["timestamp"],
                          "current": bool(branch["on_branch"])})
    return found
