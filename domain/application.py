"""The command side: every state change goes through one of these methods and becomes events.

Commands validate against the aggregates' current state and either record events or raise
a DomainError having recorded nothing. One lock serialises writers in this process, so two
commands never race on an aggregate's version; the event store's unique (originator_id,
version) key is the guard across processes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError, Recording

from domain.errors import DomainError, NotFound, UsernameTaken
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex

log = logging.getLogger(__name__)

HeadListener = Callable[[int], None]
# (position, ids of the aggregates the commit changed): streams wake only for their own.
ChangeListener = Callable[[int, set[UUID]], None]
# (the positions of one commit's events): a follower of other processes' commits skips these.
CommitListener = Callable[[list[int]], None]

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A", bound="ChatApplication")
CONFLICT_ATTEMPTS = 5


def retry_conflicts(command: Callable[Concatenate[A, P], R]) -> Callable[Concatenate[A, P], R]:
    """Another process (a second web worker, the command line) may save the same aggregate
    between this command's load and its save: the store refuses the later save
    (IntegrityError, nothing recorded) and the command runs again on the reloaded
    aggregate, which decides anew (a reply claimed meanwhile is then refused by the
    domain). In one process the lock already serialises writers: nothing is retried."""
    @functools.wraps(command)
    def run(self: A, /, *args: P.args, **kwargs: P.kwargs) -> R:
        for _attempt in range(CONFLICT_ATTEMPTS - 1):
            try:
                return command(self, *args, **kwargs)
            except IntegrityError:
                continue
        return command(self, *args, **kwargs)
    return run


# A chat's events are replayed from its latest snapshot, so loading one after a restart
# costs the same however long the conversation has grown.
SNAPSHOT_INTERVAL = 100


class ChatApplication(Application[UUID]):
    name = "Chat"
    snapshotting_intervals: ClassVar[dict[Any, int]] = {ChatSession: SNAPSHOT_INTERVAL}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._lock = threading.RLock()
        self._head_listeners: list[HeadListener] = []
        self._change_listeners: list[ChangeListener] = []
        self._commit_listeners: list[CommitListener] = []

    # -- log following -----------------------------------------------------------------

    def add_head_listener(self, listener: HeadListener) -> None:
        """`listener(position)` is called after every commit, from the committing thread."""
        self._head_listeners.append(listener)

    def add_change_listener(self, listener: ChangeListener) -> None:
        """`listener(position, aggregate_ids)` after every commit, from the committing thread."""
        self._change_listeners.append(listener)

    def add_commit_listener(self, listener: CommitListener) -> None:
        """`listener(positions)` after every commit of this process, from its thread."""
        self._commit_listeners.append(listener)

    def announce(self, head: int, ids: set[UUID]) -> None:
        """Wake the head and change listeners for commits another process made (several
        web workers on PostgreSQL: app/cluster/log_notify.py hears of them)."""
        for listener in self._head_listeners:
            listener(head)
        for change_listener in self._change_listeners:
            change_listener(head, ids)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if recordings:
            for commit_listener in self._commit_listeners:
                commit_listener([r.notification.id for r in recordings])
            head = recordings[-1].notification.id
            for listener in self._head_listeners:
                listener(head)
            if self._change_listeners:
                ids = {i for r in recordings
                       if isinstance(i := r.notification.originator_id, UUID)}
                for change_listener in self._change_listeners:
                    change_listener(head, ids)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def _take_snapshots(self, processing_event: Any) -> None:
        """Snapshots are written after the events commit: one refused (a full disk) must
        not make the committed save look failed, or callers would retry it or report it
        lost. A missing snapshot only means a longer replay."""
        try:
            super()._take_snapshots(processing_event)
        except PersistenceError as error:
            log.warning("a snapshot was not saved (%s); its events are", error)

    def _save(self, *aggregates: Aggregate | None) -> int:
        recordings = self.save(*aggregates)
        return recordings[-1].notification.id if recordings else self.head()

    # -- users -------------------------------------------------------------------------

    @retry_conflicts
    def register_user(self, username: str, email: str, password_hash: str) -> User:
        with self._lock:
            try:
                self.repository.get(UsernameIndex.create_id(username))
            except AggregateNotFoundError:
                pass
            else:
                raise UsernameTaken(username)
            try:
                self.repository.get(AdminSeat.create_id())
                seat = None
            except AggregateNotFoundError:
                seat = "free"
            user = User(username=username, email=email, password_hash=password_hash,
                        is_admin=seat is not None)
            index = UsernameIndex(username=username, user_id=user.id)
            admin_seat = AdminSeat(user_id=user.id) if seat else None
            try:
                self._save(user, index, admin_seat)
            except IntegrityError as error:
                if self.find_user(username) is None:  # the admin seat went to another: retry
                    raise
                raise UsernameTaken(username) from error
            return user

    def find_user(self, username: str) -> User | None:
        try:
            index: UsernameIndex = self.repository.get(UsernameIndex.create_id(username))
        except AggregateNotFoundError:
            return None
        return self.get_user(index.user_id)

    def get_user(self, user_id: UUID) -> User:
        try:
            user: Aggregate = self.repository.get(user_id)
        except AggregateNotFoundError as error:
            raise NotFound("no such user") from error
        if not isinstance(user, User):
            raise NotFound("no such user")
        return user

    def log_in(self, user_id: UUID, token_hash: str, address: str,
               ttl: timedelta | None = None) -> int:
        """With `ttl`, the user's tokens older than it are expired first."""
        return self._change_user(user_id, lambda user: user.log_in(token_hash, address, ttl))

    def record_failed_login(self, user_id: UUID, address: str) -> int:
        return self._change_user(user_id, lambda user: user.record_failed_login(address))

    def log_out(self, user_id: UUID, token_hash: str) -> int:
        return self._change_user(user_id, lambda user: user.log_out(token_hash))

    def update_profile(self, user_id: UUID, email: str | None, display_name: str | None) -> int:
        return self._change_user(user_id, lambda user: user.update_profile(email, display_name))

    def change_password(self, user_id: UUID, password_hash: str, keep_token: str | None) -> int:
        return self._change_user(user_id,
                                 lambda user: user.change_password(password_hash, keep_token))

    @retry_conflicts
    def _change_user(self, user_id: UUID, change: Callable[[User], None]) -> int:
        with self._lock:
            user = self.get_user(user_id)
            change(user)
            return self._save(user)

    # -- sessions ----------------------------------------------------------------------

    def start_session(self, owner_id: UUID, title: str, config: dict[str, Any]) -> tuple[UUID, int]:
        with self._lock:
            session = ChatSession(owner_id=owner_id, title=title, config=config)
            return session.id, self._save(session)

    def get_session(self, session_id: UUID, owner_id: UUID | None = None) -> ChatSession:
        """The session; with `owner_id`, only if it is that user's and not deleted."""
        try:
            session: Aggregate = self.repository.get(session_id)
        except AggregateNotFoundError as error:
            raise NotFound("no such session") from error
        if not isinstance(session, ChatSession):
            raise NotFound("no such session")
        if owner_id is not None and not session.is_visible_to(owner_id):
            raise NotFound("no such session")
        return session

    @retry_conflicts
    def update_session(
        self, session_id: UUID, owner_id: UUID, title: str | None, config: dict[str, Any]
    ) -> int:
        with self._lock:
            session = self.get_session(session_id, owner_id)
            if title is not None:
                session.rename(title)
            session.configure(config)
            return self._save(session)

    @retry_conflicts
    def delete_session(self, session_id: UUID, owner_id: UUID) -> int:
        with self._lock:
            session = self.get_session(session_id, owner_id)
            session.delete()
            return self._save(session)

    @retry_conflicts
    def post_message(
        self, session_id: UUID, owner_id: UUID, content: str, queue_position: int
    ) -> tuple[UUID, UUID, int]:
        """Records the user's message and queues a reply: (message_id, reply_id, position)."""
        with self._lock:
            session = self.get_session(session_id, owner_id)
            message_id, reply_id = uuid4(), uuid4()
            session.post_user_message(message_id, content)
            session.queue_reply(reply_id, message_id, queue_position)
            return message_id, reply_id, self._save(session)

    @retry_conflicts
    def regenerate(
        self, session_id: UUID, owner_id: UUID, queue_position: int
    ) -> tuple[UUID, UUID, int]:
        """Queues a new reply to the last user message: (message_id, reply_id, position)."""
        with self._lock:
            session = self.get_session(session_id, owner_id)
            message_id, reply_id = session.last_user_message(), uuid4()
            session.queue_reply(reply_id, message_id, queue_position)
            return message_id, reply_id, self._save(session)

    @retry_conflicts
    def edit_message(
        self, session_id: UUID, owner_id: UUID, message_id: UUID, content: str,
        queue_position: int,
    ) -> tuple[UUID, UUID, int]:
        """Records a new version of a user message and queues a reply to it:
        (new_message_id, reply_id, position)."""
        with self._lock:
            session = self.get_session(session_id, owner_id)
            new_message_id, reply_id = uuid4(), uuid4()
            session.edit_user_message(message_id, new_message_id, content)
            session.queue_reply(reply_id, new_message_id, queue_position)
            return new_message_id, reply_id, self._save(session)

    def import_session(
        self, owner_id: UUID, title: str, config: dict[str, Any],
        messages: list[dict[str, Any]], source: str,
    ) -> tuple[UUID, int]:
        """A new session holding an imported conversation, recorded in one save.

        Each message is {role, content, timestamp, status, token_count, processing_time,
        metadata}, already validated; nothing is queued or generated."""
        with self._lock:
            session = ChatSession(owner_id=owner_id, title=title, config=config)
            session.import_messages(messages, source)
            return session.id, self._save(session)

    # -- replies (the inference actor's commands) -----------------------------------------

    @retry_conflicts
    def change_reply(self, session_id: UUID, change: Callable[[ChatSession], None]) -> int:
        with self._lock:
            session = self.get_session(session_id)
            change(session)
            return self._save(session)

    @retry_conflicts
    def change_replies(
        self, changes: Sequence[tuple[UUID, Callable[[ChatSession], None]]],
    ) -> list[DomainError | None]:
        """Several sessions' changes in one commit (the actor's token batches of the replies
        being written). A change the domain refuses (e.g. its reply was ended elsewhere) is
        left out, its error in its place; the others are saved."""
        with self._lock:
            refused: list[DomainError | None] = []
            sessions: list[ChatSession] = []
            for session_id, change in changes:
                try:
                    session = self.get_session(session_id)
                    change(session)
                except DomainError as error:
                    refused.append(error)
                    continue
                refused.append(None)
                sessions.append(session)
            if sessions:
                self._save(*sessions)
            return refused

    # -- administration (the admin pages and the command line) ---------------------------
    # `by` is the acting admin, None for the operator's command line. The admin seat keeps
    # the active admins, so a change that would leave none raises LastAdmin.

    def disable_user(self, user_id: UUID, by: UUID | None = None) -> int:
        """Every token of the user stops working; their open replies are the caller's to
        cancel (`cancel_replies`), since only the read models know which those are."""
        def change(user: User, seat: AdminSeat) -> None:
            if user.is_active_admin:
                seat.remove(user.id)
            user.disable(by)
        return self._administer(user_id, change)

    def enable_user(self, user_id: UUID, by: UUID | None = None) -> int:
        def change(user: User, seat: AdminSeat) -> None:
            user.enable(by)
            if user.is_active_admin:
                seat.add(user.id)
        return self._administer(user_id, change)

    def grant_admin(self, user_id: UUID, by: UUID | None = None) -> int:
        def change(user: User, seat: AdminSeat) -> None:
            user.grant_admin(by)
            if user.is_active_admin:
                seat.add(user.id)
        return self._administer(user_id, change)

    def revoke_admin(self, user_id: UUID, by: UUID | None = None) -> int:
        def change(user: User, seat: AdminSeat) -> None:
            if user.is_active_admin:
                seat.remove(user.id)
            user.revoke_admin(by)
        return self._administer(user_id, change)

    @retry_conflicts
    def _administer(self, user_id: UUID, change: Callable[[User, AdminSeat], None]) -> int:
        with self._lock:
            user = self.get_user(user_id)
            try:
                seat: AdminSeat = self.repository.get(AdminSeat.create_id())
            except AggregateNotFoundError as error:  # impossible once anyone registered
                raise NotFound("no admin seat") from error
            change(user, seat)
            return self._save(user, seat)

    def cancel_replies(self, replies: list[tuple[UUID, UUID]]) -> list[UUID]:
        """Cancel each (session_id, reply_id) still open; returns the reply ids cancelled.

        Another process (the server's actor) may write the same session at the same
        moment: the loser of that race reloads the session and tries again."""
        cancelled = []
        for session_id, reply_id in replies:
            def cancel(session: ChatSession, rid: UUID = reply_id) -> None:
                session.cancel_reply(rid)
            for _attempt in range(5):
                try:
                    self.change_reply(session_id, cancel)
                    cancelled.append(reply_id)
                except IntegrityError:
                    continue
                except DomainError:  # ended meanwhile, or gone
                    pass
                break
        return cancelled
