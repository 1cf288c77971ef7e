"""How many idle SSE clients one server worker holds, what they cost, and how fast one
reply fans out to all of them.

Starts the real server (uvicorn, the real model, SQLite files in a temporary directory:
drills/load.py's ServerProcess and settings), signs one user in and opens streams on one
chat (`GET /api/sessions/{id}/stream/`) in steps: 250, 500, 1000, 2000 clients (each step
adds to the streams already open). At each step, once the server is quiet:
- RSS: the server's resident memory over the baseline with no stream (taken after one
  warm-up reply), per 1000 clients;
- CPU: the server's CPU seconds over one keep-alive period (SSE_PING_SECONDS, so every
  stream gets its ping) per second of wall time, as % of one core, per 1000 clients;
- fan-out: a reply is posted to that chat (Korean prompt, temperature 0) and every client
  reads it to `done`; for each token event, the spread between the first and the last
  client to receive it (its worst over the reply's events), from the POST to the last
  client's `done`, and the CPU seconds the server and this script (which parses every
  stream, on the same cores) spent meanwhile. Checked: each client's tokens add up to the
  `done` content.
The clients all watch the reply's chat (the fan-out's worst case: one chat on many screens
or tabs); the chat's streams share one read of the log per change (app/stream_hub.py).
It stops at the first step that fails (a stream refused or dropped, a file-descriptor
limit, a reply not reaching everyone in time), saying why.

    .venv/bin/python bench/sse_clients.py
    .venv/bin/python bench/sse_clients.py --steps 250 500 1000 2000 4000 --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drills.load import (  # noqa: E402
    TIMEOUT,
    Tally,
    User,
    cpu_seconds,
    load_average,
    new_session,
    percentile,
    progress,
    raise_open_files,
    register,
    rss_mib,
    server_env,
    settle,
    sse,
)
from tests.server import ServerProcess  # noqa: E402

PROMPT = "부산 여행에서 꼭 가 봐야 할 곳을 세 군데 알려 주세요."
PING_SECONDS = 15.0  # the server's SSE_PING_SECONDS (its default), set explicitly
OPEN_AT_ONCE = 100  # streams opened together; then the next hundred
SPARE_FDS = 200  # the server's own files, the model, SQLite, its other sockets


@dataclass
class Client:
    """One stream: when it opened, and each reply event with its arrival time."""

    status: int = 0
    ended: str = ""
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)


async def watch(http: httpx.AsyncClient, user: User, session_id: str, after: int,
                client: Client, opened: asyncio.Queue[None], arrived: asyncio.Queue[str]
                ) -> None:
    # From the chat's latest position, as the chat page follows it after rendering it.
    headers = {**user.headers, "Last-Event-ID": str(after)}
    try:
        async with http.stream("GET", f"/api/sessions/{session_id}/stream/",
                               headers=headers) as response:
            client.status = response.status_code
            opened.put_nowait(None)
            if response.status_code != 200:
                client.ended = f"status {response.status_code}"
                return
            async for name, data, at in sse(response):
                client.events.append((name, data, at))
                if name in ("done", "error", "cancelled"):
                    arrived.put_nowait(str(data.get("reply_id")))
        client.ended = "closed by the server"
    except httpx.HTTPError as error:
        client.ended = repr(error)
        if not client.status:
            opened.put_nowait(None)


@dataclass
class Step:
    clients: int
    open_s: float = 0.0
    rss_mib: float = 0.0
    cpu_share: float = 0.0
    client_cpu_share: float = 0.0
    token_events: int = 0
    spread_ms: float = 0.0  # per token event, last client - first client: the worst
    spread_p50_ms: float = 0.0
    done_spread_ms: float = 0.0
    all_done_s: float = 0.0
    fan_out_cpu_s: float = 0.0  # the server's, from the POST to the last client's `done`
    fan_out_client_cpu_s: float = 0.0  # this script's own (parsing every stream)
    failed: str = ""


async def idle_cost(pid: int, step: Step) -> None:
    """Server CPU over one ping period, per second; RSS at its end."""
    cpu, client, started = cpu_seconds(pid), time.process_time(), time.perf_counter()
    await asyncio.sleep(PING_SECONDS)
    wall = time.perf_counter() - started
    step.cpu_share = (cpu_seconds(pid) - cpu) / wall
    step.client_cpu_share = (time.process_time() - client) / wall
    step.rss_mib = rss_mib(pid)


async def fan_out(http: httpx.AsyncClient, pid: int, tally: Tally, user: User, session_id: str,
                  clients: list[Client], arrived: asyncio.Queue[str], step: Step) -> None:
    cpu, client_cpu = cpu_seconds(pid), time.process_time()
    posted = time.perf_counter()
    body = tally.expect(await http.post(f"/api/sessions/{session_id}/messages/",
                                        json={"content": PROMPT}, headers=user.headers),
                        202, "post")
    reply_id = body["reply"]["id"]
    deadline = posted + TIMEOUT
    # Ends of earlier replies (streams opened at this step replay the chat) are not counted.
    waiting = len(clients)
    while waiting:
        try:
            ended = await asyncio.wait_for(arrived.get(),
                                           max(0.1, deadline - time.perf_counter()))
        except TimeoutError:
            break
        waiting -= ended == reply_id
    step.fan_out_cpu_s = cpu_seconds(pid) - cpu
    step.fan_out_client_cpu_s = time.process_time() - client_cpu
    if waiting:
        step.failed = f"{waiting} of {len(clients)} clients missed the reply's end"
        return
    tokens: list[list[float]] = []
    done: list[float] = []
    for client in clients:
        mine = [(n, d, at) for n, d, at in client.events if d.get("reply_id") == reply_id]
        times = [at for n, _, at in mine if n == "token"]
        text = "".join(d["text"] for n, d, _ in mine if n == "token")
        end = mine[-1]
        if end[0] != "done" or end[1]["content"] != text:
            step.failed = f"a client's reply ended {end[0]!r} or its tokens did not add up"
            return
        tokens.append(times)
        done.append(end[2])
    if len({len(t) for t in tokens}) != 1:
        step.failed = "clients received different numbers of token events"
        return
    spreads = [max(column) - min(column) for column in zip(*tokens, strict=True)]
    step.token_events = len(spreads)
    step.spread_ms = max(spreads, default=0.0) * 1000
    step.spread_p50_ms = percentile(spreads, 0.5) * 1000
    step.done_spread_ms = (max(done) - min(done)) * 1000
    step.all_done_s = max(done) - posted


async def warm_up(http: httpx.AsyncClient, tally: Tally, user: User, session_id: str) -> None:
    """One reply before the baseline, so it holds what generating allocates."""
    body = tally.expect(await http.post(f"/api/sessions/{session_id}/messages/",
                                        json={"content": PROMPT}, headers=user.headers),
                        202, "post")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        messages = tally.expect(await http.get(f"/api/sessions/{session_id}/messages/",
                                               headers=user.headers), 200, "messages")
        if any(m["id"] == body["reply"]["id"] and m["status"] not in ("queued", "streaming")
               for m in messages):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the warm-up reply did not finish")


async def bench(url: str, pid: int, steps: list[int], max_tokens: int, fd_limit: int
                ) -> tuple[float, list[Step]]:
    tally = Tally()
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None,
                          keepalive_expiry=1.0)
    results: list[Step] = []
    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=limits) as http:
        admin = await register(http, tally, "sse_admin")  # the first user is the admin
        user = await register(http, tally, "sse_reader")
        session_id = await new_session(http, tally, user, title="함께 보는 대화",
                                       max_tokens=max_tokens, temperature=0)
        await warm_up(http, tally, user, session_id)
        await settle(pid)
        baseline = rss_mib(pid)
        progress(f"server RSS {baseline:.0f} MiB with no stream")
        clients: list[Client] = []
        opened: asyncio.Queue[None] = asyncio.Queue()
        arrived: asyncio.Queue[str] = asyncio.Queue()
        try:
            for target in steps:
                step = Step(target)
                results.append(step)
                if target + SPARE_FDS > fd_limit:
                    step.failed = f"file descriptors: {target} streams need more than " \
                                  f"`ulimit -n` {fd_limit} allows"
                    break
                stats = tally.expect(await http.get("/api/admin/stats/",
                                                    headers=admin.headers), 200, "stats")
                started = time.perf_counter()
                while len(clients) < target:
                    batch = [Client() for _ in range(min(OPEN_AT_ONCE, target - len(clients)))]
                    clients += batch
                    tasks += [asyncio.create_task(watch(http, user, session_id, stats["events"],
                                                        c, opened, arrived)) for c in batch]
                    for _ in batch:
                        await asyncio.wait_for(opened.get(), TIMEOUT)
                refused = [c for c in clients if c.status != 200 or c.ended]
                if refused:
                    step.failed = f"{len(refused)} streams refused or ended: {refused[0].ended}"
                    break
                step.open_s = time.perf_counter() - started
                await settle(pid)
                await idle_cost(pid, step)
                progress(f"{target} streams open in {step.open_s:.1f} s; RSS "
                         f"{step.rss_mib:.0f} MiB, CPU {step.cpu_share * 100:.1f} %")
                await fan_out(http, pid, tally, user, session_id, clients, arrived, step)
                if step.failed:
                    break
                progress(f"{target} streams: the reply reached all in {step.all_done_s:.1f} s"
                         f" (worst spread {step.spread_ms:.0f} ms)")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return baseline, results


def show(baseline: float, results: list[Step], fd_limit: int) -> None:
    print(f"server RSS with no stream: {baseline:.0f} MiB; ulimit -n {fd_limit}; "
          f"load average {load_average()}")
    print(f"{'clients':>8}{'open s':>8}{'RSS MiB':>9}{'MiB/1000':>10}{'CPU %':>7}"
          f"{'CPU %/1000':>11}{'client CPU %':>13}{'tokens':>7}{'spread p50 ms':>14}"
          f"{'worst ms':>9}{'done spread ms':>15}{'all done s':>11}{'fan-out CPU s':>14}"
          f"{'client CPU s':>13}")
    for s in results:
        if s.failed:
            print(f"{s.clients:>8}  FAILED: {s.failed}")
            continue
        extra = s.rss_mib - baseline
        print(f"{s.clients:>8}{s.open_s:>8.1f}{s.rss_mib:>9.0f}{extra / s.clients * 1000:>10.1f}"
              f"{s.cpu_share * 100:>7.1f}{s.cpu_share * 100 / s.clients * 1000:>11.1f}"
              f"{s.client_cpu_share * 100:>13.1f}{s.token_events:>7}{s.spread_p50_ms:>14.0f}"
              f"{s.spread_ms:>9.0f}{s.done_spread_ms:>15.0f}{s.all_done_s:>11.1f}"
              f"{s.fan_out_cpu_s:>14.1f}{s.fan_out_client_cpu_s:>13.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000],
                        help="open streams at each step (increasing)")
    parser.add_argument("--max-tokens", type=int, default=32, help="the fan-out reply's")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the server (e.g. N_THREADS=2)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server too
    fd_limit = raise_open_files()
    env = {**server_env(max(args.steps), 1), "SSE_PING_SECONDS": str(PING_SECONDS),
           **dict(item.split("=", 1) for item in args.env)}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", **env).start()
        try:
            assert server.proc is not None
            baseline, results = asyncio.run(bench(server.url, server.proc.pid, args.steps,
                                                  args.max_tokens, fd_limit))
        finally:
            server.stop()
    show(baseline, results, fd_limit)
    print(json.dumps({"seconds": round(time.monotonic() - started),
                      "fd_soft_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
    return 1 if any(s.failed and not s.failed.startswith("file descriptors")
                    for s in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
