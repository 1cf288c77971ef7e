"""What every import format shares: the parsed chat, the limits, and checks whose failures
name the offending field by its path in the file (`messages[3].role`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.usecases import fields
from app.usecases.errors import N_, InvalidInput, Message, Text
from projections.base import iso

ROLES = ("user", "assistant")
FINISHED = ("complete", "failed", "cancelled", "interrupted")
# A reply still open when its chat was exported cannot continue in the copy.
OPEN = ("queued", "streaming")


@dataclass(frozen=True)
class Limits:
    message_chars: int
    title_chars: int
    system_prompt_chars: int
    messages: int
    chats: int


@dataclass(frozen=True)
class Draft:
    """One message as read from a file, with where it was found (for error messages)."""

    path: str
    role: str
    content: str
    timestamp: str
    status: str = "complete"
    token_count: int | None = None
    processing_time: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Where it stands among the chat's branches: {parent, version_of, on_branch} with the
    # indexes of earlier messages (our version 2 documents); None: it follows the one before.
    branch: dict[str, Any] | None = None


@dataclass(frozen=True)
class ImportedChat:
    source: str  # "localchat", "openwebui" or "chatgpt"
    path: str  # where the chat is in the file ("" for a single-chat document)
    title: str
    config: dict[str, Any]  # settings over the defaults, not yet checked against the server
    messages: list[Draft]

    def message_values(self) -> list[dict[str, Any]]:
        """The messages as the import command takes them."""
        return [{
            "role": m.role, "content": m.content, "timestamp": m.timestamp,
            "status": "interrupted" if m.status in OPEN else m.status,
            "token_count": m.token_count, "processing_time": m.processing_time,
            "metadata": m.metadata,
            **({} if m.branch is None else {"branch": m.branch}),
        } for m in self.messages]


def join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def loc_path(prefix: str, loc: tuple[str | int, ...]) -> str:
    path = prefix
    for part in loc:
        path = join(path, part)
    return path or "document"


def _problem(error: Any) -> Text:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return N_("is required.")
    if kind == "extra_forbidden":
        return N_("is not a field of this format.")
    if kind == "literal_error":
        return Message(N_("must be %(choices)s."),
                       {"choices": str(ctx.get("expected", "")).replace("'", "")})
    if kind in ("string_type", "string_sub_type"):
        return N_("must be a string.")
    if kind in ("int_type", "int_from_float"):
        return N_("must be a whole number.")
    if kind in ("float_type", "finite_number"):
        return N_("must be a number.")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return N_("must be an object.")
    if kind == "list_type":
        return N_("must be a list.")
    if kind == "too_long":
        return Message(N_("must have at most %(n)s items."), {"n": str(ctx.get("max_length"))})
    if kind == "greater_than_equal":
        return Message(N_("must be at least %(n)s."), {"n": str(ctx.get("ge"))})
    if kind == "less_than_equal":
        return Message(N_("must be at most %(n)s."), {"n": str(ctx.get("le"))})
    return str(error["msg"]) + "."  # pydantic's own English: no template to translate


def invalid(error: ValidationError, prefix: str = "") -> InvalidInput:
    """The first problem pydantic found, as an InvalidInput naming its path."""
    first = error.errors(include_url=False)[0]
    return InvalidInput(loc_path(prefix, tuple(first["loc"])), _problem(first))


def text(path: str, value: str, max_len: int, allow_blank: bool = True) -> str:
    """Text kept exactly as written (no NFC, no stripping), within the server's limits."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(path, N_("must be valid Unicode text.")) from None
    if "\x00" in value:
        raise InvalidInput(path, N_("must not contain NUL characters."))
    if not allow_blank and not value.strip():
        raise InvalidInput(path, N_("must not be empty."))
    if len(value) > max_len:
        raise InvalidInput(path, fields.at_most(max_len))
    return value


def iso_time(path: str, value: str) -> str:
    """An ISO-8601 time as the API writes them (UTC, `Z`); a time without zone is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            path, N_("must be an ISO-8601 time like 2026-01-02T03:04:05Z.")) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso(moment)


def epoch_time(path: str, value: float) -> str:
    """Seconds since 1970 (Open WebUI, ChatGPT); milliseconds are recognised by size."""
    seconds = value / 1000 if value > 100_000_000_000 else value
    try:
        return iso(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(path, N_("must be a time in seconds since 1970.")) from None


def check_chat(chat: ImportedChat, limits: Limits) -> ImportedChat:
    """The server's limits on a parsed chat, each failure naming its path."""
    if len(chat.messages) > limits.messages:
        raise InvalidInput(join(chat.path, "messages"),
                           Message(N_("holds %(count)s messages; at most %(n)s can be imported"
                                      " per chat."),
                                   {"count": len(chat.messages), "n": limits.messages}))
    text(join(chat.path, "title"), chat.title, limits.title_chars)
    for message in chat.messages:
        text(join(message.path, "content"), message.content, limits.message_chars,
             allow_blank=message.role != "user")
    return chat


def check_count(count: int, limits: Limits) -> None:
    if count > limits.chats:
        raise InvalidInput("document", Message(N_("holds %(count)s chats; at most %(n)s can be"
                                                  " imported at once."),
                                               {"count": count, "n": limits.chats}))
