"""Streams watching one chat share one read of the log per change (app/stream_hub.py).

In-process tests drive `follow` streams by hand over a real application and the real log
reader of each store, so every interleaving they assert on is the one they set up; one
test watches the real server's HTTP streams of one chat while the real model replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from app.config import Settings
from app.event_log import LoggedEvent
from app.event_store import EventLogReader, event_store_env, open_event_log
from app.stream_hub import ChatFeeds, Subscription, follow
from app.watch import ChangeWatch, PositionWatch
from domain.application import ChatApplication
from domain.sessions import ChatSession
from tests.postgres import both_stores, event_store_url
from tests.server import Api
from tests.test_domain import CONFIG, OUTCOME
from tests.test_streaming import post, read_until_end

pytestmark = both_stores

GUARD = 60.0  # a stream that never gets its event fails the test instead of hanging it
WORDS = ["부산에서 ", "꼭 ", "가 봐야 ", "할 곳은 ", "해운대, ", "감천 문화 마을, ", "자갈치 ",
         "시장입니다. ", "맛있는 ", "돼지국밥도 ", "드셔 ", "보세요. "]


class WatchedLog:
    """The real log reader, counting reads by who made them (a chat feed or a stream), and
    able to hold the feeds' reads back: a test decides when a feed reads, which the load
    of a real server decides otherwise."""

    def __init__(self, log: EventLogReader) -> None:
        self.log = log
        self.reads: Counter[str] = Counter()
        self.feed_gate: asyncio.Event | None = None

    async def head(self) -> int:
        return await self.log.head()

    async def of_originator(self, originator_id: UUID, after: int, limit: int = 1000
                            ) -> list[LoggedEvent]:
        task = asyncio.current_task()
        by_feed = task is not None and task.get_name().startswith("chat feed")
        self.reads["feed" if by_feed else "stream"] += 1
        if by_feed and self.feed_gate is not None:
            await self.feed_gate.wait()
        return await self.log.of_originator(originator_id, after, limit)

    async def of_originator_before(self, originator_id: UUID, before: int, limit: int = 500
                                   ) -> list[LoggedEvent]:
        return await self.log.of_originator_before(originator_id, before, limit)

    async def select(self, after: int, limit: int, type_name: str | None = None,
                     originator_id: UUID | None = None) -> list[LoggedEvent]:
        return await self.log.select(after, limit, type_name, originator_id)

    async def close(self) -> None:
        await self.log.close()


@dataclass
class Chat:
    """A chat with a reply being written, and the streams watching it."""

    app: ChatApplication
    session_id: UUID
    reply_id: UUID
    started: int  # the position of the reply's start
    streams: list[Stream] = field(default_factory=list)

    def token(self, text: str) -> int:
        def add(session: ChatSession) -> None:
            session.add_tokens(self.reply_id, text, 1)
        return self.app.change_reply(self.session_id, add)

    def complete(self) -> int:
        return self.app.change_reply(self.session_id,
                                     lambda s: s.complete_reply(self.reply_id, **OUTCOME))


@dataclass
class Stream:
    after: int
    sub: Subscription
    events: AsyncGenerator[LoggedEvent, None]
    got: list[LoggedEvent] = field(default_factory=list)

    @property
    def subscribed(self) -> bool:
        return self.sub.feed is not None

    async def pull(self, n: int = 1) -> None:
        for _ in range(n):
            self.got.append(await asyncio.wait_for(anext(self.events), GUARD))

    async def pull_to(self, position: int) -> None:
        while not self.got or self.got[-1].position < position:
            await self.pull()


@dataclass
class Hub:
    feeds: ChatFeeds
    log: WatchedLog
    changes: ChangeWatch
    settings: Settings

    def open(self, chat: Chat, after: int) -> Stream:
        sub = Subscription(after)
        stream = Stream(after, sub, follow(self.feeds, chat.session_id, sub))
        chat.streams.append(stream)
        return stream

    async def truth(self, chat: Chat, after: int) -> list[tuple[Any, ...]]:
        return same(await self.log.log.of_originator(chat.session_id, after))

    async def check(self, chat: Chat) -> None:
        """Every stream got each event of the chat after its position once, in log order."""
        for stream in chat.streams:
            assert same(stream.got) == await self.truth(chat, stream.after)


def same(logged: list[LoggedEvent]) -> list[tuple[Any, ...]]:
    return [(e.position, type(e.event).__qualname__, vars(e.event)) for e in logged]


@pytest.fixture
def settings(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, event_store=event_store_url(request, store))


@pytest.fixture
def app(settings: Settings) -> Iterator[ChatApplication]:
    chat = ChatApplication(env=event_store_env(settings))
    yield chat
    chat.close()


@asynccontextmanager
async def hub(app: ChatApplication, settings: Settings, **limits: int) -> AsyncIterator[Hub]:
    loop = asyncio.get_running_loop()
    changes, head = ChangeWatch(loop), PositionWatch(loop, app.head())
    app.add_change_listener(changes.changed_threadsafe)
    app.add_head_listener(head.advance_threadsafe)
    log = WatchedLog(await open_event_log(settings, app))
    try:
        yield Hub(ChatFeeds(log, changes, head, **limits), log, changes, settings)
    finally:
        await log.close()


def new_chat(app: ChatApplication) -> Chat:
    user = app.register_user(f"u{uuid4().hex[:10]}", f"{uuid4().hex[:10]}@example.com", "hash")
    session_id, _ = app.start_session(user.id, "함께 보는 대화", CONFIG)
    _, reply_id, _ = app.post_message(session_id, user.id, "부산 여행지를 알려 주세요", 1)
    started = app.change_reply(session_id, lambda s: s.start_reply(reply_id, 12, 0))
    return Chat(app, session_id, reply_id, started)


async def join(chat: Chat, streams: list[Stream], word: str) -> int:
    """Streams that replayed the chat take the next event from the feed (they join it
    when they are asked for more than they read)."""
    position = chat.token(word)
    for stream in streams:
        await stream.pull_to(position)
        assert stream.subscribed
    return position


async def joined(h: Hub, chat: Chat, count: int) -> list[Stream]:
    """`count` streams that replayed the chat from its start, then joined its feed."""
    streams = [h.open(chat, 0) for _ in range(count)]
    for stream in streams:  # each replays the chat on its own
        await stream.pull_to(chat.started)
    await join(chat, streams, WORDS[0])
    return streams


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until the condition holds (the other tasks make it true)."""
    deadline = asyncio.get_running_loop().time() + GUARD
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "never came true"
        await asyncio.sleep(0.01)


async def close_all(chat: Chat) -> None:
    for stream in chat.streams:
        await stream.events.aclose()


def test_streams_on_one_chat_get_the_same_events_from_one_read_per_change(
        app: ChatApplication, settings: Settings) -> None:
    async def run() -> None:
        async with hub(app, settings) as h:
            chat = new_chat(app)
            streams = await joined(h, chat, 5)
            assert len(h.feeds.feeds[chat.session_id].subscribers) == 5
            h.log.reads.clear()
            for word in WORDS[1:]:
                position = chat.token(word)
                for stream in streams:
                    await stream.pull_to(position)
            end = chat.complete()
            for stream in streams:
                await stream.pull_to(end)
            # One read per commit, by the feed; none by the streams.
            assert h.log.reads == {"feed": len(WORDS)}
            await h.check(chat)
            assert len({id(s.got[-1].event) for s in streams}) == 1  # decoded once
            text = "".join(e.event.text for e in streams[0].got  # type: ignore[attr-defined]
                           if type(e.event).__name__ == "TokensGenerated")
            assert text == "".join(WORDS)
            await close_all(chat)

    asyncio.run(run())


@pytest.mark.parametrize("keep", [256, 2])
def test_a_stream_resuming_mid_reply_gets_every_event_once_in_order(
        app: ChatApplication, settings: Settings, keep: int) -> None:
    """The feed read on while the late stream replayed: it joins with the feed's recent
    events (keep 256), or reads the log again when the feed kept too few (keep 2)."""
    async def run() -> None:
        async with hub(app, settings, keep=keep) as h:
            chat = new_chat(app)
            live = h.open(chat, chat.started - 1)
            await live.pull_to(chat.started)
            await join(chat, [live], WORDS[0])
            for word in WORDS[1:3]:
                await live.pull_to(chat.token(word))
            # A client comes back with an old Last-Event-ID: from before its question.
            late = h.open(chat, chat.started - 3)
            h.log.reads.clear()
            await late.pull()  # it read the log up to its end, and has sent one event
            assert h.log.reads == {"stream": 1}
            for word in WORDS[3:6]:  # meanwhile the feed reads and hands out three more
                await live.pull_to(chat.token(word))
            await late.pull_to(live.got[-1].position)
            assert h.log.reads == {"stream": 1 if keep >= 3 else 2, "feed": 3}
            for word in WORDS[6:]:
                chat.token(word)
            end = chat.complete()
            await live.pull_to(end)
            await late.pull_to(end)
            await h.check(chat)
            await close_all(chat)

    asyncio.run(run())


def test_a_stream_that_read_past_the_feed_skips_what_it_has(
        app: ChatApplication, settings: Settings) -> None:
    async def run() -> None:
        async with hub(app, settings) as h:
            chat = new_chat(app)
            live = h.open(chat, chat.started - 1)
            await live.pull_to(chat.started)
            await join(chat, [live], WORDS[0])
            h.log.feed_gate = gate = asyncio.Event()  # the feed's next read waits
            chat.token(WORDS[1])
            latest = chat.token(WORDS[2])
            late = h.open(chat, 0)
            await late.pull_to(latest)  # replayed past the feed
            end = chat.complete()
            late_end = asyncio.create_task(late.pull_to(end))
            await until(lambda: late.subscribed)
            assert h.feeds.feeds[chat.session_id].read_to < latest
            gate.set()
            await late_end
            await live.pull_to(end)
            await h.check(chat)
            await close_all(chat)

    asyncio.run(run())


def test_streams_resuming_between_the_chats_events_join_the_feed(
        app: ChatApplication, settings: Settings) -> None:
    """Pages resume from the log's head, which other chats move: a feed started at such a
    position, and streams resuming a little before it, with no event of the chat between."""
    async def run() -> None:
        async with hub(app, settings) as h:
            chat, elsewhere = new_chat(app), new_chat(app)
            first = h.open(chat, elsewhere.token(WORDS[0]))
            pulling = asyncio.create_task(first.pull())
            await until(lambda: first.subscribed)
            before = h.open(chat, elsewhere.started)
            pulling_too = asyncio.create_task(before.pull())
            await until(lambda: before.subscribed)
            assert h.log.reads["stream"] == 2  # each read the log once, then joined
            position = chat.token(WORDS[1])
            await pulling
            await pulling_too
            for stream in (first, before):
                await stream.pull_to(position)
            await h.check(chat)
            await close_all(chat)

    asyncio.run(run())


def test_a_stream_from_beyond_the_log_does_not_hide_events_from_the_others(
        app: ChatApplication, settings: Settings) -> None:
    """A client may send any Last-Event-ID: the feed it starts must not begin there."""
    async def run() -> None:
        async with hub(app, settings) as h:
            chat = new_chat(app)
            ahead = h.open(chat, 10**12)
            waiting = asyncio.create_task(ahead.pull())
            await until(lambda: ahead.subscribed)
            other = h.open(chat, chat.started - 1)
            await other.pull_to(chat.started)
            end = await join(chat, [other], WORDS[0])
            await other.pull_to(end)
            await h.check(chat)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await close_all(chat)
            assert h.feeds.feeds == {}

    asyncio.run(run())


def test_a_stuck_stream_does_not_hold_back_the_others(
        app: ChatApplication, settings: Settings) -> None:
    async def run() -> None:
        async with hub(app, settings, bound=4) as h:
            chat = new_chat(app)
            streams = await joined(h, chat, 3)
            stuck, *others = streams
            for word in WORDS[1:]:  # the stuck stream's client reads nothing meanwhile
                position = chat.token(word)
                for stream in others:
                    await stream.pull_to(position)
            # The others got every token while it was stuck; the feed dropped it when its
            # queue was full, and went on.
            for stream in others:
                assert [e.event.text for e in stream.got[-len(WORDS):]] == WORDS  # type: ignore[attr-defined]
                assert stream.subscribed
            assert not stuck.subscribed and len(stuck.sub.queue) == 4
            # Reading again, it gets the rest from the log, then joins the feed again.
            await stuck.pull_to(position)
            await join(chat, streams, "끝.")
            end = chat.complete()
            for stream in streams:
                await stream.pull_to(end)
            await h.check(chat)
            await close_all(chat)

    asyncio.run(run())


def test_streams_that_end_leave_no_feed_behind(app: ChatApplication, settings: Settings
                                              ) -> None:
    async def run() -> None:
        async with hub(app, settings, bound=2) as h:
            chat = new_chat(app)
            streams = await joined(h, chat, 3)
            feed = h.feeds.feeds[chat.session_id]
            for word in WORDS[1:4]:  # the first stream falls behind and is dropped
                position = chat.token(word)
                for stream in streams[1:]:
                    await stream.pull_to(position)
            assert [s.subscribed for s in streams] == [False, True, True]
            for stream in streams:  # the clients go away
                await stream.events.aclose()
            assert h.feeds.feeds == {}
            await feed.task  # the feed's task ends, and with it its watch of the chat
            assert h.changes.watched == 0

            # Streams that end with the chat's deletion leave too.
            streams = [h.open(chat, chat.started) for _ in range(2)]
            for stream in streams:
                await stream.pull_to(position)
            await join(chat, streams, WORDS[4])
            feed = h.feeds.feeds[chat.session_id]
            user_id = app.get_session(chat.session_id).owner_id
            deleted = app.delete_session(chat.session_id, user_id)
            for stream in streams:
                await stream.pull_to(deleted)
                with pytest.raises(StopAsyncIteration):
                    await anext(stream.events)
            assert h.feeds.feeds == {}
            await feed.task
            assert h.changes.watched == 0

    asyncio.run(run())


def test_a_feed_that_cannot_read_hands_its_streams_back_to_the_log(
        app: ChatApplication, settings: Settings) -> None:
    """The log reader closed under the feed (as a dead database would): its streams read
    for themselves again and meet the error there, as a stream alone would."""
    async def run() -> None:
        async with hub(app, settings) as h:
            chat = new_chat(app)
            streams = await joined(h, chat, 2)
            feed = h.feeds.feeds[chat.session_id]
            await h.log.log.close()
            chat.token(WORDS[1])
            for stream in streams:
                with pytest.raises(Exception) as raised:
                    await stream.pull()
                assert not isinstance(raised.value, (AssertionError, TimeoutError))
            await feed.task
            assert h.feeds.feeds == {} and h.changes.watched == 0

    asyncio.run(run())


@pytest.mark.parametrize("seed", range(3))
def test_streams_joining_and_falling_behind_at_random_lose_and_repeat_nothing(
        app: ChatApplication, settings: Settings, seed: int) -> None:
    """Streams open from random old positions and read at random paces (falling behind a
    small bound), while the feed's reads are held back at random."""
    rng = random.Random(seed)

    async def pull(h: Hub, stream: Stream, target: int) -> None:
        pulling = asyncio.create_task(stream.pull_to(target))
        if h.log.feed_gate is not None:
            # Until it waits for the feed, which is held back.
            await until(lambda: pulling.done() or stream.sub.wake is not None)
            h.log.feed_gate.set()
            h.log.feed_gate = None
        await pulling

    async def run() -> None:
        async with hub(app, settings, bound=3, keep=2) as h:
            chat = new_chat(app)
            positions = [chat.started]
            for step in range(30):
                roll = rng.random()
                if roll < 0.35:
                    positions.append(chat.token(WORDS[step % len(WORDS)]))
                elif roll < 0.5:
                    h.open(chat, rng.choice([0, *positions]))
                elif roll < 0.6:
                    if h.log.feed_gate is None:
                        h.log.feed_gate = asyncio.Event()
                elif chat.streams:
                    stream = rng.choice(chat.streams)
                    target = rng.choice(positions)
                    if target > stream.after and (not stream.got
                                                  or stream.got[-1].position < target):
                        await pull(h, stream, target)
            end = chat.complete()
            for stream in chat.streams:
                await pull(h, stream, end)
            await h.check(chat)
            await close_all(chat)
            assert h.feeds.feeds == {}

    asyncio.run(run())


def test_streams_of_one_chat_over_http_get_identical_events(user: Api) -> None:
    """The real server and model: four clients watching one chat (three from before the
    reply, one from its question) read the same reply, event for event."""
    session = user.new_session(max_tokens=48, temperature=0.8)
    posted = post(user, session["id"], "부산 여행에서 꼭 가 봐야 할 곳을 알려 주세요.")
    reply_id = posted["reply"]["id"]
    with ThreadPoolExecutor(4) as pool:
        runs = [pool.submit(read_until_end, user, session["id"], reply_id,
                            posted["last_event_id"]) for _ in range(4)]
        seen = [run.result() for run in runs]
    again = read_until_end(user, session["id"], reply_id, posted["last_event_id"])
    assert again[-1]["event"] == "done"
    assert all(events == again for events in seen)
    tokens = [e for e in again if e["event"] == "token"]
    assert again[-1]["data"]["content"] == "".join(t["data"]["text"] for t in tokens)
