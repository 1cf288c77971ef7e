"""Load drill: idle SSE clients and posting users must not slow down the streaming replies.

One real server (uvicorn, the real model, SQLite files in a temp dir; one decoding thread,
see server_env). Each round warms every decoding slot, then measures an unloaded phase
(the streaming replies, nothing else) and a loaded phase (the same replies while many idle
SSE clients sit on other chats and users post messages, each post queueing a reply that
waits behind the measured ones; what is left of that backlog is cancelled afterwards).
Rounds alternate, so both phases see the same machine load. Printed per phase: tokens/s
of the streaming replies, p50/p99 gap between their token events as received, first-token
time, the server's RSS and CPU seconds, the drill's own CPU, the load average.
Targets: tokens/s loaded >= 0.9x unloaded; p99 gap loaded <= unloaded + 50 ms.
Checked: every streamed reply reassembles to its stored text, idle clients receive no
event of another chat and stay open, every posted reply ends, no response is 5xx.
Figures: docs/reliability.md, "Load".

    .venv/bin/python -m drills.load          # 1,000 idle clients, 4 replies, 20 posters, 3 rounds
    .venv/bin/python -m drills.load --posters 0 --rounds 2 --profile /tmp/server.prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import ServerProcess  # noqa: E402

PROMPT = "서울에 대해 여러 문장으로 자세히 설명해 주세요."
POST_TEXT = "짧게 한 문장으로 대답해 주세요."
STREAMS_PER_IDLE_USER = 100
TIMEOUT = 120.0


def raise_open_files() -> int:
    """1,000 connections on each side: lift the soft limit to the hard one (the server,
    a child, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def server_env(idle_users_cap: int, replies: int) -> dict[str, str]:
    return {
        # The measured replies hold every decoding slot; the posters' replies queue behind
        # them (sharing the batch would slow the measured ones down by design, not load).
        "N_PARALLEL": str(replies),
        "REGISTER_MAX_PER_ADDRESS": "100000",
        "MAX_STREAMS_PER_USER": str(idle_users_cap),
        # One decoding thread: on a shared, oversubscribed machine llama.cpp's two threads
        # wait on each other at every barrier (10 tokens: 24 s with 2 threads, 1.5 s with 1
        # at load average 20), which would drown what this drill measures.
        "N_THREADS": "1",
        # The posting users queue replies faster than the model answers them.
        "MAX_QUEUE": "10000", "MAX_QUEUED_PER_USER": "10000",
    }


# -- the server process, seen from /proc ----------------------------------------------------

class ProfiledServer(ServerProcess):
    """The same server under cProfile (drills/profiled_server.py), profiling the loaded
    phases only; the profile is written when the server stops."""

    def __init__(self, data_dir: Path, profile: Path, **env: str) -> None:
        super().__init__(data_dir, **env)
        self.profile = profile

    def start(self, timeout: float = 60) -> ServerProcess:
        env = {**os.environ, "DATA_DIR": str(self.data_dir), **self.env,
               "PROFILE_OUT": str(self.profile)}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drills.profiled_server", "app.main:app",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        # uvicorn re-raises the signal after its shutdown: SIGTERM would end the process
        # before the profile is written; SIGINT unwinds as KeyboardInterrupt.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- clients --------------------------------------------------------------------------------

@dataclass
class Tally:
    """Every response status the drill saw, and anything that broke a check."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def seen(self, response: httpx.Response) -> httpx.Response:
        self.statuses[response.status_code] += 1
        return response

    def expect(self, response: httpx.Response, status: int, what: str) -> Any:
        self.seen(response)
        if response.status_code != status:
            raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
        return response.json()


@dataclass
class User:
    token: str
    sessions: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(http: httpx.AsyncClient, tally: Tally, name: str) -> User:
    response = await http.post("/api/auth/register/", json={
        "username": name, "email": f"{name}@example.com", "password": "비밀번호 여덟자 이상"})
    return User(tally.expect(response, 201, "register")["token"])


async def new_session(http: httpx.AsyncClient, tally: Tally, user: User,
                      **config: Any) -> str:
    response = await http.post("/api/sessions/", json=config, headers=user.headers)
    session_id = str(tally.expect(response, 201, "new session")["id"])
    user.sessions.append(session_id)
    return session_id


async def sse(response: httpx.Response) -> Any:
    """(event name, data, arrival time) for each event of a text/event-stream."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield name, json.loads(data), time.perf_counter()
            name, data = "message", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


@dataclass
class Reply:
    """One measured reply as its client saw it."""

    session_id: str
    reply_id: str = ""
    posted_at: float = 0.0
    accepted_at: float = 0.0
    token_times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    done_at: float = 0.0
    token_count: int = 0
    final_content: str | None = None
    end: str = ""

    @property
    def first_token(self) -> float:
        return self.token_times[0] - self.posted_at

    @property
    def tokens_per_second(self) -> float:
        """Decode speed as delivered: tokens after the first over the time to `done`."""
        span = self.done_at - self.token_times[0]
        return (self.token_count - 1) / span if span > 0 else 0.0

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]


async def stream_reply(http: httpx.AsyncClient, tally: Tally, user: User, session_id: str,
                       posted: asyncio.Event | None = None) -> Reply:
    """Post the prompt, then follow the session's stream from just before the reply."""
    reply = Reply(session_id)
    reply.posted_at = time.perf_counter()
    body = tally.expect(await http.post(f"/api/sessions/{session_id}/messages/",
                                        json={"content": PROMPT}, headers=user.headers),
                        202, "post")
    reply.accepted_at = time.perf_counter()
    if posted is not None:
        posted.set()
    reply.reply_id = body["reply"]["id"]
    headers = {**user.headers, "Last-Event-ID": str(body["last_event_id"])}
    async with http.stream("GET", f"/api/sessions/{session_id}/stream/",
                           headers=headers) as response:
        tally.seen(response)
        if response.status_code != 200:
            raise RuntimeError(f"stream: {response.status_code}")
        async for name, data, at in sse(response):
            if data.get("reply_id") != reply.reply_id:
                continue
            if name == "token":
                reply.token_times.append(at)
                reply.pieces.append(data["text"])
            elif name in ("done", "error", "cancelled"):
                reply.done_at, reply.end = at, name
                reply.token_count = int(data.get("token_count", 0))
                reply.final_content = data.get("content")
                break
    return reply


@dataclass
class Idle:
    """An idle client: a stream on a chat where nothing happens."""

    status: int = 0
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ended_early: bool = False


async def idle_client(http: httpx.AsyncClient, tally: Tally, user: User, session_id: str,
                      record: Idle, opened: asyncio.Queue[None]) -> None:
    try:
        async with http.stream("GET", f"/api/sessions/{session_id}/stream/",
                               headers=user.headers) as response:
            tally.seen(response)
            record.status = response.status_code
            opened.put_nowait(None)
            async for name, data, _ in sse(response):
                record.events.append((name, data))
        record.ended_early = True  # the server closed a stream nobody asked to end
    except httpx.HTTPError as error:
        record.ended_early = True
        tally.problems.append(f"idle stream: {error!r}")
        opened.put_nowait(None)


async def poster(http: httpx.AsyncClient, tally: Tally, user: User, start: asyncio.Event,
                 stop: asyncio.Event, interval: float, rng: random.Random,
                 queued: list[tuple[User, str, str]]) -> None:
    """A user posting now and then (each post queues a reply), until `stop`."""
    await start.wait()
    session_id = user.sessions[-1]
    while not stop.is_set():
        response = tally.seen(await http.post(
            f"/api/sessions/{session_id}/messages/",
            json={"content": f"{POST_TEXT} ({rng.randint(0, 9999)})"}, headers=user.headers))
        if response.status_code == 202:
            queued.append((user, session_id, response.json()["reply"]["id"]))
        elif response.status_code >= 500:
            tally.problems.append(f"post: {response.status_code} {response.text[:200]}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval * (0.5 + rng.random()))
    # The model could not answer them all in time: the rest of the backlog is cancelled.
    tally.expect(await http.post(f"/api/sessions/{session_id}/cancel/", headers=user.headers),
                 202, "cancel")


# -- phases ---------------------------------------------------------------------------------

@dataclass
class Phase:
    profiled: bool = False  # the server's profiler (if any) runs during this phase
    replies: list[Reply] = field(default_factory=list)
    cpu: float = 0.0
    client_cpu: float = 0.0  # this drill's own, competing for the same cores
    rss: float = 0.0
    wall: float = 0.0
    load: float = 0.0
    posts: int = 0


async def sample_rss(pid: int, phase: Phase, stop: asyncio.Event) -> None:
    while not stop.is_set():
        phase.rss = max(phase.rss, rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def measure(pid: int, replies: Awaitable[list[Reply]], phase: Phase) -> None:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, phase, stop))
    cpu, started, client = cpu_seconds(pid), time.perf_counter(), time.process_time()
    if phase.profiled:
        os.kill(pid, signal.SIGUSR1)
    try:
        phase.replies += await asyncio.wait_for(replies, TIMEOUT)
    finally:
        if phase.profiled:
            os.kill(pid, signal.SIGUSR2)
    phase.cpu += cpu_seconds(pid) - cpu
    phase.client_cpu += time.process_time() - client
    phase.wall += time.perf_counter() - started
    phase.load = max(phase.load, load_average())
    stop.set()
    await sampler


async def settle(pid: int, window: float = 1.0, busy: float = 0.1) -> float:
    """Wait until the server has done with the streams just opened (headers go out before
    each stream's first read of the log): under `busy` CPU seconds per second."""
    started = time.perf_counter()
    while time.perf_counter() - started < TIMEOUT:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - before < busy * window:
            break
    return time.perf_counter() - started


async def wait_idle(http: httpx.AsyncClient, tally: Tally, admin: User) -> None:
    """Until the actor has nothing queued or generating (the posters' backlog), as long
    as the backlog keeps shrinking."""
    deadline, left = time.monotonic() + TIMEOUT, -1
    while time.monotonic() < deadline:
        stats = tally.expect(await http.get("/api/admin/stats/", headers=admin.headers),
                             200, "stats")
        if not stats["queue_depth"] and not stats["generating"]:
            return
        if stats["queue_depth"] != left:
            deadline, left = time.monotonic() + TIMEOUT, stats["queue_depth"]
        await asyncio.sleep(0.2)
    raise RuntimeError("the posters' replies were not answered in time")


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class Setup:
    admin: User
    measured: list[User]
    posters: list[User]
    idle: list[tuple[User, str]]


async def prepare(http: httpx.AsyncClient, tally: Tally, idle: int, replies: int,
                  posters: int) -> Setup:
    admin = await register(http, tally, "load_admin")  # the first user: the admin
    measured = [await register(http, tally, f"load_reader{i}") for i in range(replies)]
    posting = [await register(http, tally, f"load_poster{i}") for i in range(posters)]
    idle_users = [await register(http, tally, f"load_idle{i}")
                  for i in range(-(-idle // STREAMS_PER_IDLE_USER))]
    sessions: list[tuple[User, str]] = []
    for start in range(0, idle, 50):  # 50 at a time: quick, without a burst of 1,000
        batch = [idle_users[i // STREAMS_PER_IDLE_USER] for i in range(start,
                                                                        min(idle, start + 50))]
        ids = await asyncio.gather(*(new_session(http, tally, u, title="조용한 대화")
                                     for u in batch))
        sessions += zip(batch, ids, strict=True)
    progress(f"{len(measured) + len(posting) + len(idle_users) + 1} users, "
             f"{len(sessions)} idle chats")
    return Setup(admin, measured, posting, sessions)


async def run_round(http: httpx.AsyncClient, tally: Tally, pid: int, setup: Setup,
                    unloaded: Phase, loaded: Phase, max_tokens: int, post_interval: float,
                    rng: random.Random, idle_records: list[Idle],
                    queued: list[tuple[User, str, str]]) -> None:
    # Warming up, not measured: the prompt in every decoding slot (a new chat starts from
    # the slot sharing the longest prefix), as the unloaded phase leaves it for the loaded
    # one; otherwise the posters' chats from the round before would hold the slots.
    warm = [await new_session(http, tally, u, max_tokens=4) for u in setup.measured]
    await asyncio.gather(*(stream_reply(http, tally, u, s)
                           for u, s in zip(setup.measured, warm, strict=True)))
    # Unloaded: the measured replies alone.
    sessions = [await new_session(http, tally, u, title="측정", max_tokens=max_tokens,
                                  temperature=0) for u in setup.measured]
    await measure(pid, asyncio.gather(*(stream_reply(http, tally, u, s) for u, s in
                                        zip(setup.measured, sessions, strict=True))), unloaded)
    progress(f"unloaded: {len(unloaded.replies)} replies measured")
    await wait_idle(http, tally, setup.admin)

    # Loaded: open every idle stream first, then the measured replies and the posters.
    opened: asyncio.Queue[None] = asyncio.Queue()
    records = [Idle() for _ in setup.idle]
    idle_tasks = [asyncio.create_task(idle_client(http, tally, u, s, r, opened))
                  for (u, s), r in zip(setup.idle, records, strict=True)]
    for _ in idle_tasks:
        await asyncio.wait_for(opened.get(), TIMEOUT)
    quiet = await settle(pid)
    progress(f"loaded: {len(idle_tasks)} idle streams open, server quiet after {quiet:.1f} s")
    opened_at = time.perf_counter()
    sessions = [await new_session(http, tally, u, title="측정", max_tokens=max_tokens,
                                  temperature=0) for u in setup.measured]
    for user in setup.posters:  # a fresh chat each round keeps their prompts short
        await new_session(http, tally, user, title="게시 사용자", max_tokens=2)
    stop, all_posted = asyncio.Event(), asyncio.Event()
    posted = [asyncio.Event() for _ in sessions]
    before = len(queued)
    posting = [asyncio.create_task(poster(http, tally, u, all_posted, stop, post_interval,
                                          random.Random(rng.random()), queued))
               for u in setup.posters]

    async def measured() -> list[Reply]:
        tasks = [stream_reply(http, tally, u, s, p)
                 for u, s, p in zip(setup.measured, sessions, posted, strict=True)]
        return list(await asyncio.gather(*tasks))

    async def release_posters() -> None:
        # The measured replies are queued first, so they hold the decoding slots.
        await asyncio.gather(*(p.wait() for p in posted))
        all_posted.set()

    releasing = asyncio.create_task(release_posters())
    try:
        await measure(pid, measured(), loaded)
    finally:
        stop.set()
        await asyncio.gather(*posting, releasing)
        loaded.posts += len(queued) - before
        for task in idle_tasks:
            task.cancel()
        await asyncio.gather(*idle_tasks, return_exceptions=True)
    idle_records += records
    # When the longest gaps fell (after the idle streams opened): a burst shows as a cluster.
    worst = sorted(((b - a, b - opened_at) for r in loaded.replies[-len(sessions):]
                    for a, b in zip(r.token_times, r.token_times[1:], strict=False)),
                   reverse=True)[:8]
    progress("worst gaps (gap, s after open): " + ", ".join(f"{g:.2f}@{t:.1f}" for g, t in worst))
    progress(f"loaded: {len(loaded.replies)} replies measured, {loaded.posts} posts; "
             "waiting for the posted replies")
    await wait_idle(http, tally, setup.admin)


# -- checks and figures ---------------------------------------------------------------------

async def check(http: httpx.AsyncClient, tally: Tally, setup: Setup, phases: list[Phase],
                idle_records: list[Idle], queued: list[tuple[User, str, str]]) -> dict[str, int]:
    users = {s: u for u in setup.measured for s in u.sessions}
    stored: dict[str, dict[str, Any]] = {}
    for session_id in {*users, *(s for _, s, _ in queued)}:
        owner = users.get(session_id) or next(u for u, s, _ in queued if s == session_id)
        for message in tally.expect(await http.get(f"/api/sessions/{session_id}/messages/",
                                                   headers=owner.headers), 200, "messages"):
            stored[message["id"]] = message
    mismatched = unfinished = 0
    for reply in (r for phase in phases for r in phase.replies):
        text = "".join(reply.pieces)
        message = stored.get(reply.reply_id, {})
        if reply.end != "done" or message.get("status") != "complete":
            unfinished += 1
            tally.problems.append(f"reply {reply.reply_id} ended {reply.end!r}, "
                                  f"stored {message.get('status')!r}")
        elif text != message["content"] or text != reply.final_content:
            mismatched += 1
            tally.problems.append(f"reply {reply.reply_id}: streamed {text[-40:]!r}, "
                                  f"stored {message['content'][-40:]!r}")
    for _, _, reply_id in queued:  # answered, or cancelled once the measurement ended
        if stored.get(reply_id, {}).get("status") not in ("complete", "cancelled"):
            unfinished += 1
            tally.problems.append(f"posted reply {reply_id}: {stored.get(reply_id)}")
    foreign = sum(1 for r in idle_records for _, data in r.events if "reply_id" in data)
    if foreign:
        tally.problems.append(f"idle streams received {foreign} events of other chats")
    refused = sum(1 for r in idle_records if r.status != 200)
    early = sum(1 for r in idle_records if r.ended_early)
    if refused or early:
        tally.problems.append(f"idle streams: {refused} refused, {early} ended early")
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)
    return {"mismatched_replies": mismatched, "unfinished_replies": unfinished,
            "idle_events_of_other_chats": foreign, "idle_streams_refused": refused,
            "idle_streams_ended_early": early, "responses_5xx": server_errors}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures_of(phase: Phase) -> dict[str, float]:
    done = [r for r in phase.replies if r.token_times and r.end == "done"]
    gaps = [g for r in done for g in r.gaps]
    return {
        "replies": len(done),
        "tokens_per_second": round(statistics.median(r.tokens_per_second for r in done), 1)
        if done else 0.0,
        "gap_p50_ms": round(percentile(gaps, 0.5) * 1000, 1),
        "gap_p99_ms": round(percentile(gaps, 0.99) * 1000, 1),
        "first_token_ms": round(statistics.median(r.first_token for r in done) * 1000, 1)
        if done else 0.0,
        "first_token_max_ms": round(max(r.first_token for r in done) * 1000, 1)
        if done else 0.0,
        "post_ms": round(statistics.median(r.accepted_at - r.posted_at for r in done) * 1000, 1)
        if done else 0.0,
        "server_rss_mib": round(phase.rss, 1),
        "server_cpu_s": round(phase.cpu, 2),
        "server_cpu_share": round(phase.cpu / phase.wall, 2) if phase.wall else 0.0,
        "client_cpu_s": round(phase.client_cpu, 2),
        "load_average": phase.load,
        "posts": phase.posts,
    }


async def drill(url: str, pid: int, idle: int, replies: int, posters: int, rounds: int,
                max_tokens: int, post_interval: float, seed: int,
                profiled: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    tally = Tally()
    # Idle keep-alive connections are dropped well before uvicorn's 5 s would close them
    # (the same 5 s on both sides races: a request sent as the server closes gets no answer).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None,
                          keepalive_expiry=1.0)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as http:
        setup = await prepare(http, tally, idle, replies, posters)
        unloaded, loaded = Phase(), Phase(profiled=profiled)
        idle_records: list[Idle] = []
        queued: list[tuple[User, str, str]] = []
        for _ in range(rounds):
            await run_round(http, tally, pid, setup, unloaded, loaded, max_tokens,
                            post_interval, rng, idle_records, queued)
        checks = await check(http, tally, setup, [unloaded, loaded], idle_records, queued)
    return {"idle_clients": idle, "replies_per_phase": replies, "posters": posters,
            "rounds": rounds, "unloaded": figures_of(unloaded), "loaded": figures_of(loaded),
            "checks": checks, "statuses": dict(sorted(tally.statuses.items())),
            "problems": tally.problems[:20]}


def targets(figures: dict[str, Any]) -> dict[str, bool]:
    before, after = figures["unloaded"], figures["loaded"]
    return {
        "tokens_per_second >= 0.9x unloaded":
            after["tokens_per_second"] >= 0.9 * before["tokens_per_second"],
        "gap p99 <= unloaded + 50 ms": after["gap_p99_ms"] <= before["gap_p99_ms"] + 50,
    }


def correct(figures: dict[str, Any]) -> bool:
    return not figures["problems"] and not any(figures["checks"].values())


def run(idle: int = 1000, replies: int = 4, posters: int = 20, rounds: int = 3,
        max_tokens: int = 64, post_interval: float = 2.0, seed: int = 7,
        env: dict[str, str] | None = None, profile: Path | None = None) -> dict[str, Any]:
    """Start a server of its own, run the drill against it, return the figures."""
    raise_open_files()
    settings = {**server_env(STREAMS_PER_IDLE_USER, replies), **(env or {})}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        server = (ProfiledServer(data, profile, **settings) if profile
                  else ServerProcess(data, **settings)).start()
        try:
            assert server.proc is not None
            return asyncio.run(drill(server.url, server.proc.pid, idle, replies, posters,
                                     rounds, max_tokens, post_interval, seed, profile is not None))
        finally:
            server.stop()


def show(figures: dict[str, Any]) -> None:
    print(f"{'':22}{'unloaded':>12}{'loaded':>12}")
    for key, label in [("tokens_per_second", "tokens/s (median)"),
                       ("gap_p50_ms", "gap p50 ms"), ("gap_p99_ms", "gap p99 ms"),
                       ("first_token_ms", "first token ms"),
                       ("first_token_max_ms", "first token max ms"),
                       ("post_ms", "post answered ms"),
                       ("server_rss_mib", "server RSS MiB"), ("server_cpu_s", "server CPU s"),
                       ("server_cpu_share", "server CPU s / s"),
                       ("client_cpu_s", "drill client CPU s"),
                       ("load_average", "load average (max)"), ("replies", "replies"),
                       ("posts", "posts")]:
        print(f"{label:22}{figures['unloaded'][key]:>12}{figures['loaded'][key]:>12}")
    for name, met in targets(figures).items():
        print(f"{'OK' if met else 'MISSED':7} {name}")
    print(f"{'OK' if correct(figures) else 'FAILED':7} correctness {json.dumps(figures['checks'])}")
    for problem in figures["problems"]:
        print("  problem:", problem)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000, help="idle SSE clients")
    parser.add_argument("--replies", type=int, default=4, help="measured streaming replies")
    parser.add_argument("--posters", type=int, default=20, help="users posting messages")
    parser.add_argument("--rounds", type=int, default=3, help="unloaded/loaded pairs")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--post-interval", type=float, default=2.0,
                        help="mean seconds between one user's posts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the server (e.g. N_THREADS=1)")
    parser.add_argument("--profile", type=Path,
                        help="run the server under cProfile, writing its profile here")
    args = parser.parse_args()
    # kill/timeout: unwind, so the server is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = dict(item.split("=", 1) for item in args.env)
    started = time.monotonic()
    figures = run(args.idle, args.replies, args.posters, args.rounds, args.max_tokens,
                  args.post_interval, args.seed, env, args.profile)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))
    show(figures)
    return 0 if correct(figures) and all(targets(figures).values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
