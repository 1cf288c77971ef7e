"""LocalChat's own session document (`localchat.session`, version 1): the schema an
export is written in and an import is checked against."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.usecases.errors import InvalidInput
from app.usecases.import_formats.common import (
    Draft,
    ImportedChat,
    Limits,
    check_chat,
    invalid,
    iso_time,
    join,
)

FORMAT = "localchat.session"
VERSION = 1
# FINISHED and OPEN of common.py: an open reply is imported as interrupted.
STATUSES = Literal["complete", "failed", "cancelled", "interrupted", "queued", "streaming"]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Message(Strict):
    role: Literal["user", "assistant"]
    content: str
    timestamp: str
    status: STATUSES = "complete"
    token_count: int | None = Field(default=None, ge=0)
    processing_time: float | None = Field(default=None, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Session(Strict):
    title: str
    created_at: str | None = None
    updated_at: str | None = None


class Config(Strict):
    # Checked against this server's limits and model by the use case.
    system_prompt: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    model: str | None = None


class Document(Strict):
    format: Literal["localchat.session"]
    version: int
    exported_at: str | None = None
    session: Session
    config: Config = Field(default_factory=Config)
    messages: list[Message]


def is_ours(document: Any) -> bool:
    return isinstance(document, dict) and "format" in document


def parse(document: dict[str, Any], limits: Limits) -> ImportedChat:
    version = document.get("version")
    if document.get("format") == FORMAT and version != VERSION:
        raise InvalidInput("version", f"must be {VERSION} (this server reads version"
                           f" {VERSION} documents; got {version!r}).")
    messages = document.get("messages")
    if isinstance(messages, list) and len(messages) > limits.messages:
        # Before the item checks, so a huge list is refused without reading it all.
        raise InvalidInput("messages", f"holds {len(messages)} messages; at most"
                           f" {limits.messages} can be imported per chat.")
    try:
        parsed = Document.model_validate(document)
    except ValidationError as error:
        raise invalid(error) from None
    drafts = []
    for index, m in enumerate(parsed.messages):
        path = join("messages", index)
        drafts.append(Draft(
            path=path, role=m.role, content=m.content,
            timestamp=iso_time(join(path, "timestamp"), m.timestamp), status=m.status,
            token_count=m.token_count, processing_time=m.processing_time,
            metadata=m.metadata,
        ))
    chat = ImportedChat(
        source="localchat", path="", title=parsed.session.title,
        config=parsed.config.model_dump(exclude_none=True), messages=drafts,
    )
    # The title's path in this document is session.title.
    try:
        return check_chat(chat, limits)
    except InvalidInput as error:
        if error.field == "title":
            raise InvalidInput("session.title", error.problem) from None
        raise
