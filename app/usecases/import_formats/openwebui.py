"""Open WebUI's chat export (Settings → Chats → Export, or a chat's Download → JSON): a
list of {id, title, chat: {title, messages: [...], history: {messages: {id: message},
currentId}}, created_at, updated_at}. Messages form a tree by `parentId`; the branch shown
runs from `history.currentId` back to the root. Older exports carry only the flat
`chat.messages` list. Times are seconds since 1970."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.usecases.errors import N_, InvalidInput
from app.usecases.errors import Message as Problem
from app.usecases.import_formats.common import (
    ROLES,
    Draft,
    ImportedChat,
    Limits,
    check_chat,
    epoch_time,
    invalid,
    join,
)
from domain.sessions import DEFAULT_TITLE, auto_title


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Message(Loose):
    id: str | None = None
    parentId: str | None = None  # the format's own names
    role: str
    content: str = ""
    timestamp: float | None = None
    model: str | None = None


class History(Loose):
    messages: dict[str, Message] = Field(default_factory=dict)
    currentId: str | None = None


class Chat(Loose):
    title: str | None = None
    messages: list[Message] = Field(default_factory=list)
    history: History | None = None
    timestamp: float | None = None


class Entry(Loose):
    title: str | None = None
    chat: Chat
    created_at: float | None = None


def is_openwebui(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("chat"), dict)


def _branch(chat: Chat, path: str) -> list[tuple[str, Message]]:
    """(path, message) from the root to the displayed message."""
    history = chat.history
    if history is None or history.currentId is None or not history.messages:
        base = join(join(path, "chat"), "messages")
        return [(join(base, index), m) for index, m in enumerate(chat.messages)]
    base = join(join(join(path, "chat"), "history"), "messages")
    found: list[tuple[str, Message]] = []
    seen: set[str] = set()
    current: str | None = history.currentId
    while current is not None:
        if current not in history.messages:
            raise InvalidInput(base, Problem(N_("has no message %(id)s."),
                                             {"id": repr(current)}))
        if current in seen:
            raise InvalidInput(base, N_("its parentId links form a loop."))
        seen.add(current)
        message = history.messages[current]
        found.append((join(base, current), message))
        current = message.parentId
    found.reverse()
    return found


def parse_one(item: Any, path: str, limits: Limits) -> ImportedChat:
    try:
        entry = Entry.model_validate(item)
    except ValidationError as error:
        raise invalid(error, path) from None
    fallback = entry.chat.timestamp or entry.created_at
    drafts: list[Draft] = []
    for message_path, message in _branch(entry.chat, path):
        if message.role not in ROLES or not message.content.strip():
            continue
        moment = message.timestamp if message.timestamp is not None else fallback
        fallback = moment
        drafts.append(Draft(
            path=message_path, role=message.role, content=message.content,
            timestamp=epoch_time(join(message_path, "timestamp"), moment or 0.0),
            metadata={"model": message.model} if message.model else {},
        ))
    first_user = next((d.content for d in drafts if d.role == "user"), "")
    title = entry.title or entry.chat.title or auto_title(first_user) or DEFAULT_TITLE
    chat = ImportedChat(source="openwebui", path=path, title=title, config={}, messages=drafts)
    return check_chat(chat, limits)
