"""A chat session: its settings, its messages and the life of every assistant reply.

All of a conversation's events live on this aggregate, so the session's stream is simply
its own events in log order. Its state, though, is only what commands must check: the
settings, the last user message and the replies still open. Finished turns are left to
the read models, so loading, copying and snapshotting a chat costs the same at its 10th
reply as at its 10,000th.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from domain.errors import AlreadyClaimed, NothingToRegenerate, ReplyNotOpen

QUEUED, STREAMING = "queued", "streaming"
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
        self.last_user_message_id: UUID | None = None
        # Replies still queued or streaming, by str(reply_id) (snapshots need text keys):
        # {"status", "content", "pieces", "tokens"}. A reply leaves this map when it ends.
        self.open: dict[str, dict[str, Any]] = {}

    # -- queries -----------------------------------------------------------------------

    def is_visible_to(self, user_id: UUID) -> bool:
        return not self.deleted and self.owner_id == user_id

    def open_replies(self) -> list[UUID]:
        return [UUID(reply_id) for reply_id in self.open]

    def open_reply(self, reply_id: UUID) -> dict[str, Any]:
        """An open reply's state; ReplyNotOpen if it ended or never existed here."""
        reply = self.open.get(str(reply_id))
        if reply is None:
            raise ReplyNotOpen(f"reply {reply_id} is not open")
        return reply

    def last_user_message(self) -> UUID:
        if self.last_user_message_id is None:
            raise NothingToRegenerate("this session has no user message to answer")
        return self.last_user_message_id

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
        if not self.titled_by_user and self.last_user_message_id is None:
            self._rename(title=auto_title(content), by_user=False)
        self._post_user_message(message_id=message_id, content=content)

    @event("UserMessagePosted")
    def _post_user_message(self, message_id: UUID, content: str) -> None:
        self.last_user_message_id = message_id

    @event("UserMessageEdited")
    def edit_user_message(self, message_id: UUID, new_message_id: UUID, content: str) -> None:
        """A new version of a sent message starts a branch from where that one was: what
        followed the old version stays in the log, off the branch. The caller checks that
        `message_id` is a user message of this session (the read model knows them all)."""
        self.last_user_message_id = new_message_id

    def import_messages(self, messages: list[dict[str, Any]], source: str) -> None:
        """Record a conversation brought from a file, one event per message, each with a
        fresh id (a file's ids are never trusted) and its original time. An assistant
        message answers the user message before it, as a reply would; one with none
        before it answers itself, so the history a later reply reads keeps it.

        A message with a "branch" ({parent, version_of, on_branch}: indexes of earlier
        messages in `messages`, already checked) keeps the branches it was exported with:
        its event carries them with the fresh ids (`branch`), and an assistant message
        answers its parent instead."""
        ids = [uuid4() for _ in messages]
        answering: UUID | None = None
        for message_id, message in zip(ids, messages, strict=True):
            is_user = message["role"] == "user"
            if is_user:
                answering = message_id
            in_reply_to = None if is_user else (answering or message_id)
            branch = message.get("branch")
            carried: dict[str, Any] | None = None
            if branch is not None:
                parent = None if branch["parent"] is None else str(ids[branch["parent"]])
                first = None if branch["version_of"] is None else str(ids[branch["version_of"]])
                if not is_user:
                    in_reply_to = UUID(parent) if parent else message_id
                carried = {"parent_id": parent if is_user else None, "version_of": first,
                           "on_branch": bool(branch["on_branch"])}
            self._import_message(
                message_id=message_id, source=source, role=message["role"],
                content=message["content"], sent_at=message["timestamp"],
                status=message["status"], token_count=message["token_count"],
                processing_time=message["processing_time"], metadata=message["metadata"],
                in_reply_to=in_reply_to, branch=carried,
            )

    @event("MessageImported")
    def _import_message(
        self, message_id: UUID, source: str, role: str, content: str, sent_at: str,
        status: str, token_count: int | None, processing_time: float | None,
        metadata: dict[str, Any], in_reply_to: UUID | None,
        branch: dict[str, Any] | None = None,
    ) -> None:
        # `branch` (added later; events stored before lack it and load with None):
        # {parent_id, version_of, on_branch} as text ids, None for a file without branches.
        if role == "user" and (branch is None or branch["on_branch"]):
            self.last_user_message_id = message_id

    @event("ReplyQueued")
    def queue_reply(self, reply_id: UUID, in_reply_to: UUID, queue_position: int) -> None:
        self.open[str(reply_id)] = {"status": QUEUED, "content": "", "pieces": 0, "tokens": 0}

    def claim_reply(self, reply_id: UUID, worker_id: int, worker: str) -> None:
        """A web worker takes a queued reply to generate (several workers on PostgreSQL).
        Two racing both load the same version and only the first save is kept; the other,
        reloaded, finds the reply claimed here (AlreadyClaimed). `worker_id` is the key of
        the advisory lock the worker holds while alive; `worker` names it for people."""
        reply = self.open_reply(reply_id)
        if reply["status"] != QUEUED or reply.get("worker") is not None:
            raise AlreadyClaimed(f"reply {reply_id} is already taken")
        self._claim_reply(reply_id=reply_id, worker_id=worker_id, worker=worker)

    @event("ReplyClaimed")
    def _claim_reply(self, reply_id: UUID, worker_id: int, worker: str) -> None:
        self.open[str(reply_id)]["worker"] = worker_id

    def claimed_by(self, reply_id: UUID) -> int | None:
        """The lock key of the worker generating an open reply; None if none claimed it
        (always on SQLite, where the one process needs no claims)."""
        worker = self.open_reply(reply_id).get("worker")
        return worker if isinstance(worker, int) else None

    def start_reply(self, reply_id: UUID, prompt_tokens: int, dropped_turns: int) -> None:
        self.open_reply(reply_id)
        self._start_reply(reply_id=reply_id, prompt_tokens=prompt_tokens,
                          dropped_turns=dropped_turns)

    @event("ReplyStarted")
    def _start_reply(self, reply_id: UUID, prompt_tokens: int, dropped_turns: int) -> None:
        self.open[str(reply_id)]["status"] = STREAMING

    def add_tokens(self, reply_id: UUID, text: str, token_count: int) -> None:
        reply = self.open_reply(reply_id)
        self._add_tokens(reply_id=reply_id, index=reply["pieces"], text=text,
                         token_count=token_count)

    @event("TokensGenerated")
    def _add_tokens(self, reply_id: UUID, index: int, text: str, token_count: int) -> None:
        reply = self.open[str(reply_id)]
        reply["content"] += text
        reply["pieces"] = index + 1
        reply["tokens"] += token_count

    def complete_reply(self, reply_id: UUID, **outcome: Any) -> None:
        reply = self.open_reply(reply_id)
        self._complete_reply(reply_id=reply_id, content=reply["content"], **outcome)

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
        self.open.pop(str(reply_id), None)

    def fail_reply(self, reply_id: UUID, code: str, message: str) -> None:
        self.open_reply(reply_id)
        self._fail_reply(reply_id=reply_id, code=code, message=message)

    @event("ReplyFailed")
    def _fail_reply(self, reply_id: UUID, code: str, message: str) -> None:
        self.open.pop(str(reply_id), None)

    def cancel_reply(self, reply_id: UUID) -> None:
        reply = self.open_reply(reply_id)
        self._cancel_reply(reply_id=reply_id, content=reply["content"])

    @event("ReplyCancelled")
    def _cancel_reply(self, reply_id: UUID, content: str) -> None:
        self.open.pop(str(reply_id), None)

    def interrupt_reply(self, reply_id: UUID) -> None:
        reply = self.open_reply(reply_id)
        self._interrupt_reply(reply_id=reply_id, content=reply["content"])

    @event("ReplyInterrupted")
    def _interrupt_reply(self, reply_id: UUID, content: str) -> None:
        self.open.pop(str(reply_id), None)
