"""What a chat client sees over SSE, against the engine alone in the same run.

Reference: the llama.cpp engine generating in this process (no server, no events).
Measured: a real server (uvicorn subprocess, real SQLite files); a client posts a message
and reads the SSE stream until `done`. Both generate the same replies (temperature 0).
Prints time to first token and tokens/s for each, and the overhead of the server path.

    .venv/bin/python bench/streaming.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings
from app.inference.engine import Finished, SamplingParams, Turn
from app.inference.llama_engine import LlamaEngine
from tests.server import Api, ServerProcess, sse_events

PROMPTS = [
    "Explain what a lighthouse does in three sentences.",
    "List five fruits and one fact about each.",
    "안녕하세요! 자기소개를 해 주세요.",
    "Write a short poem about the sea.",
    "What is the difference between a list and a tuple in Python?",
]
MAX_TOKENS = 128
SYSTEM = "You are a helpful assistant."


def reference() -> tuple[list[float], list[float]]:
    settings = Settings()
    engine = LlamaEngine(settings.model_path, settings.n_ctx, settings.n_threads, 0)
    ttft, rates = [], []
    for prompt in PROMPTS:
        prepared = engine.prepare(SYSTEM, [Turn("user", prompt)], MAX_TOKENS)
        started = time.perf_counter()
        first, count = None, 0
        for item in engine.stream(prepared, SamplingParams(0.0, 0.95, MAX_TOKENS)):
            if isinstance(item, Finished):
                break
            first = first or time.perf_counter() - started
            count += 1
        ttft.append(first or 0.0)
        rates.append(count / (time.perf_counter() - started))
    return ttft, rates


def through_server() -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp)).start()
        try:
            api = Api(server.url).register()
            ttft, rates = [], []
            for prompt in PROMPTS:
                session = api.new_session(max_tokens=MAX_TOKENS, temperature=0,
                                          system_prompt=SYSTEM)
                started = time.perf_counter()
                posted = api.post(f"/api/sessions/{session['id']}/messages/",
                                  json={"content": prompt}).json()
                first = None
                headers = {"Last-Event-ID": str(posted["last_event_id"])}
                with api.http.stream("GET", f"/api/sessions/{session['id']}/stream/",
                                     headers=headers) as response:
                    for event in sse_events(response):
                        if event["event"] == "token" and first is None:
                            first = time.perf_counter() - started
                        if event["event"] == "done":
                            count = event["data"]["token_count"]
                            break
                ttft.append(first or 0.0)
                rates.append(count / (time.perf_counter() - started))
            return ttft, rates
        finally:
            server.stop()


def show(name: str, ttft: list[float], rates: list[float]) -> None:
    print(f"{name:<28} first token median {statistics.median(ttft) * 1000:6.0f} ms"
          f"   max {max(ttft) * 1000:6.0f} ms   tokens/s median {statistics.median(rates):6.1f}")


def main() -> None:
    ref_ttft, ref_rates = reference()
    srv_ttft, srv_rates = through_server()
    show("engine alone (reference)", ref_ttft, ref_rates)
    show("server + event log + SSE", srv_ttft, srv_rates)
    extra_ms = (statistics.median(srv_ttft) - statistics.median(ref_ttft)) * 1000
    share = statistics.median(srv_rates) / statistics.median(ref_rates) * 100
    print(f"server path: first token +{extra_ms:.0f} ms, throughput {share:.0f}% of the engine")


if __name__ == "__main__":
    main()
