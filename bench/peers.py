"""This server against its peers, in one run (issue 8, section 4).

Same model, same prompts, temperature 0, measured in one invocation:
- raw engine: llama-cpp-python in this process (`bench.batching.Reference`, one sequence);
- the batched engine this server runs, alone in a process of its own (no HTTP, no event
  log): the floor under this server's figures;
- `python -m llama_cpp.server` (the `llama-cpp-python[server]` extra, same version as ours) in
  the bench's own venv `bench/.venv-peer` (created here on first use), streaming `/v1`;
- this server as real uvicorn subprocesses (one instance per path, so each path's four chats
  have the N_PARALLEL slots to themselves, as the peers do): `/v1/chat/completions`
  (streaming, bearer token) and its own SSE path (post a message, read
  `/api/sessions/{id}/stream/`).

Per system: one stream (decode tok/s after the first token, first-token time), four
concurrent streams (completed, aggregate tok/s, worst first token), four interleaved 10-turn
chats (first token at turns 1 and 10; `/v1` clients resend the growing history, the SSE
path's session keeps it). Then the issue's targets as ratios within this run.

    .venv/bin/python bench/peers.py [--max-tokens 64] [--chat-tokens 24] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from app.config import Settings
from app.inference.batched_engine import BatchedEngine
from app.inference.engine import Turn
from bench.batching import CHAT_TOPICS, PROMPTS, SYSTEM, Reference, Run, chats, submit, wait
from tests.server import Api, ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / "bench" / ".venv-peer"
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TIMEOUT = httpx.Timeout(60, connect=10)
# A reply slower than this fails (streams send pings, so a stuck one never times out).
DEADLINE = 120.0
CONCURRENT = 4

Reply = Callable[[str, list[Turn]], Run]


class Failed(Exception):
    """A reply that did not complete (HTTP error, error event, cancelled)."""


# -- the peer: llama_cpp.server in its own venv --------------------------------------------

def peer_python() -> Path:
    """bench/.venv-peer with llama-cpp-python[server] at our version, made on first use.

    Its own venv because the extra's FastAPI pins differ from ours; pip reuses the wheel it
    built for .venv from its cache (otherwise it compiles llama.cpp: minutes)."""
    version = metadata.version("llama-cpp-python")
    python = PEER_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, llama_cpp.server; "
             "print(m.version('llama-cpp-python'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    print(f"setting up {PEER_VENV} with llama-cpp-python[server]=={version}"
          " (first use)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF"),
           "CMAKE_BUILD_PARALLEL_LEVEL": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")}
    subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                    f"llama-cpp-python[server]=={version}"], check=True, env=env)
    subprocess.run(check, check=True, capture_output=True)
    return python


class PeerServer:
    def __init__(self, python: Path, settings: Settings, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        n = str(settings.n_threads)
        # Flash attention on, as our server's default (auto) resolves on this CPU.
        self.argv = [str(python), "-m", "llama_cpp.server", "--model", str(MODEL),
                     "--host", "127.0.0.1", "--port", str(self.port),
                     "--n_ctx", str(settings.n_ctx), "--n_threads", n, "--n_threads_batch", n,
                     "--flash_attn", "True",
                     # Otherwise a second request cuts off the running stream.
                     "--interrupt_requests", "False"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> PeerServer:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("llama_cpp.server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- one reply over each path ----------------------------------------------------------------

def v1_stream(http: httpx.Client, messages: list[dict[str, str]], max_tokens: int) -> Run:
    """A streamed `/v1/chat/completions`; the clock starts before the request."""
    run = Run()
    body = {"messages": messages, "temperature": 0, "max_tokens": max_tokens, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise Failed(f"{response.status_code} {response.read().decode()[:200]}")
        for line in response.iter_lines():
            overdue(run)
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise Failed(str(chunk["error"]))
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    run.token(text)
    run.ended = time.perf_counter()
    return run


def overdue(run: Run) -> None:
    if time.perf_counter() - run.started > DEADLINE:
        raise Failed(f"no end after {DEADLINE:.0f} s ({len(run.pieces)} pieces)")


def messages_of(system: str, history: list[Turn]) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            *({"role": t.role, "content": t.content} for t in history)]


def events(response: httpx.Response, run: Run) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a text/event-stream; every line, pings too, checks the deadline."""
    name, data = "", ""
    for line in response.iter_lines():
        overdue(run)
        if line == "":
            if data:
                yield name, json.loads(data)
            name, data = "", ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def sse_reply(api: Api, session_id: str, content: str) -> Run:
    """Post a message, read the session's SSE stream from just before the reply to `done`."""
    run = Run()
    posted = api.post(f"/api/sessions/{session_id}/messages/", json={"content": content})
    if posted.status_code != 202:
        raise Failed(f"{posted.status_code} {posted.text[:200]}")
    body = posted.json()
    reply_id = body["reply"]["id"]
    headers = {"Last-Event-ID": str(body["last_event_id"])}
    with api.http.stream("GET", f"/api/sessions/{session_id}/stream/",
                         headers=headers) as response:
        for name, data in events(response, run):
            if data.get("reply_id") != reply_id:
                continue
            if name == "token":
                run.token(data["text"])
            elif name == "done":
                break
            elif name in ("error", "cancelled"):
                raise Failed(f"{name}: {data}")
    run.ended = time.perf_counter()
    return run


# -- the systems -----------------------------------------------------------------------------

class System:
    """One way of replying: a single stream, a reply in a keyed chat, and (unless the raw
    engine) a fresh client for each of the concurrent streams."""

    name = ""

    def single(self, system: str, prompt: str, max_tokens: int) -> Run:
        raise NotImplementedError

    def chat(self, key: str, history: list[Turn], max_tokens: int) -> Run:
        raise NotImplementedError

    def concurrent(self, system: str, prompt: str, n: int,
                   max_tokens: int) -> Callable[[], Run] | None:
        """A reply ready to start (set up beforehand), for the n-th concurrent stream."""
        return None


class RawEngine(System):
    name = "raw engine (in-process)"

    def __init__(self, reference: Reference) -> None:
        self.ref = reference

    def single(self, system: str, prompt: str, max_tokens: int) -> Run:
        tokens = self.ref.prompter.fit(system, [Turn("user", prompt)], max_tokens).tokens
        return self.ref.reply(tokens, max_tokens)

    def chat(self, key: str, history: list[Turn], max_tokens: int) -> Run:
        return self.ref.reply(self.ref.prompter.fit(SYSTEM, history, max_tokens).tokens,
                              max_tokens)


class BatchedEngineAlone(System):
    """The engine this server runs (batched, a KV slot per chat) in a process of its own
    (two llama.cpp engines in one process slow each other down: their OpenMP thread pools
    compete), with no HTTP and no event log: what scheduling alone gets from this CPU, the
    floor under the server's figures. Each reply is a connection to it; times come from
    its clock (perf_counter is the system's monotonic clock)."""

    name = "batched engine alone"

    def __init__(self, settings: Settings, address: Path) -> None:
        self.address = str(address)
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=serve_engine, daemon=True, args=(
            self.address, str(MODEL), settings.n_ctx, settings.n_parallel,
            settings.n_threads, settings.n_batch, settings.flash_attn))
        self.process.start()
        deadline = time.monotonic() + 120
        while not address.exists():
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the batched engine's process did not start")
            time.sleep(0.1)

    def reply(self, system: str, history: list[Turn], max_tokens: int,
              key: str | None = None) -> Run:
        with Client(self.address, family="AF_UNIX") as connection:
            connection.send((system, [(t.role, t.content) for t in history], max_tokens, key))
            started, first, ended, pieces = connection.recv()
        run = Run()
        run.started, run.first, run.ended, run.pieces = started, first, ended, pieces
        return run

    def single(self, system: str, prompt: str, max_tokens: int) -> Run:
        return self.reply(system, [Turn("user", prompt)], max_tokens)

    def chat(self, key: str, history: list[Turn], max_tokens: int) -> Run:
        return self.reply(SYSTEM, history, max_tokens, key)

    def concurrent(self, system: str, prompt: str, n: int,
                   max_tokens: int) -> Callable[[], Run] | None:
        return lambda: self.single(system, prompt, max_tokens)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(15)


def serve_engine(address: str, model: str, n_ctx: int, n_parallel: int, n_threads: int,
                 n_batch: int, flash_attn: bool | None) -> None:
    """BatchedEngineAlone's process: a thread per connection, each one reply."""
    engine = BatchedEngine(Path(model), n_ctx=n_ctx, n_parallel=n_parallel,
                           n_threads=n_threads, n_batch=n_batch, flash_attn=flash_attn)

    def answer(connection: Connection) -> None:
        with connection:
            system, history, max_tokens, key = connection.recv()
            turns = [Turn(role, content) for role, content in history]
            tokens = engine.prepare(system, turns, max_tokens).tokens
            run = wait([submit(engine, tokens, max_tokens, key)])[0]
            connection.send((run.started, run.first, run.ended, run.pieces))

    with Listener(address, family="AF_UNIX") as listener:
        while True:
            threading.Thread(target=answer, args=(listener.accept(),), daemon=True).start()


class V1(System):
    """Any `/v1/chat/completions`: llama_cpp.server (no auth) or ours (one user each)."""

    def __init__(self, name: str, url: str, tokens: list[str | None]) -> None:
        self.name = name
        self.clients = [httpx.Client(base_url=url, timeout=TIMEOUT, headers=(
            {"Authorization": f"Bearer {t}"} if t else {})) for t in tokens]

    def single(self, system: str, prompt: str, max_tokens: int) -> Run:
        return v1_stream(self.clients[0], messages_of(system, [Turn("user", prompt)]),
                         max_tokens)

    def chat(self, key: str, history: list[Turn], max_tokens: int) -> Run:
        client = self.clients[int(key.rsplit("-", 1)[1]) % len(self.clients)]
        return v1_stream(client, messages_of(SYSTEM, history), max_tokens)

    def concurrent(self, system: str, prompt: str, n: int,
                   max_tokens: int) -> Callable[[], Run] | None:
        client = self.clients[n % len(self.clients)]
        messages = messages_of(system, [Turn("user", prompt)])
        return lambda: v1_stream(client, messages, max_tokens)


class OurSse(System):
    name = "this server, SSE path"

    def __init__(self, users: list[Api]) -> None:
        self.users = users
        self.sessions: dict[str, str] = {}

    def session(self, api: Api, system: str, max_tokens: int) -> str:
        return str(api.new_session(system_prompt=system, temperature=0,
                                   max_tokens=max_tokens)["id"])

    def single(self, system: str, prompt: str, max_tokens: int) -> Run:
        session_id = self.session(self.users[0], system, max_tokens)
        return sse_reply(self.users[0], session_id, prompt)

    def chat(self, key: str, history: list[Turn], max_tokens: int) -> Run:
        api = self.users[int(key.rsplit("-", 1)[1]) % len(self.users)]
        if key not in self.sessions:  # the session keeps the history: send the new turn only
            self.sessions[key] = self.session(api, SYSTEM, max_tokens)
        return sse_reply(api, self.sessions[key], history[-1].content)

    def concurrent(self, system: str, prompt: str, n: int,
                   max_tokens: int) -> Callable[[], Run] | None:
        api = self.users[n % len(self.users)]
        session_id = self.session(api, system, max_tokens)
        return lambda: sse_reply(api, session_id, prompt)


# -- measuring -------------------------------------------------------------------------------

class Counter:
    """Tokens counted one way for every system: the reply's text through the model's
    tokenizer (HTTP streams send pieces, not token counts)."""

    def __init__(self, reference: Reference) -> None:
        self.llm = reference.llm

    def __call__(self, run: Run) -> Run:
        run.tokens = len(self.llm.tokenize(run.text.encode(), add_bos=False, special=False))
        return run


def decode_rate(runs: list[Run]) -> float:
    """Tokens after the first over the time after the first (what the decoder sustains)."""
    return sum(r.tokens - 1 for r in runs) / sum((r.ended or 0) - (r.first or 0) for r in runs)


def end_to_end_rate(runs: list[Run]) -> float:
    """Tokens over the time from request to last token (comparable with an aggregate)."""
    return sum(r.tokens for r in runs) / sum(r.seconds for r in runs)


class Round:
    """Four replies started together: how many completed, aggregate tok/s, worst first token."""

    def __init__(self, starters: list[Callable[[], Run]], count: Counter) -> None:
        self.runs: list[Run] = []
        self.errors: list[str] = []
        lock = threading.Lock()
        gate = threading.Barrier(len(starters))

        def one(start: Callable[[], Run]) -> None:
            gate.wait()
            try:
                run = count(start())
                with lock:
                    self.runs.append(run)
            except (Failed, httpx.HTTPError) as error:
                with lock:
                    self.errors.append(f"{type(error).__name__}: {error}")

        threads = [threading.Thread(target=one, args=(s,)) for s in starters]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.total = len(starters)
        began = min((r.started for r in self.runs), default=0.0)
        ended = max((r.ended or 0.0 for r in self.runs), default=0.0)
        self.aggregate = sum(r.tokens for r in self.runs) / (ended - began) if self.runs else 0.0
        self.worst = max((r.ttft for r in self.runs), default=float("nan"))


class Results:
    def __init__(self) -> None:
        self.single: list[Run] = []
        self.rounds: list[Round] = []
        self.chats: list[list[Run]] = []

    @property
    def ttft(self) -> float:
        return statistics.median(r.ttft for r in self.single)

    @property
    def completed(self) -> tuple[int, int]:
        return sum(len(r.runs) for r in self.rounds), sum(r.total for r in self.rounds)

    @property
    def aggregate(self) -> float:
        return statistics.median(r.aggregate for r in self.rounds)

    @property
    def worst(self) -> float:
        return statistics.median(r.worst for r in self.rounds)

    @property
    def worst_alone(self) -> float:
        """The slowest first token of the concurrent rounds' prompts, each sent alone (the
        single streams, in `fresh` order): what concurrency adds, prompt lengths aside."""
        return max(r.ttft for r in self.single[:CONCURRENT])

    def turn(self, n: int) -> float:
        return statistics.median(chat[n].ttft for chat in self.chats)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--chat-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of 4 concurrent streams")
    parser.add_argument("--threads", type=int, default=Settings().n_threads,
                        help="CPU threads for every system (default: our server's N_THREADS)")
    args = parser.parse_args()
    settings = Settings(model_path=MODEL, n_threads=args.threads)
    load_start = os.getloadavg()
    print(f"model {MODEL.name}, n_ctx {settings.n_ctx}, threads {settings.n_threads}, "
          f"temperature 0, max_tokens {args.max_tokens} (chats {args.chat_tokens}), "
          f"llama-cpp-python {metadata.version('llama-cpp-python')}, flash attention on",
          flush=True)
    python = peer_python()

    def fresh(tag: str) -> list[tuple[str, str]]:
        """New conversations: only the opening of the system prompt was read before."""
        return [(f"{SYSTEM} This is conversation {tag}{n}.", p) for n, p in enumerate(PROMPTS)]

    with tempfile.TemporaryDirectory() as tmp:
        # Two instances of this server, one per path: four chats each, as for the peers (on
        # one instance the eight chats would share its N_PARALLEL=4 KV slots).
        ours = [ServerProcess(Path(tmp) / f"data-{path}", MODEL_PATH=str(MODEL),
                              N_CTX=str(settings.n_ctx), N_THREADS=str(settings.n_threads))
                for path in ("v1", "sse")]
        peer = PeerServer(python, settings, Path(tmp) / "peer.log")
        reference = Reference(settings, flash_attn=True)  # as batching.py: auto is on here
        count = Counter(reference)
        alone = BatchedEngineAlone(settings, Path(tmp) / "engine.sock")
        try:
            for server in ours:
                server.start(timeout=180)
            peer.start()
            v1_users, sse_users = (people(server.url) for server in ours)
            systems: list[System] = [
                RawEngine(reference),
                alone,
                V1("llama_cpp.server /v1", peer.url, [None] * CONCURRENT),
                V1("this server /v1", ours[0].url, [u.token for u in v1_users]),
                OurSse(sse_users),
            ]
            results = {s.name: Results() for s in systems}
            for system in systems:  # warm-up: weights paged in, first request paths run
                system.single(SYSTEM, "Hi!", 8)
            print("single streams...", flush=True)
            for system_prompt, prompt in fresh("s"):  # alternating: load changes hit all
                for system in systems:
                    results[system.name].single.append(
                        count(system.single(system_prompt, prompt, args.max_tokens)))
            print("concurrent streams...", flush=True)
            for n in range(args.rounds):
                for system in systems:
                    starters = [system.concurrent(s, p, i, args.max_tokens)
                                for i, (s, p) in enumerate(fresh(f"c{n}-")[:CONCURRENT])]
                    ready = [s for s in starters if s is not None]
                    if ready:
                        print(f"  {system.name}", flush=True)
                        results[system.name].rounds.append(Round(ready, count))
            print("interleaved chats...", flush=True)

            done = [0]

            def replier(system: System) -> Reply:
                def reply(key: str, history: list[Turn]) -> Run:
                    run = count(system.chat(key, history, args.chat_tokens))
                    done[0] += 1
                    if done[0] % (len(systems) * len(CHAT_TOPICS)) == 0:
                        print(f"  turn {done[0] // (len(systems) * len(CHAT_TOPICS))} done",
                              flush=True)
                    return run
                return reply

            runs = chats({s.name: replier(s) for s in systems})
            for name, chat_runs in runs.items():
                results[name].chats = chat_runs
        finally:
            peer.stop()
            for server in ours:
                server.stop()
            reference.llm.close()
            alone.stop()
    report(results, systems, load_start)


def people(url: str) -> list[Api]:
    """Four users of one server: each registers, then signs in (API.md)."""
    users = []
    for _ in range(CONCURRENT):
        registered = Api(url).register(password="correct horse")
        login = httpx.post(f"{url}/api/auth/login/", json={
            "username": registered.user["username"], "password": "correct horse"})
        login.raise_for_status()
        users.append(Api(url, login.json()["token"]))
    return users


def report(results: dict[str, Results], systems: list[System],
           load_start: tuple[float, float, float]) -> None:
    raw = results[systems[0].name]
    print()
    print(f"{'':26}| {'1 stream':^22} | {'4 concurrent':^33} | "
          f"{'4 chats, first token':^31}".rstrip())
    print(f"{'':26}| {'tok/s':>9} {'1st token':>11} | {'done':>6} {'agg tok/s':>10} "
          f"{'worst 1st token':>15} | {'turn 1':>10} {'turn 10':>9} {'t10/t1':>9}")
    for system in systems:
        r = results[system.name]
        line = f"{system.name:26}| {decode_rate(r.single):9.1f} {ms(r.ttft):>11} | "
        if r.rounds:
            done, total = r.completed
            line += f"{f'{done}/{total}':>6} {r.aggregate:10.1f} {ms(r.worst):>15} | "
        else:
            line += f"{'n/a (one sequence)':>33} | "
        t1, t10 = r.turn(0), r.turn(-1)
        line += f"{ms(t1):>10} {ms(t10):>9} {t10 / t1:8.2f}x"
        print(line)
    print("tok/s: decode rate after the first token; first-token times are medians (1 stream:"
          " 5 prompts; chats: 4 chats); 4 concurrent: medians over rounds, aggregate = all"
          " tokens / wall time")
    print()
    print("ratios (targets apply to this server; llama_cpp.server shown for comparison):")
    for system in systems[1:]:
        r = results[system.name]
        single = decode_rate(r.single) / decode_rate(raw.single)
        done, total = r.completed
        agg = r.aggregate / end_to_end_rate(r.single)
        worst = r.worst / r.ttft
        chat = r.turn(-1) / r.turn(0)
        mark = system.name.startswith("this server")
        print(f"  {system.name}")
        for label, target, value, ok in (
            ("1 stream decode vs raw engine", ">= 0.95x", f"{single:.2f}x", single >= 0.95),
            ("4 concurrent completed", "all", f"{done}/{total}", done == total),
            ("4 concurrent aggregate vs own 1 stream", ">= 1.2x", f"{agg:.2f}x", agg >= 1.2),
            ("worst first token vs own 1 stream's", "<= 3x", f"{worst:.2f}x", worst <= 3),
            ("chats: turn-10 vs turn-1 first token", "<= 1.5x", f"{chat:.2f}x", chat <= 1.5),
        ):
            print(f"    {label:40} {target:>9} {value:>8}  "
                  f"{verdict(ok) if mark else '(for comparison)'}")
        if r.rounds:
            alike = r.worst / r.worst_alone
            print(f"    {'worst first token vs same prompts alone':40} {'':>9} {alike:7.2f}x"
                  "  (like for like, no target)")
    errors = [f"{name}: {e}" for name, r in results.items() for rnd in r.rounds
              for e in rnd.errors]
    for error in errors[:8]:
        print(f"  incomplete stream: {error}")
    print()
    end = os.getloadavg()
    print(f"load average {load_start[0]:.1f} at the start, {end[0]:.1f} at the end "
          f"({os.cpu_count()} cores shared with other jobs: absolute figures move with the load,"
          " the ratios are measured within this run)")
    print("(1 stream vs raw: decode rates; aggregate vs own 1 stream: request-to-last-token "
          "rates, both counting the first token's wait)")


def stop_on_term(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so the servers are stopped too


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    signal.signal(signal.SIGTERM, stop_on_term)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: where is it waiting?
    main()
