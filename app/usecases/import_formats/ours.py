"""LocalChat's own session document (`localchat.session`): the schema an export is
written in and an import is checked against. Version 2 (written now) carries every
message of every branch with its place (`id`, `parent`, `version_of`, `on_branch`);
version 1 (the current branch only) is still read as before."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.usecases.errors import N_, InvalidInput
from app.usecases.errors import Message as Problem
from app.usecases.import_formats.branches import Place, resolve
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
VERSION = 2
READS = (1, 2)
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


class BranchedMessage(Message):
    # The document's own ids: an export writes each message's index.
    id: int | str
    parent: int | str | None
    version_of: int | str | None = None
    on_branch: bool


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


class BranchedDocument(Document):
    messages: list[BranchedMessage]  # type: ignore[assignment]


def is_ours(document: Any) -> bool:
    return isinstance(document, dict) and "format" in document


def parse(document: dict[str, Any], limits: Limits) -> ImportedChat:
    version = document.get("version")
    if document.get("format") == FORMAT and (type(version) is not int
                                             or version not in READS):
        raise InvalidInput("version", Problem(
            N_("must be 1 or 2 (this server reads version 1 and 2 documents; got"
               " %(version)s)."), {"version": repr(version)}))
    messages = document.get("messages")
    if isinstance(messages, list) and len(messages) > limits.messages:
        # Before the item checks, so a huge list is refused without reading it all.
        raise InvalidInput("messages", Problem(
            N_("holds %(count)s messages; at most %(n)s can be imported per chat."),
            {"count": len(messages), "n": limits.messages}))
    schema = BranchedDocument if version == 2 else Document
    try:
        parsed = schema.model_validate(document)
    except ValidationError as error:
        raise invalid(error) from None
    branches: list[dict[str, Any] | None] = [None] * len(parsed.messages)
    if isinstance(parsed, BranchedDocument):
        branches = list(resolve([
            Place(role=m.role, id=m.id, parent=m.parent, version_of=m.version_of,
                  on_branch=m.on_branch) for m in parsed.messages]))
    drafts = []
    for index, m in enumerate(parsed.messages):
        path = join("messages", index)
        drafts.append(Draft(
            path=path, role=m.role, content=m.content,
            timestamp=iso_time(join(path, "timestamp"), m.timestamp), status=m.status,
            token_count=m.token_count, processing_time=m.processing_time,
            metadata=m.metadata, branch=branches[index],
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
            raise InvalidInput("session.title", error.problem_text) from None
        raise
