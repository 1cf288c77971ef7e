"""A long chat's page must open as fast as a short one (issue 9, "long chats stay fast").

Starts a real server (uvicorn, SQLite files in a temp dir; no model is loaded, the page
does not need one), imports chats of 50, 500 and 2,000 messages, and prints the median
time to serve each chat's page (GET /chats/{id}, over loopback) and its ratio to the
50-message chat, measured in the same run. Target: every ratio within 1.5x. For
reference it also times the full list of messages over the API (which grows with the chat).

    .venv/bin/python bench/chat_page.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server import Api, ServerProcess

SIZES = (50, 500, 2000)
WARMUP, RUNS = 5, 40
TARGET = 1.5


def import_chat(api: Api, count: int) -> str:
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": f"메시지 {i}번: 긴 대화의 한 줄입니다. " * 3,
                 "timestamp": "2026-01-02T03:04:05Z"} for i in range(count)]
    response = api.post("/api/sessions/import/", json={
        "format": "localchat.session", "version": 1, "session": {"title": f"{count}개"},
        "messages": messages})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def medians_ms(client: httpx.Client, paths: list[str]) -> list[float]:
    """Median time of each path, the paths taken in turn so that none runs warmer."""
    times: list[list[float]] = [[] for _ in paths]
    for run in range(WARMUP + RUNS):
        for i, path in enumerate(paths):
            start = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - start
            assert response.status_code == 200, response.text[:200]
            if run >= WARMUP:
                times[i].append(elapsed)
    return [statistics.median(t) * 1000 for t in times]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", MODEL_PATH=str(Path(tmp) / "none.gguf"))
        server.start()
        try:
            api = Api(server.url).register("bench_user")
            assert api.token
            page = httpx.Client(base_url=server.url, cookies={"session": api.token})
            ids = {size: import_chat(api, size) for size in SIZES}
            pages = medians_ms(page, [f"/chats/{ids[size]}" for size in SIZES])
            lists = medians_ms(api.http, [f"/api/sessions/{ids[size]}/messages/"
                                          for size in SIZES])
            rows = list(zip(SIZES, pages, lists, strict=True))
        finally:
            server.stop()
    base = rows[0][1]
    print(f"{'messages':>8}  {'chat page ms':>12}  {'ratio':>5}  {'API full list ms':>16}")
    worst = 0.0
    for size, page_ms, list_ms in rows:
        ratio = page_ms / base
        worst = max(worst, ratio)
        print(f"{size:>8}  {page_ms:>12.2f}  {ratio:>5.2f}  {list_ms:>16.2f}")
    print(f"worst ratio {worst:.2f} (target ≤ {TARGET})")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
