"""Time travel: a chat session and its messages as they stood at a log position.

`fold` is a pure function of the session's events: it applies, in log order, every event
up to `at` to plain dicts shaped exactly like the read models' (`projections/sessions.py`,
`projections/messages.py`), so at the log's head it gives the same messages as the
`messages` read model (tests/test_admin_pages.py checks that), and at any earlier position
the conversation as a reader saw it then, a streaming reply's text included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.event_log import LoggedEvent
from projections.base import ISO_FORMAT, iso

COUNTED = ("UserMessagePosted", "ReplyQueued", "MessageImported")  # message_count += 1
ENDINGS = {"ReplyFailed": "failed", "ReplyCancelled": "cancelled",
           "ReplyInterrupted": "interrupted"}


@dataclass(frozen=True)
class Moment:
    """The session and its messages after the events up to `position` (inclusive)."""

    position: int
    session: dict[str, Any] | None  # None before the session was started
    messages: list[dict[str, Any]]


def _json_copy(value: Any) -> Any:
    # The read models store JSON; a round trip gives what they give back (lists, not tuples).
    return json.loads(json.dumps(value, ensure_ascii=False))


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """What `projections.messages.message_view` makes of a row."""
    message = {key: value for key, value in row.items() if key != "started_at"}
    message["is_user"] = message["role"] == "user"
    message["metadata"] = _json_copy(message["metadata"])
    if message["role"] == "user":
        message["token_count"] = message["token_count"] or 0
    if message["status"] != "queued":
        del message["queue_position"]
    return message


def _message(e: Any, role: str, status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "", "role": role, "content": "", "timestamp": iso(e.timestamp),
            "status": status, "token_count": None, "processing_time": None, "metadata": {},
            "queue_position": None, "started_at": None, **fields}


def _elapsed(row: dict[str, Any], e: Any) -> float | None:
    """Seconds from the reply's start to `e`, computed as the messages projection does."""
    if not row["started_at"]:
        return None
    started = datetime.strptime(row["started_at"], ISO_FORMAT)
    return round((e.timestamp.replace(tzinfo=None) - started).total_seconds(), 3)


_KINDS: dict[type, str] = {}  # event class -> its name without the aggregate's


def _kind(cls: type) -> str:
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = cls.__qualname__.split(".")[-1]
    return kind


ENDS = ("ReplyCompleted", *ENDINGS)


def _token_spans(events: list[LoggedEvent]) -> list[tuple[float, float]]:
    """The stretches of positions whose token batches can still matter to the answer.

    `ReplyCompleted` replaces a reply's text and token count, so the token batches of a
    reply completed within `events` change nothing; those of a reply still open, or ended
    otherwise (failed, stopped, interrupted: they keep what was written), do. A reply's
    batches come between its `ReplyQueued` and its end, so a batch outside every such
    stretch of those replies is left out, and left undecoded (most of a long chat)."""
    queued_at: dict[Any, int] = {}  # reply id -> position queued, while it is open
    spans: list[tuple[float, float]] = []
    for logged in events:
        if logged.kind == "TokensGenerated":
            continue
        e: Any = logged.event
        kind = _KINDS.get(type(e)) or _kind(type(e))
        if kind == "ReplyQueued":
            queued_at.setdefault(e.reply_id, logged.position)
        elif kind in ENDS:
            start = queued_at.pop(e.reply_id, 0)
            if kind != "ReplyCompleted":
                spans.append((start, logged.position))
    spans += [(start, math.inf) for start in queued_at.values()]
    return spans


def fold(events: Iterable[LoggedEvent], at: int | None = None) -> Moment:
    """The session after its events with position <= `at` (all of them when None)."""
    upto = []
    for logged in events:
        if at is not None and logged.position > at:
            break
        upto.append(logged)
    spans = _token_spans(upto)
    session: dict[str, Any] | None = None
    rows: dict[str, dict[str, Any]] = {}  # insertion order is log order
    # The same rows by reply id's `.int`: a token batch finds its reply without making
    # the id's text (most of a long chat's events are token batches).
    replies: dict[int, dict[str, Any]] = {}
    position = 0
    for logged in upto:
        position = logged.position
        if logged.kind == "TokensGenerated" and not any(
                low <= position <= high for low, high in spans):
            continue  # its reply is completed by `at`: nothing it wrote stays
        e: Any = logged.event
        kind = _KINDS.get(type(e)) or _kind(type(e))
        if kind == "TokensGenerated":  # most of a chat's events: the cheapest path first
            row = replies.get(e.reply_id.int) or rows[str(e.reply_id)]
            row["content"] += e.text
            row["token_count"] += e.token_count
            continue
        stamp = iso(e.timestamp)
        if kind == "Started":
            session = {"id": str(e.originator_id), "owner_id": str(e.owner_id),
                       "title": e.title or "New chat", "created_at": stamp,
                       "updated_at": stamp, "message_count": 0,
                       "config": _json_copy(e.config), "deleted": False}
            continue
        if session is not None and kind in ("Renamed", "Configured", "Deleted",
                                            *COUNTED):
            session["updated_at"] = stamp
        if kind == "Renamed" and session is not None:
            session["title"] = e.title
        elif kind == "Configured" and session is not None:
            session["config"] = {**session["config"], **_json_copy(e.changes)}
        elif kind == "Deleted" and session is not None:
            session["deleted"] = True
        elif kind == "UserMessagePosted":
            rows[str(e.message_id)] = _message(e, "user", "complete", id=str(e.message_id),
                                               content=e.content)
        elif kind == "ReplyQueued":
            rows[str(e.reply_id)] = replies[e.reply_id.int] = _message(
                e, "assistant", "queued", id=str(e.reply_id), token_count=0,
                queue_position=e.queue_position)
        elif kind == "ReplyStarted":
            rows[str(e.reply_id)].update(status="streaming", started_at=stamp)
        elif kind == "ReplyCompleted":
            rows[str(e.reply_id)].update(
                status="complete", content=e.content, token_count=e.token_count,
                processing_time=e.processing_time,
                metadata={"model_version": e.model_version, "model_params": e.model_params,
                          "prompt_template": e.prompt_template,
                          "finish_reason": e.finish_reason,
                          "time_to_first_token": e.time_to_first_token})
        elif kind in ENDINGS:
            row = rows[str(e.reply_id)]
            if kind == "ReplyFailed":
                metadata: dict[str, Any] = {"finish_reason": "error",
                                            "error": {"code": e.code, "message": e.message}}
            else:
                metadata = {"finish_reason": ENDINGS[kind]}
                row["content"] = e.content
            row.update(status=ENDINGS[kind], processing_time=_elapsed(row, e),
                       metadata=metadata)
        elif kind == "MessageImported":
            # Imported from another chat app: the message's own time, not the import's.
            rows[str(e.message_id)] = _message(
                e, e.role, e.status, id=str(e.message_id), content=e.content,
                timestamp=e.sent_at, token_count=e.token_count,
                processing_time=e.processing_time, metadata=e.metadata)
        if session is not None and kind in COUNTED:
            session["message_count"] += 1
    return Moment(position, session, [_view(row) for row in rows.values()])
