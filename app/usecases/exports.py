"""Export a chat (a JSON document, or Markdown to read) and import chats from a file.

The JSON document (`localchat.session`, version 2) holds what a chat is: its title, its
settings and every message of every branch (edited messages' earlier versions and what
followed them too) with their times, statuses, reply metadata and place among the
branches. Importing it gives a new session of the caller's with the same content and
branches; export -> import -> export differs only in `exported_at` and the session's
`created_at`/`updated_at` (those of the new session). Version 1 documents (the current
branch only) still import; Open WebUI and ChatGPT exports are read too
(app/usecases/import_formats). Markdown shows the current branch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from app.services import Services
from app.usecases import chats
from app.usecases.errors import InvalidInput
from app.usecases.import_formats import ImportedChat, Limits, parse
from app.usecases.import_formats.ours import FORMAT, VERSION
from projections import messages as messages_read
from projections.base import iso

MESSAGE_FIELDS = ("role", "content", "timestamp", "status", "token_count", "processing_time",
                  "metadata")
ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


def limits_of(services: Services) -> Limits:
    s = services.settings
    return Limits(message_chars=s.max_message_chars, title_chars=s.max_title_chars,
                  system_prompt_chars=s.max_system_prompt_chars,
                  messages=s.max_import_messages, chats=s.max_import_chats)


# -- export -----------------------------------------------------------------------------------


async def export_session(services: Services, user_id: str, session_id: str) -> dict[str, Any]:
    """The user's session as a self-contained document; NotFound for anyone else's."""
    session = await chats.owned_session(services, user_id, session_id)
    found = await messages_read.every_message(services.read_db, session["id"])
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": iso(datetime.now(UTC)),
        "session": {key: session[key] for key in ("title", "created_at", "updated_at")},
        "config": session["config"],
        "messages": _with_branches(found),
    }


def _with_branches(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each message with its place: its index as `id`; `parent` the user message it
    follows (a user message) or answers (a reply; null for one that answers none)."""
    index = {m["id"]: i for i, m in enumerate(found)}
    written = []
    for i, m in enumerate(found):
        follows = m["parent_id"] if m["role"] == "user" else m["in_reply_to"]
        written.append({
            "id": i, **{key: m[key] for key in MESSAGE_FIELDS},
            "parent": index.get(follows) if follows != m["id"] else None,
            "version_of": index.get(m["version_of"]), "on_branch": m["on_branch"],
        })
    return written


async def export_markdown(services: Services, user_id: str, session_id: str) -> str:
    """The conversation to read: a heading per message, its text as written (Markdown)."""
    shown = await chats.conversation(services, user_id, session_id)
    session = shown.session
    lines = [f"# {_one_line(session['title'])}", ""]
    config = session["config"]
    lines += [f"- Created: {_when(session['created_at'])}",
              f"- Model: {config.get('model', '')}", ""]
    if config.get("system_prompt"):
        lines += ["System prompt:", "", *_quoted(config["system_prompt"]), ""]
    for message in shown.messages:
        lines += [f"## {ROLE_NAMES.get(message['role'], message['role'])}"
                  f" · {_when(message['timestamp'])}", ""]
        if message["content"]:
            lines += [message["content"].rstrip("\n"), ""]
        if message["status"] != "complete":
            lines += [f"*({message['status']})*", ""]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quoted(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def _when(stamp: str) -> str:
    return stamp[:16].replace("T", " ") + " UTC"


# -- import -----------------------------------------------------------------------------------


async def import_document(
    services: Services, user_id: str, document: Any
) -> tuple[str, list[dict[str, Any]]]:
    """(format, new sessions) from a parsed JSON file. The whole file is checked before
    anything is written: a problem anywhere raises InvalidInput naming its path."""
    source, found = parse(document, limits_of(services))
    checked = [(chat, _config(services, chat)) for chat in found]
    owner = UUID(user_id)
    ids, position = [], 0
    for chat, config in checked:
        session_id, position = await services.command(
            services.chat.import_session, owner, chat.title, config, chat.message_values(),
            chat.source)
        ids.append(str(session_id))
    if position:
        await services.settle(position)
    return source, [await chats.owned_session(services, user_id, i) for i in ids]


def _config(services: Services, chat: ImportedChat) -> dict[str, Any]:
    """The chat's settings over this server's defaults, within this server's limits. The
    model is always this server's: a file from elsewhere names models it does not have."""
    values = {key: value for key, value in chat.config.items() if key != "model"}
    try:
        _title, config = chats.session_fields(services, values)
    except InvalidInput as error:
        prefix = f"{chat.path}.config" if chat.path else "config"
        raise InvalidInput(f"{prefix}.{error.field}", error.problem_text) from None
    return {**chats.default_config(services), **config}
