"""A chat session: its settings, its messages and the life of every assistant reply.

All of a conversation's events live on one aggregate, so the session's stream is simply
its own events in log order.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import NotFound, NothingToRegenerate, ReplyNotOpen

OPEN_STATUSES = frozenset({"queued", "streaming"})
DEFAULT_TITLE = "New chat"
AUTO_TITLE_CHARS = 60


def auto_title(content: str) -> str:
    """A title from the first message: its first line, shortened at a word boundary."""
    first = next((line for line in content.splitlines() if line.strip()), "")
    line = " ".join(first.split())
    if len(line) <= AUTO_TITLE_CHARS:
        return line or DEFAULT_TITLE
    cut = line[:AUTO_TITLE_CHARS].rsplit(" ", 1)[0] or line[:AUTO_TITLE_CHARS]
    return cut + "…"


class ChatSession(Aggregate):
    @event("Started")
    def __init__(self, owner_id: UUID, title: str, config: dict[str, Any]) -> None:
        self.owner_id = owner_id
        self.title = title or DEFAULT_TITLE
        self.titled_by_user = bool(title)
        self.config = dict(config)
        self.deleted = False
        # Turns in order; each is {"id", "role", "content", "status", "pieces", "tokens"}.
        self.turns: list[dict[str, Any]] = []

    # -- queries -----------------------------------------------------------------------

    def is_visible_to(self, user_id: UUID) -> bool:
        return not self.deleted and self.owner_id == user_id

    def turn(self, turn_id: UUID) -> dict[str, Any]:
        for turn in self.turns:
            if turn["id"] == turn_id:
                return turn
        raise NotFound(f"no message {turn_id}")

    def open_replies(self) -> list[UUID]:
        return [t["id"] for t in self.turns if t["status"] in OPEN_STATUSES]

    def history_before(self, reply_id: UUID) -> list[dict[str, Any]]:
        """The conversation a reply answers: every user message before it, each followed by
        its latest completed answer. Earlier answers to the message this reply answers are
        left out: a regenerated reply replaces them rather than following them."""
        reply = self.turn(reply_id)
        before = self.turns[: self.turns.index(reply)]
        latest: dict[Any, UUID] = {}
        for turn in before:
            answered = turn.get("in_reply_to")
            if (turn["role"] == "assistant" and turn["status"] == "complete"
                    and turn["content"] and answered != reply.get("in_reply_to")):
                latest[answered] = turn["id"]
        chosen = set(latest.values())
        return [
            {"role": turn["role"], "content": turn["content"]}
            for turn in before
            if turn["role"] == "user" or turn["id"] in chosen
        ]

    def last_user_message_id(self) -> UUID:
        for turn in reversed(self.turns):
            if turn["role"] == "user":
                return turn["id"]
        raise NothingToRegenerate("this session has no user message to answer")

    def _open_reply(self, reply_id: UUID) -> dict[str, Any]:
        turn = self.turn(reply_id)
        if turn["role"] != "assistant" or turn["status"] not in OPEN_STATUSES:
            raise ReplyNotOpen(f"reply {reply_id} is {turn['status']}")
        return turn

    # -- settings ----------------------------------------------------------------------

    def rename(self, title: str) -> None:
        if title != self.title or not self.titled_by_user:
            self._rename(title=title, by_user=True)

    @event("Renamed")
    def _rename(self, title: str, by_user: bool) -> None:
        self.title = title
        self.titled_by_user = self.titled_by_user or by_user

    def configure(self, changes: dict[str, Any]) -> None:
        changed = {k: v for k, v in changes.items() if self.config.get(k) != v}
        if changed:
            self._configure(changes=changed)

    @event("Configured")
    def _configure(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)

    @event("Deleted")
    def delete(self) -> None:
        self.deleted = True

    # -- messages and replies ----------------------------------------------------------

    def post_user_message(self, message_id: UUID, content: str) -> None:
        if not self.titled_by_user and not any(t["role"] == "user" for t in self.turns):
            self._rename(title=auto_title(content), by_user=False)
        self._post_user_message(message_id=message_id, content=content)

    @event("UserMessagePosted")
    def _post_user_message(self, message_id: UUID, content: str) -> None:
        self.turns.append(
            {"id": message_id, "role": "user", "content": content, "status": "complete",
             "pieces": 0, "tokens": 0}
        )

    @event("ReplyQueued")
    def queue_reply(self, reply_id: UUID, in_reply_to: UUID, queue_position: int) -> None:
        self.turns.append(
            {"id": reply_id, "role": "assistant", "content": "", "status": "queued",
             "pieces": 0, "tokens": 0, "in_reply_to": in_reply_to}
        )

    def start_reply(self, reply_id: UUID, prompt_tokens: int, dropped_turns: int) -> None:
        self._open_reply(reply_id)
        self._start_reply(reply_id=reply_id, prompt_tokens=prompt_tokens,
                          dropped_turns=dropped_turns)

    @event("ReplyStarted")
    def _start_reply(self, reply_id: UUID, prompt_tokens: int, dropped_turns: int) -> None:
        self.turn(reply_id)["status"] = "streaming"

    def add_tokens(self, reply_id: UUID, text: str, token_count: int) -> None:
        turn = self._open_reply(reply_id)
        self._add_tokens(reply_id=reply_id, index=turn["pieces"], text=text,
                         token_count=token_count)

    @event("TokensGenerated")
    def _add_tokens(self, reply_id: UUID, index: int, text: str, token_count: int) -> None:
        turn = self.turn(reply_id)
        turn["content"] += text
        turn["pieces"] = index + 1
        turn["tokens"] += token_count

    def complete_reply(self, reply_id: UUID, **outcome: Any) -> None:
        turn = self._open_reply(reply_id)
        self._complete_reply(reply_id=reply_id, content=turn["content"], **outcome)

    @event("ReplyCompleted")
    def _complete_reply(
        self,
        reply_id: UUID,
        content: str,
        token_count: int,
        processing_time: float,
        time_to_first_token: float | None,
        model_version: str,
        model_params: dict[str, Any],
        prompt_template: str,
        finish_reason: str,
    ) -> None:
        self.turn(reply_id)["status"] = "complete"

    def fail_reply(self, reply_id: UUID, code: str, message: str) -> None:
        self._open_reply(reply_id)
        self._fail_reply(reply_id=reply_id, code=code, message=message)

    @event("ReplyFailed")
    def _fail_reply(self, reply_id: UUID, code: str, message: str) -> None:
        self.turn(reply_id)["status"] = "failed"

    def cancel_reply(self, reply_id: UUID) -> None:
        turn = self._open_reply(reply_id)
        self._cancel_reply(reply_id=reply_id, content=turn["content"])

    @event("ReplyCancelled")
    def _cancel_reply(self, reply_id: UUID, content: str) -> None:
        self.turn(reply_id)["status"] = "cancelled"

    def interrupt_reply(self, reply_id: UUID) -> None:
        turn = self._open_reply(reply_id)
        self._interrupt_reply(reply_id=reply_id, content=turn["content"])

    @event("ReplyInterrupted")
    def _interrupt_reply(self, reply_id: UUID, content: str) -> None:
        self.turn(reply_id)["status"] = "interrupted"
