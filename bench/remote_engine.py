"""A reply through a remote engine against the same reply written locally, in one run.

Server A runs the model; server B has ENGINE_URL pointing at A's /v1 (A's admin token as
ENGINE_API_KEY). The same prompts (temperature 0, same system prompt) are posted to a chat
on A and to a chat on B, alternately, and each reply is read from its own server's SSE
stream until `done`. B's path is A's whole path (A's actor, log and /v1 stream) plus B's
engine, actor, log and stream, so the ratio B/A is what the remote hop costs.

    .venv/bin/python bench/remote_engine.py [--rounds 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.server import Api, ServerProcess, sse_events

PROMPTS = [
    "Explain what a lighthouse does in three sentences.",
    "안녕하세요! 자기소개를 해 주세요.",
    "List five fruits and one fact about each.",
    "서울의 가을 날씨에 대해 알려 주세요.",
]
SYSTEM = "You are a helpful assistant."


def one_reply(api: Api, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to done, tokens) of one reply in a new chat."""
    session = api.new_session(max_tokens=max_tokens, temperature=0, system_prompt=SYSTEM)
    started = time.perf_counter()
    posted = api.post_message(session["id"], prompt)
    first: float | None = None
    with api.http.stream("GET", f"/api/sessions/{session['id']}/stream/",
                         headers={"Last-Event-ID": str(posted["last_event_id"])},
                         timeout=httpx.Timeout(300, read=300)) as response:
        for event in sse_events(response):
            if event["event"] == "token" and first is None:
                first = time.perf_counter() - started
            if event["event"] in ("error", "cancelled"):
                raise RuntimeError(f"reply ended with {event}")
            if event["event"] == "done":
                return first or 0.0, time.perf_counter() - started, event["data"]["token_count"]
    raise RuntimeError("the stream ended before the reply")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a = ServerProcess(Path(tmp) / "a").start()
        b: ServerProcess | None = None
        try:
            admin = Api(a.url).register("bench_admin")
            assert admin.token is not None
            b = ServerProcess(Path(tmp) / "b", ENGINE_URL=a.url,
                              ENGINE_API_KEY=admin.token).start()
            local, remote = Api(a.url).register(), Api(b.url).register()
            one_reply(local, "warm up", 8)
            one_reply(remote, "warm up", 8)
            results: dict[str, list[tuple[float, float, int]]] = {"local": [], "remote": []}
            for _ in range(args.rounds):
                for prompt in PROMPTS:  # alternate, so load changes hit both paths alike
                    results["local"].append(one_reply(local, prompt, args.max_tokens))
                    results["remote"].append(one_reply(remote, prompt, args.max_tokens))
        finally:
            if b is not None:
                b.stop()
            a.stop()
    rows = {}
    for name, runs in results.items():
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[2] / r[1] for r in runs)
        tokens = [r[2] for r in runs]
        rows[name] = (ttft, rate)
        print(f"{name:7} replies {len(runs)}  median first token {ttft * 1000:7.0f} ms  "
              f"median tok/s (post to done) {rate:6.1f}  tokens {tokens}")
    print(f"remote/local: first token x{rows['remote'][0] / rows['local'][0]:.2f}, "
          f"tok/s x{rows['remote'][1] / rows['local'][1]:.2f}")


if __name__ == "__main__":
    main()
