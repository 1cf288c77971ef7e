"""Event store throughput, SQLite vs PostgreSQL, in one run with the same workload.

Each writer thread owns a `ChatApplication` (as a separate web worker would; within one
process the application's lock serialises commands anyway) and drives realistic chats
through its commands: start a session, then per turn post a Korean message (which queues a
reply), start the reply, commit its tokens in batches of 8 (one event each, as the
inference actor commits them) and complete it. Every command is one commit; its time is
the append latency.

While they write, followers read the log the way the SSE streams do (app/streaming.py):
one per chat, woken by the application's change listener, reading the chat's events after
its last position through the app's `EventLogReader` (`of_originator`). "lag" is the time
from a commit's notification to its event decoded by the follower (0 when the follower's
read already found it). Afterwards every chat is read again from position 0 (a stream
opened with no `Last-Event-ID`, 8 at a time; the median of 5 rounds): the catch-up
read rate. Checked: every
follower read each event of its chat once, in version order, and all of them add up to the
events appended.

PostgreSQL is a throwaway cluster started here (Debian's initdb/pg_ctl, a unix socket in a
temporary directory; as root it runs as `nobody`), with `fsync=on` and
`synchronous_commit=on`: each commit waits for the disk, as SQLite's (WAL,
`synchronous=FULL`) does. Both stores live on the same file system.

    .venv/bin/python bench/store_throughput.py                  # 48 chats, 1 and 4 writers
    .venv/bin/python bench/store_throughput.py --chats 96 --threads 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.event_store import EventLogReader, event_store_env, open_event_log  # noqa: E402
from domain.application import ChatApplication  # noqa: E402
from domain.sessions import ChatSession  # noqa: E402

TITLE = "부산 여행 계획"
MESSAGE = "다음 주말에 부산에 가려고 해요. 해운대 근처에서 갈 만한 곳을 추천해 주세요."
# A reply's text, cut into pieces of 8 tokens' worth as the actor commits them.
REPLY = ("부산에 가신다면 해운대 해수욕장에서 아침 산책을 해 보세요. 동백섬 누리마루 "
         "전망대와 달맞이길도 가깝습니다. 점심에는 돼지국밥이나 밀면을 드셔 보시고, 오후에는 "
         "감천문화마을과 광안리의 야경을 추천합니다. ")
PIECES = [REPLY[i:i + 12] for i in range(0, len(REPLY), 12)]
CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.7,
          "top_p": 0.95, "max_tokens": 512}
CATCH_UP_READERS = 8
CATCH_UP_ROUNDS = 5  # the median is reported: the machine is shared
READ_BATCH = 1000  # app/streaming.py's


# -- a throwaway PostgreSQL cluster ----------------------------------------------------------
# Not tests/postgres.py's: that one imports pytest and runs with fsync=off.

def pg_bin() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=base))
        self.data = self.dir / "data"
        self.bin = pg_bin()
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("nobody")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", "env", f"HOME={self.dir}"]
        self.started = False

    def run(self, *args: str) -> None:
        done = subprocess.run([*self.prefix, *args], capture_output=True, text=True,
                              cwd=self.dir, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> Cluster:
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-k {self.dir} -c listen_addresses='' -c fsync=on"
                   " -c synchronous_commit=on -c full_page_writes=on")
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                 "-w", "-t", "60", "-o", options, "start")
        self.started = True
        return self

    def create_database(self) -> str:
        import psycopg

        name = f"bench_{uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.dir}"

    def stop(self) -> None:
        if self.started:
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


# -- writers ---------------------------------------------------------------------------------

@dataclass
class Writer:
    """One writer thread's application, its chats' commit times and its latencies."""

    app: ChatApplication
    owner: UUID
    latencies: list[float] = field(default_factory=list)
    error: BaseException | None = None

    def timed(self, command: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = command()
        self.latencies.append(time.perf_counter() - started)
        return result

    def write(self, chats: int, turns: int, batches: int) -> None:
        try:
            for _ in range(chats):
                self.chat(turns, batches)
        except BaseException as error:  # reported by the main thread
            self.error = error

    def chat(self, turns: int, batches: int) -> None:
        app, owner = self.app, self.owner
        session_id, _ = self.timed(lambda: app.start_session(owner, TITLE, CONFIG))
        outcome = {"token_count": 8 * batches, "processing_time": 1.5,
                   "time_to_first_token": 0.12, "model_version": "bench",
                   "model_params": {"temperature": 0.7}, "prompt_template": "chatml",
                   "finish_reason": "stop"}
        for _ in range(turns):
            _, reply_id, _ = self.timed(lambda: app.post_message(session_id, owner, MESSAGE, 0))

            def start(s: ChatSession, r: UUID = reply_id) -> None:
                s.start_reply(r, 42, 0)

            def complete(s: ChatSession, r: UUID = reply_id) -> None:
                s.complete_reply(r, **outcome)

            self.change(session_id, start)
            for i in range(batches):
                def tokens(s: ChatSession, r: UUID = reply_id,
                           piece: str = PIECES[i % len(PIECES)]) -> None:
                    s.add_tokens(r, piece, 8)

                self.change(session_id, tokens)
            self.change(session_id, complete)

    def change(self, session_id: UUID, change: Callable[[ChatSession], None]) -> None:
        self.timed(lambda: self.app.change_reply(session_id, change))


# -- followers -------------------------------------------------------------------------------

@dataclass
class Follower:
    """One chat's stream: woken by commits of its chat, reads what follows its position."""

    session_id: UUID
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    after: int = 0
    version: int = 0
    read: int = 0
    out_of_order: int = 0
    lags: list[float] = field(default_factory=list)


class Followers:
    def __init__(self, reader: EventLogReader, loop: asyncio.AbstractEventLoop) -> None:
        self.reader = reader
        self.loop = loop
        self.by_session: dict[UUID, Follower] = {}
        self.tasks: list[asyncio.Task[None]] = []
        # Per chat, (commit's head, when its listener ran), appended by the writer threads.
        self.commits: dict[UUID, list[tuple[int, float]]] = {}
        self.done = asyncio.Event()

    def changed_threadsafe(self, head: int, ids: set[UUID]) -> None:
        now = time.perf_counter()
        for session_id in ids:
            self.commits.setdefault(session_id, []).append((head, now))
        self.loop.call_soon_threadsafe(self.wake, ids)

    def wake(self, ids: set[UUID]) -> None:
        for session_id in ids:
            follower = self.by_session.get(session_id)
            if follower is None:
                follower = self.by_session[session_id] = Follower(session_id)
                self.tasks.append(asyncio.create_task(self.follow(follower)))
            follower.woken.set()

    async def follow(self, follower: Follower) -> None:
        while True:
            follower.woken.clear()
            batch = await self.reader.of_originator(follower.session_id, follower.after,
                                                    READ_BATCH)
            now = time.perf_counter()
            commits = self.commits.get(follower.session_id, [])
            heads = [head for head, _ in commits]
            for logged in batch:
                version = logged.event.originator_version
                if version != follower.version + 1:
                    follower.out_of_order += 1
                follower.version, follower.after = version, logged.position
                follower.read += 1
                at = bisect.bisect_left(heads, logged.position)
                follower.lags.append(max(0.0, now - commits[at][1]) if at < len(commits)
                                     else 0.0)
            if len(batch) == READ_BATCH:
                continue
            if self.done.is_set() and not follower.woken.is_set():
                return
            waiting = asyncio.create_task(follower.woken.wait())
            finished = asyncio.create_task(self.done.wait())
            await asyncio.wait({waiting, finished}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            finished.cancel()

    async def finish(self) -> None:
        """The writers are done: each follower reads what is left, then stops."""
        self.done.set()
        await asyncio.gather(*self.tasks)


# -- one store, one writer count -------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    store: str
    threads: int
    events: int
    commits: int
    seconds: float
    append_p50_ms: float
    append_p99_ms: float
    followed: int
    lag_p50_ms: float
    lag_p99_ms: float
    catch_up_per_s: float
    problems: list[str]

    @property
    def appended_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def streamed_per_s(self) -> float:
        return self.followed / self.seconds


async def catch_up(reader: EventLogReader, sessions: list[UUID]) -> tuple[int, float]:
    """Every chat read from position 0, `CATCH_UP_READERS` at a time: (events, seconds)."""
    queue = list(sessions)
    read = 0

    async def reader_task() -> None:
        nonlocal read
        while queue:
            session_id, after = queue.pop(), 0
            while True:
                batch = await reader.of_originator(session_id, after, READ_BATCH)
                for logged in batch:
                    _ = logged.event  # decoded, as a stream sends it
                read += len(batch)
                if len(batch) < READ_BATCH:
                    break
                after = batch[-1].position

    started = time.perf_counter()
    await asyncio.gather(*(reader_task() for _ in range(CATCH_UP_READERS)))
    return read, time.perf_counter() - started


async def measure(store: str, settings: Settings, threads: int, chats: int, turns: int,
                  batches: int) -> Result:
    env = event_store_env(settings)
    writers = []
    for i in range(threads):
        app = ChatApplication(env=env)
        user = app.register_user(f"작성자{i}_{uuid4().hex[:6]}", f"w{i}@example.com", "x")
        writers.append(Writer(app, user.id))
    reader = await open_event_log(settings, writers[0].app)
    followers = Followers(reader, asyncio.get_running_loop())
    for writer in writers:
        writer.app.add_change_listener(followers.changed_threadsafe)
    first = writers[0].app.head()
    shares = [chats // threads + (1 if i < chats % threads else 0) for i in range(threads)]
    runs = [threading.Thread(target=w.write, args=(n, turns, batches))
            for w, n in zip(writers, shares, strict=True)]
    started = time.perf_counter()
    for run in runs:
        run.start()
    def join() -> None:
        for run in runs:
            run.join()

    await asyncio.to_thread(join)
    seconds = time.perf_counter() - started
    await followers.finish()
    events = writers[0].app.head() - first
    problems = [f"writer: {w.error!r}" for w in writers if w.error is not None]
    sessions = [s for s in followers.by_session if s in followers.commits]
    chat_followers = list(followers.by_session.values())
    followed = sum(f.read for f in chat_followers)
    if followed != events:
        problems.append(f"followers read {followed} events of {events} appended")
    if disorder := sum(f.out_of_order for f in chat_followers):
        problems.append(f"{disorder} events read out of version order")
    rates = []
    for _ in range(CATCH_UP_ROUNDS):
        read, took = await catch_up(reader, sessions)
        rates.append(read / took)
    lags = [lag for f in chat_followers for lag in f.lags]
    latencies = [lat for w in writers for lat in w.latencies]
    await reader.close()
    for writer in writers:
        writer.app.close()
    return Result(store, threads, events, len(latencies), seconds,
                  percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
                  followed, percentile(lags, 0.5) * 1000, percentile(lags, 0.99) * 1000,
                  statistics.median(rates), problems)


# -- the run ---------------------------------------------------------------------------------

COLUMNS = [("appended ev/s", "appended_per_s", 0), ("append p50 ms", "append_p50_ms", 2),
           ("append p99 ms", "append_p99_ms", 2), ("streamed ev/s", "streamed_per_s", 0),
           ("lag p50 ms", "lag_p50_ms", 2), ("lag p99 ms", "lag_p99_ms", 2),
           ("catch-up ev/s", "catch_up_per_s", 0)]


def show(results: list[Result]) -> None:
    print(f"{'store':11}{'writers':>8}{'events':>8}" +
          "".join(f"{label:>15}" for label, _, _ in COLUMNS))
    for r in results:
        print(f"{r.store:11}{r.threads:>8}{r.events:>8}" +
              "".join(f"{getattr(r, key):>15.{digits}f}" for _, key, digits in COLUMNS))
    by = {(r.store, r.threads): r for r in results}
    for threads in sorted({r.threads for r in results}):
        pg, lite = by.get(("postgresql", threads)), by.get(("sqlite", threads))
        if pg and lite:
            ratios = "".join(f"{getattr(pg, key) / getattr(lite, key):>14.2f}x"
                             if getattr(lite, key) else f"{'-':>15}" for _, key, _ in COLUMNS)
            print(f"{'PG/SQLite':11}{threads:>8}{'':>8}{ratios}")


async def run(base: Path, threads: list[int], chats: int, turns: int, batches: int
              ) -> list[Result]:
    cluster = Cluster(base).start()
    try:
        results = []
        for n in threads:
            for store in ("sqlite", "postgresql"):
                data = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=base))
                try:
                    url = cluster.create_database() if store == "postgresql" else ""
                    settings = Settings(data_dir=data, event_store=url)
                    result = await measure(store, settings, n, chats, turns, batches)
                finally:
                    shutil.rmtree(data, ignore_errors=True)
                print(f"{time.strftime('%H:%M:%S')} {store}, {n} writer(s): "
                      f"{result.events} events in {result.seconds:.1f} s", file=sys.stderr,
                      flush=True)
                results.append(result)
        return results
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--chats", type=int, default=48, help="chats per run (split among "
                        "the writers)")
    parser.add_argument("--turns", type=int, default=3, help="replies per chat")
    parser.add_argument("--batches", type=int, default=16,
                        help="token events per reply (8 tokens each)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4],
                        help="writer thread counts")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where both stores live (the same file system for both)")
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(run(args.dir, args.threads, args.chats, args.turns, args.batches))
    per_chat = 1 + args.turns * (args.batches + 4)
    print(f"workload: {args.chats} chats x {args.turns} replies x {args.batches} token "
          f"events ({per_chat} events a chat); load average "
          f"{Path('/proc/loadavg').read_text().split()[0]}; "
          f"{time.monotonic() - started:.0f} s")
    show(results)
    problems = [f"{r.store}/{r.threads}: {p}" for r in results for p in r.problems]
    for problem in problems:
        print("problem:", problem)
    if not problems:
        print("checked: every chat's follower read each of its events once, in order")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
