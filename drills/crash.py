"""Crash drill: users chatting while the server is killed with SIGKILL at random moments.

Each round: start the server, let simulated users create chats and post (a client-side
ledger keeps every acknowledged write), kill -9 after a random delay (mid-token batch,
mid-projection, mid-registration), then restart and check: the store opens, every
acknowledged session and message is there, no reply is left queued or streaming (a cut
reply is `interrupted`, keeping its text), and `cli verify` finds the read models equal
to a replay of the log.

    .venv/bin/python -m drills.crash --kills 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Api, ServerProcess  # noqa: E402


class Ledger:
    """What the server acknowledged: session id -> message ids (user and reply)."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[str]] = {}
        self.tokens: dict[str, str] = {}  # session id -> the owner's token
        self.lock = threading.Lock()


def chat_until_killed(url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    try:
        api = Api(url).register()
        while not stop.is_set():
            session = api.new_session(title=f"충돌 {rng.randint(0, 999)}", max_tokens=48)
            with ledger.lock:
                ledger.sessions[session["id"]] = []
                ledger.tokens[session["id"]] = api.token or ""
            for _ in range(rng.randint(1, 3)):
                response = api.post(f"/api/sessions/{session['id']}/messages/",
                                    json={"content": "짧게 대답해 주세요."})
                if response.status_code == 202:
                    body = response.json()
                    with ledger.lock:
                        ledger.sessions[session["id"]] += [body["message"]["id"],
                                                           body["reply"]["id"]]
                time.sleep(rng.random() * 0.3)
    except Exception:  # the kill cuts the client off mid-request: expected
        return


def check(url: str, ledger: Ledger, data_dir: Path) -> list[str]:
    problems = []
    for session_id, message_ids in ledger.sessions.items():
        api = Api(url, ledger.tokens[session_id])
        response = api.get(f"/api/sessions/{session_id}/messages/")
        if response.status_code != 200:
            problems.append(f"session {session_id}: {response.status_code}")
            continue
        found = {m["id"]: m for m in response.json()}
        problems += [f"message {m} lost" for m in message_ids if m not in found]
        deadline = time.monotonic() + 60  # replies queued before the kill were interrupted
        while any(m["status"] in ("queued", "streaming") for m in found.values()
                  if m["id"] in message_ids) and time.monotonic() < deadline:
            time.sleep(0.2)
            found = {m["id"]: m for m in api.get(
                f"/api/sessions/{session_id}/messages/").json()}
        problems += [f"reply {m['id']} left {m['status']}" for m in found.values()
                     if m["id"] in message_ids and m["status"] in ("queued", "streaming")]
    env = {**os.environ, "DATA_DIR": str(data_dir)}
    verify = subprocess.run([sys.executable, "-m", "app.cli", "verify", "--no-progress"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if verify.returncode != 0:
        problems.append(f"cli verify: {verify.stdout[-500:]} {verify.stderr[-500:]}")
    return problems


def run(kills: int, seed: int, users: int = 4) -> dict[str, Any]:
    rng = random.Random(seed)
    figures: dict[str, Any] = {"kills": 0, "acknowledged_messages": 0, "problems": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data")
        ledger = Ledger()
        try:
            for round_ in range(kills):
                server.start(timeout=120)
                figures["problems"] += check(server.url, ledger, server.data_dir) \
                    if round_ else []
                stop = threading.Event()
                clients = [threading.Thread(target=chat_until_killed,
                                            args=(server.url, ledger, stop, rng.random()))
                           for _ in range(users)]
                for client in clients:
                    client.start()
                time.sleep(rng.uniform(0.5, 4.0))
                server.kill()
                stop.set()
                for client in clients:
                    client.join(60)
                figures["kills"] += 1
            server.start(timeout=120)
            figures["problems"] += check(server.url, ledger, server.data_dir)
        finally:
            server.stop()
        figures["acknowledged_messages"] = sum(len(m) for m in ledger.sessions.values())
        figures["sessions"] = len(ledger.sessions)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    started = time.monotonic()
    figures = run(args.kills, args.seed)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures, ensure_ascii=False))
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
