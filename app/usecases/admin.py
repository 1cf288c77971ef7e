"""Administration: the dashboard's figures, users, the event browser, time travel and the
projections. HTTP-free like the other use cases; the adapters check that the caller is an
admin (app/auth.py `require_admin`) before calling any of these.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import anyio

from app.audit.browse import (
    EventBrowser,
    EventFilter,
    known_types,
    parse_time,
    resolve_type,
)
from app.audit.event_view import event_view
from app.config import Settings
from app.event_log import LoggedEvent
from app.event_store import postgres_url
from app.services import Services
from app.usecases import chats, fields
from app.usecases.errors import N_, Conflict, InvalidInput, NotFound
from app.usecases.timeline import Moment, fold
from domain import errors as domain_errors
from projections import hashchain
from projections import messages as messages_read
from projections import sessions as sessions_read
from projections import users as users_read

T = TypeVar("T")

# Payload fields never shown in full: a token hash identifies a live sign-in.
SECRET_FIELDS = frozenset({"password_hash", "token_hash"})
PAGE_SIZE = 50
MAX_PAGE = 500
SPARK_BUCKETS = 12  # five-minute buckets over the last hour
SPARK_WINDOW = timedelta(hours=1)
MAX_RECENT_REPLIES = 5000
EVENT_PAGE = 1000  # events read from the log per query while folding a session


# -- reading the log by index (app/audit/browse.py, in a worker thread) ---------------------


async def _browse(services: Services, work: Callable[[EventBrowser], T]) -> T:
    settings = services.settings
    read_models = services.read_models

    def run() -> T:
        from app.audit.browse_pg import open_browser  # psycopg only for PostgreSQL

        browser = open_browser(settings, services.chat, read_models)  # SQLite or PostgreSQL
        try:
            return work(browser)
        finally:
            browser.close()

    return await anyio.to_thread.run_sync(run)


def store_key(settings: Settings) -> str:
    """Which event store the caches below describe: the PostgreSQL URL, or the SQLite
    file (two stores never share a cached figure or event)."""
    return postgres_url(settings) or str(settings.event_store_path)


def shown_event(logged: LoggedEvent) -> dict[str, Any]:
    """An event as the admin sees it: `event_view` with every secret field redacted."""
    view = event_view(logged)
    view["data"] = {key: "[redacted]" if key in SECRET_FIELDS else value
                    for key, value in view["data"].items()}
    return view


# -- the dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """Per five-minute bucket of the last hour, oldest first; None where no reply ended."""

    tokens_per_second: list[float | None]
    time_to_first_token: list[float | None]
    replies: int


async def generating_now(services: Services) -> list[dict[str, Any]]:
    """Replies being written right now: who, which chat, tokens so far (the read model)."""
    async with services.read_db.execute(
        "SELECT m.id AS reply_id, m.session_id, m.token_count, m.started_at, s.title,"
        " u.username, u.id AS user_id FROM messages m JOIN sessions s ON s.id = m.session_id"
        " JOIN users u ON u.id = s.owner_id WHERE m.status = 'streaming' ORDER BY m.position"
    ) as cursor:
        return [dict(row) for row in await cursor.fetchall()]


_throughput_cache: dict[str, tuple[float, Throughput]] = {}
THROUGHPUT_TTL = 10.0  # seconds: every open dashboard redraws often; a bucket is 5 minutes


async def throughput(services: Services, now: datetime | None = None) -> Throughput:
    """Tokens/s and time to first token of the replies completed in the last hour (read
    again at most every THROUGHPUT_TTL seconds: it decodes each of those replies)."""
    key = store_key(services.settings)
    cached = _throughput_cache.get(key)
    if now is None and cached and time.monotonic() - cached[0] < THROUGHPUT_TTL:
        return cached[1]
    figures = await _throughput(services, now or datetime.now(UTC))
    _throughput_cache[key] = (time.monotonic(), figures)
    return figures


async def _throughput(services: Services, now: datetime) -> Throughput:
    start = now - SPARK_WINDOW
    where = EventFilter(types=resolve_type("ChatSession.ReplyCompleted"), since=start)
    completed = await _browse(services, lambda b: b.select(
        where, limit=MAX_RECENT_REPLIES, newest_first=True))
    tokens = [0.0] * SPARK_BUCKETS
    seconds = [0.0] * SPARK_BUCKETS
    ttft: list[list[float]] = [[] for _ in range(SPARK_BUCKETS)]
    width = SPARK_WINDOW / SPARK_BUCKETS
    for logged in completed:
        e: Any = logged.event
        bucket = min(int((e.timestamp - start) / width), SPARK_BUCKETS - 1)
        if bucket < 0:
            continue
        if e.processing_time:
            tokens[bucket] += e.token_count
            seconds[bucket] += e.processing_time
        if e.time_to_first_token is not None:
            ttft[bucket].append(e.time_to_first_token)
    return Throughput(
        tokens_per_second=[round(t / s, 2) if s else None
                           for t, s in zip(tokens, seconds, strict=True)],
        time_to_first_token=[round(sum(b) / len(b), 3) if b else None for b in ttft],
        replies=len(completed),
    )


async def projections(services: Services) -> list[dict[str, Any]]:
    """Each projection's position, the log's head, the lag, and a rebuild's progress."""
    head = await services.event_log.head()
    progress = services.projections.rebuild_progress
    return [
        {"name": name, "position": position, "head": head, "lag": max(0, head - position),
         "rebuilding": name in progress, "rebuilt_to": progress.get(name)}
        for name, position in services.projections.positions().items()
    ]


async def followers(services: Services) -> list[dict[str, Any]]:
    """Followers of the log outside the runner, read-only: the vector index (its own
    position file, DATA_DIR/vectors.sqlite; it embeds in the background and is not rebuilt
    from here). `available` is False when the index could not be opened."""
    follower = services.vector_follower
    head = await services.event_log.head()
    if follower is None:
        return [{"name": "vectors", "available": False, "position": None, "head": head,
                 "lag": None}]
    position = await anyio.to_thread.run_sync(follower.position)
    return [{"name": follower.name, "available": True, "position": position, "head": head,
             "lag": max(0, head - position)}]


def rebuild(services: Services, name: str) -> None:
    if name not in services.projections.names:
        raise NotFound("projection")
    services.projections.request_rebuild(name)


async def dashboard(services: Services) -> dict[str, Any]:
    db = services.read_db
    chain_position, chain_hash = await hashchain.head_hash(db)
    shown = await projections(services)
    actor = services.actor
    return {
        "users": await users_read.count_users(db),
        "sessions": await sessions_read.count_sessions(db),
        "messages": await messages_read.count_messages(db),
        "events": await services.event_log.head(),
        "queue_depth": actor.queue_depth,
        "generating": await generating_now(services),
        "model": services.model_id if services.model_loaded else None,
        "model_error": actor.load_error,
        "tokens_per_second_recent": actor.tokens_per_second_recent(),
        "throughput": await throughput(services),
        "projections": shown,
        "max_lag": max((p["lag"] for p in shown), default=0),
        "chain_position": chain_position,
        "chain_hash": chain_hash,
    }


# -- users ---------------------------------------------------------------------------------

USER_ROWS = """
SELECT u.id, u.username, u.email, u.display_name, u.is_admin, u.disabled, u.created_at,
       u.last_login_at, COALESCE(st.sessions, 0) AS sessions,
       COALESCE(st.messages, 0) AS messages, COALESCE(st.tokens, 0) AS tokens
FROM users u LEFT JOIN (
    SELECT s.owner_id, COUNT(DISTINCT s.id) AS sessions, COUNT(m.id) AS messages,
           SUM(CASE WHEN m.role = 'assistant' THEN m.token_count ELSE 0 END) AS tokens
    FROM sessions s LEFT JOIN messages m ON m.session_id = s.id
    WHERE s.deleted = 0 GROUP BY s.owner_id
) st ON st.owner_id = u.id
"""


def _user_row(row: Any) -> dict[str, Any]:
    user = dict(row)
    user["is_admin"] = bool(user["is_admin"])
    user["disabled"] = bool(user["disabled"])
    return user


async def list_users(services: Services, limit: int = 1000) -> list[dict[str, Any]]:
    """Every user with their usage (sessions, messages, tokens generated), oldest first."""
    async with services.read_db.execute(USER_ROWS + " ORDER BY u.created_at, u.id LIMIT ?",
                                        (limit,)) as cursor:
        return [_user_row(row) for row in await cursor.fetchall()]


async def get_user(services: Services, user_id: str) -> dict[str, Any]:
    uuid = _user_uuid(user_id)
    async with services.read_db.execute(USER_ROWS + " WHERE u.id = ?",
                                        (str(uuid),)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise NotFound("user")
    return _user_row(row)


def _user_uuid(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("user") from None


async def _administer(services: Services, command: Callable[[UUID, UUID | None], int],
                      admin_id: str, user_id: str) -> dict[str, Any]:
    uuid = _user_uuid(user_id)
    try:
        position = await services.command(command, uuid, UUID(admin_id))
    except domain_errors.LastAdmin:
        raise Conflict("last_admin", N_("There must always be an active administrator;"
                                        " make someone else admin first.")) from None
    except domain_errors.NotFound:
        raise NotFound("user") from None
    # Settled: the read models (hence every token check) include the change from now on.
    await services.settle(position)
    return await get_user(services, str(uuid))


async def disable_user(services: Services, admin_id: str, user_id: str) -> dict[str, Any]:
    """The user's tokens and browser sessions stop working at once; their queued and
    running replies are cancelled (through the chat's own cancel path)."""
    user = await _administer(services, services.chat.disable_user, admin_id, user_id)
    async with services.read_db.execute(
        "SELECT DISTINCT m.session_id FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE s.owner_id = ? AND s.deleted = 0 AND m.status IN ('queued', 'streaming')",
        (user["id"],),
    ) as cursor:
        open_sessions = [row[0] for row in await cursor.fetchall()]
    for session_id in open_sessions:
        with contextlib.suppress(NotFound):  # deleted meanwhile
            await chats.cancel_reply(services, user["id"], session_id)
    return user


async def enable_user(services: Services, admin_id: str, user_id: str) -> dict[str, Any]:
    """The user can sign in again (the tokens revoked by disabling stay revoked)."""
    return await _administer(services, services.chat.enable_user, admin_id, user_id)


async def grant_admin(services: Services, admin_id: str, user_id: str) -> dict[str, Any]:
    return await _administer(services, services.chat.grant_admin, admin_id, user_id)


async def revoke_admin(services: Services, admin_id: str, user_id: str) -> dict[str, Any]:
    """Refused (Conflict last_admin) when it would leave no active administrator."""
    return await _administer(services, services.chat.revoke_admin, admin_id, user_id)


# -- the event browser ---------------------------------------------------------------------


@dataclass
class EventQuery:
    """The browser's filters as typed by the admin (kept to refill the form and links)."""

    type: str = ""
    aggregate: str = ""
    user: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> EventQuery:
        return cls(**{key: str(values.get(key) or "").strip()
                      for key in ("type", "aggregate", "user", "since", "until")})

    def params(self) -> dict[str, str]:
        return {key: value for key, value in vars(self).items() if value}


@dataclass
class EventPage:
    events: list[dict[str, Any]]
    query: EventQuery
    head: int
    has_older: bool = False
    has_newer: bool = False

    @property
    def first(self) -> int:
        return int(self.events[0]["position"]) if self.events else 0

    @property
    def last(self) -> int:
        return int(self.events[-1]["position"]) if self.events else self.head


def _filter(browser: EventBrowser, query: EventQuery) -> EventFilter:
    where = EventFilter()
    if query.type:
        where.types = resolve_type(query.type)
    if query.aggregate:
        try:
            where.aggregate = UUID(query.aggregate)
        except ValueError:
            raise InvalidInput("aggregate", N_("must be an aggregate id (a UUID).")) from None
    if query.user:
        where.user = browser.find_user(query.user)
    if query.since:
        where.since = parse_time(query.since, "since")
    if query.until:
        where.until = parse_time(query.until, "until")
    return where


async def browse_events(services: Services, query: EventQuery, after: int | None = None,
                        before: int | None = None, limit: int = PAGE_SIZE) -> EventPage:
    """A page of matching events in store order: after `after`, or else the newest ones
    before `before` (the newest of all when neither is given)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("limit", fields.between(1, MAX_PAGE))

    def work(browser: EventBrowser) -> tuple[list[LoggedEvent], bool, bool, int]:
        where = _filter(browser, query)
        if after is not None:
            found = browser.select(where, after=after, limit=limit)
        else:
            found = browser.select(where, before=before, limit=limit, newest_first=True)
        older = newer = False
        if found:
            older = bool(browser.positions(where, before=found[0].position, limit=1,
                                           newest_first=True))
            newer = bool(browser.positions(where, after=found[-1].position, limit=1))
        elif after is not None:
            older = bool(browser.positions(where, before=after + 1, limit=1,
                                           newest_first=True))
        return found, older, newer, browser.log_head()

    found, older, newer, head = await _browse(services, work)
    return EventPage([shown_event(item) for item in found], query, head, older, newer)


async def events_after(services: Services, query: EventQuery, after: int, upto: int,
                       limit: int = MAX_PAGE) -> list[dict[str, Any]]:
    """Matching events with after < position <= upto (the first `limit`), for the tail."""
    def work(browser: EventBrowser) -> list[LoggedEvent]:
        return browser.select(_filter(browser, query), after=after, before=upto + 1,
                              limit=limit)
    return [shown_event(item) for item in await _browse(services, work)]


def event_types() -> tuple[str, ...]:
    """Every event type, "Aggregate.Event", for the browser's type filter."""
    return known_types()


# -- sessions and time travel --------------------------------------------------------------


async def list_sessions(services: Services, user_id: str | None = None,
                        limit: int = 200) -> list[dict[str, Any]]:
    """Recent sessions of everyone (or one user), deleted ones included: admins audit."""
    sql = ("SELECT s.id, s.title, s.owner_id, u.username, s.created_at, s.updated_at,"
           " s.message_count, s.deleted FROM sessions s LEFT JOIN users u ON u.id = s.owner_id")
    params: list[Any] = []
    if user_id:
        sql += " WHERE s.owner_id = ?"
        params.append(str(_user_uuid(user_id)))
    sql += " ORDER BY s.updated_at DESC, s.id LIMIT ?"
    params.append(limit)
    async with services.read_db.execute(sql, params) as cursor:
        return [dict(row) for row in await cursor.fetchall()]


class SessionEventCache:
    """Decoded events of the sessions being looked at, newest-used kept.

    Decoding is most of what time travel costs (a long chat has thousands of token
    events), and scrubbing asks for the same session again and again: events never change
    once stored, so each request only reads and decodes what was appended since."""

    def __init__(self, max_events: int = 200_000) -> None:
        self.max_events = max_events
        self._sessions: OrderedDict[tuple[str, UUID], tuple[LoggedEvent, ...]] = OrderedDict()

    async def events(self, services: Services, session_id: UUID) -> tuple[LoggedEvent, ...]:
        key = (store_key(services.settings), session_id)
        known = self._sessions.get(key, ())
        after = known[-1].position if known else 0
        while True:
            page = await services.event_log.of_originator(session_id, after, EVENT_PAGE)
            known += tuple(page)
            if len(page) < EVENT_PAGE:
                break
            after = page[-1].position
        if known and len(known) <= self.max_events:
            self._sessions[key] = known
            self._sessions.move_to_end(key)
            while sum(len(kept) for kept in self._sessions.values()) > self.max_events:
                self._sessions.popitem(last=False)
        return known


SESSION_EVENTS = SessionEventCache()


async def session_events(services: Services, session_id: str,
                         upto: int | None = None) -> list[LoggedEvent]:
    """A chat session's events in log order (up to position `upto`); NotFound unless the
    id is a chat session's (deleted ones included)."""
    uuid = chats.session_uuid(session_id)
    found = await SESSION_EVENTS.events(services, uuid)
    if not found or type(found[0].event).__qualname__ != "ChatSession.Started":
        raise NotFound("session")
    if upto is None:
        return list(found)
    return [logged for logged in found if logged.position <= upto]


@dataclass(frozen=True)
class Frame:
    """One step of the time-travel slider: the moment and the event that led to it."""

    moment: Moment
    event: dict[str, Any]
    step: int
    positions: list[int]


async def frame(services: Services, session_id: str, step: int | None = None,
                at: int | None = None) -> Frame:
    """The session as it stood after its `step`-th event (0 = its start), or at position
    `at` (the last event at or before it); the last event when neither is given."""
    events = await session_events(services, session_id)
    positions = [logged.position for logged in events]
    if step is None:
        step = len(positions) - 1
        if at is not None:
            step = max(0, sum(1 for p in positions if p <= at) - 1)
    step = min(max(step, 0), len(positions) - 1)
    return Frame(fold(events, positions[step]), shown_event(events[step]), step, positions)


async def timeline(services: Services, session_id: str, at: int | None) -> dict[str, Any]:
    """The session's events; with `at`, the session and its messages as they stood then
    (GET /api/admin/sessions/{id}/timeline/?at=)."""
    events = await session_events(services, session_id)
    answer: dict[str, Any] = {
        "session_id": str(chats.session_uuid(session_id)),
        "events": [shown_event(item) for item in events],
        "at": at,
    }
    if at is not None:
        moment = fold(events, at)
        answer.update(position=moment.position, session=moment.session,
                      messages=moment.messages)
    return answer
