"""Which logged events a chat stream shows, and how (API.md "Messages and streaming")."""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.domain import DomainEventProtocol

INTERRUPTED_MESSAGE = "The server stopped while this reply was being written."


def stream_event(event: DomainEventProtocol[Any]) -> tuple[str, dict[str, Any]] | None:
    """(SSE event name, data) for an event a chat client sees, else None."""
    kind = type(event).__qualname__
    e: Any = event
    if kind == "ChatSession.ReplyQueued":
        return "queued", {"reply_id": str(e.reply_id), "position": e.queue_position}
    if kind == "ChatSession.TokensGenerated":
        return "token", {"reply_id": str(e.reply_id), "index": e.index, "text": e.text}
    if kind == "ChatSession.ReplyCompleted":
        return "done", {
            "reply_id": str(e.reply_id), "content": e.content, "token_count": e.token_count,
            "processing_time": e.processing_time, "finish_reason": e.finish_reason,
        }
    if kind == "ChatSession.ReplyFailed":
        return "error", {"reply_id": str(e.reply_id), "code": e.code, "message": e.message}
    if kind == "ChatSession.ReplyInterrupted":
        return "error", {"reply_id": str(e.reply_id), "code": "interrupted",
                         "message": INTERRUPTED_MESSAGE}
    if kind == "ChatSession.ReplyCancelled":
        return "cancelled", {"reply_id": str(e.reply_id), "content": e.content}
    return None


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
