"""ChatGPT's `conversations.json` (Settings → Data controls → Export data): a list of
conversations, each a `mapping` of nodes {id, message, parent, children} forming a tree
(every edit or regeneration is a branch). The branch the user last saw runs from
`current_node` back to the root; that is the one imported. Hidden system messages, tool
calls and non-text content are left out."""

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

TEXT_TYPES = ("text", "multimodal_text")


class Loose(BaseModel):
    # Only what is read is checked; the format has many more fields, and grows.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class Author(Loose):
    role: str


class Content(Loose):
    content_type: str = "text"
    parts: list[Any] = Field(default_factory=list)


class Message(Loose):
    author: Author
    content: Content | None = None
    create_time: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Node(Loose):
    message: Message | None = None
    parent: str | None = None
    children: list[str] = Field(default_factory=list)


class Conversation(Loose):
    title: str | None = None
    create_time: float | None = None
    mapping: dict[str, Node]
    current_node: str | None = None


def is_chatgpt(item: Any) -> bool:
    return isinstance(item, dict) and "mapping" in item


def _branch(conversation: Conversation, path: str) -> list[str]:
    """Node ids from the root to the displayed leaf."""
    mapping = conversation.mapping
    leaf = conversation.current_node
    if leaf is None:  # older exports: follow the newest child from the root
        roots = [key for key, node in mapping.items() if node.parent is None]
        leaf = roots[0] if roots else None
        while leaf is not None and mapping[leaf].children:
            leaf = mapping[leaf].children[-1]
            if leaf not in mapping:
                raise InvalidInput(join(path, "mapping"), Problem(N_("has no node %(id)s."),
                                                                  {"id": repr(leaf)}))
    ids: list[str] = []
    seen: set[str] = set()
    while leaf is not None:
        if leaf not in mapping:
            raise InvalidInput(join(path, "mapping"), Problem(N_("has no node %(id)s."),
                                                              {"id": repr(leaf)}))
        if leaf in seen:
            raise InvalidInput(join(path, "mapping"), N_("its parent links form a loop."))
        seen.add(leaf)
        ids.append(leaf)
        leaf = mapping[leaf].parent
    ids.reverse()
    return ids


def _text(message: Message) -> str:
    content = message.content
    if content is None or content.content_type not in TEXT_TYPES:
        return ""
    return "\n".join(part for part in content.parts if isinstance(part, str))


def parse_one(item: Any, path: str, limits: Limits) -> ImportedChat:
    try:
        conversation = Conversation.model_validate(item)
    except ValidationError as error:
        raise invalid(error, path) from None
    fallback = conversation.create_time
    drafts: list[Draft] = []
    for node_id in _branch(conversation, path):
        message = conversation.mapping[node_id].message
        node_path = join(join(path, "mapping"), node_id)
        if message is None or message.author.role not in ROLES:
            continue
        if message.metadata.get("is_visually_hidden_from_conversation"):
            continue
        content = _text(message)
        if not content.strip():
            continue
        moment = message.create_time if message.create_time is not None else fallback
        timestamp = epoch_time(join(node_path, "message.create_time"), moment or 0.0)
        fallback = moment
        slug = message.metadata.get("model_slug")
        drafts.append(Draft(
            path=join(node_path, "message"), role=message.author.role, content=content,
            timestamp=timestamp, metadata={"model": slug} if isinstance(slug, str) else {},
        ))
    first_user = next((d.content for d in drafts if d.role == "user"), "")
    title = conversation.title or auto_title(first_user) or DEFAULT_TITLE
    chat = ImportedChat(source="chatgpt", path=path, title=title, config={}, messages=drafts)
    return check_chat(chat, limits)
