"""Stream drill: random disconnects and reconnects with Last-Event-ID during replies.

Every cycle reads a random number of events from the reply's stream, drops the connection
and resumes from the last id seen. At the end of each reply the tokens received must
reassemble its stored text exactly: 0 lost, 0 repeated.

    .venv/bin/python -m drills.streams --cycles 100        # starts its own server
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Api, ServerProcess, sse_events  # noqa: E402

PROMPT = "서울에 대해 여러 문장으로 자세히 설명해 주세요."


def read_some(api: Api, session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` events after `after`, then the connection is dropped."""
    events: list[dict[str, Any]] = []
    with api.http.stream("GET", f"/api/sessions/{session_id}/stream/",
                         headers={"Last-Event-ID": str(after)}) as response:
        response.raise_for_status()
        for event in sse_events(response):
            events.append(event)
            if len(events) >= limit or event["event"] in ("done", "error", "cancelled"):
                break
    return events


def run(url: str, cycles: int, seed: int, max_tokens: int = 120) -> dict[str, Any]:
    rng = random.Random(seed)
    api = Api(url).register()
    session = api.new_session(title="재연결 훈련", max_tokens=max_tokens, temperature=0.8)
    figures = {"cycles": 0, "replies": 0, "tokens_events": 0, "lost_chars": 0,
               "repeated_events": 0, "mismatched_replies": 0}
    while figures["cycles"] < cycles:
        posted = api.post_message(session["id"], PROMPT)
        reply_id, after = posted["reply"]["id"], posted["last_event_id"]
        seen: set[int] = set()
        text, ended = [], False
        while not ended:
            batch = read_some(api, session["id"], after, rng.randint(1, 6))
            figures["cycles"] += 1
            for event in batch:
                position = int(event["id"])
                if position in seen or position <= after:
                    figures["repeated_events"] += 1
                seen.add(position)
                after = max(after, position)
                data = event["data"]
                if data.get("reply_id", reply_id) != reply_id:
                    continue
                if event["event"] == "token":
                    text.append(data["text"])
                    figures["tokens_events"] += 1
                elif event["event"] in ("done", "error", "cancelled"):
                    ended = True
                    if "content" in data and data["content"] != "".join(text):
                        figures["mismatched_replies"] += 1  # the log's own final text
        # The read models follow the log a moment later than streams: wait for the end.
        stored = api.wait_reply(session["id"], reply_id, timeout=300)
        received = "".join(text)
        figures["replies"] += 1
        if received != stored["content"]:
            figures["mismatched_replies"] += 1
            figures["lost_chars"] += abs(len(stored["content"]) - len(received))
            print(json.dumps({"reply": reply_id, "received": received[-40:],
                              "stored": stored["content"][-40:]}, ensure_ascii=False),
                  file=sys.stderr)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", help="a running server (default: start one)")
    args = parser.parse_args()
    started = time.monotonic()
    if args.url:
        figures = run(args.url, args.cycles, args.seed)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(Path(tmp) / "data").start()
            try:
                figures = run(server.url, args.cycles, args.seed)
            finally:
                server.stop()
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))
    ok = not (figures["repeated_events"] or figures["mismatched_replies"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
