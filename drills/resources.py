"""Resource drill: the disk refuses (full, read-only) and the model file vanishes.

Each case starts a real server (real model, real SQLite) on a file system of its own and
prints what happened. The file systems are real: a small tmpfs filled to the last byte, a
read-only bind mount, and an ext4 image whose kernel turns it read-only under the running
server (`mount -o remount,abort`, what `errors=remount-ro` does after an I/O error). Needs
root (mount); every mount is undone at the end.

    .venv/bin/python -m drills.resources            # all cases
    .venv/bin/python -m drills.resources --posts 20 --case disk-full

Expected, and checked: a clear error (one line at start, 503 `storage_unavailable` in the
API's shape while running, never the model's path), every acknowledged (202) message kept,
no reply left `queued` or `streaming`, and recovery without hand work (a full disk: as
soon as there is room; a disk the kernel made read-only: the next start, after the
operator's fsck, which the kernel requires before it lets the file system be written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import UVICORN, Api, ServerProcess  # noqa: E402

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OPEN = ("queued", "streaming")
Problems = list[str]


# -- file systems ----------------------------------------------------------------------


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def can_mount() -> bool:
    """True if this process may mount file systems (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as place:
        if run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", place).returncode:
            return False
        run("umount", place)
    return True


@contextlib.contextmanager
def tmpfs(place: Path, size: str) -> Iterator[Path]:
    place.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(place)],
                   check=True)
    try:
        yield place
    finally:
        run("umount", "-l", str(place))


@contextlib.contextmanager
def read_only_bind(place: Path) -> Iterator[Path]:
    """`place` seen through a read-only bind mount of itself (the files stay as they are)."""
    subprocess.run(["mount", "--bind", str(place), str(place)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(place)], check=True)
        yield place
    finally:
        run("umount", str(place))


def fill(mount: Path) -> Path:
    """Write zeros until the file system has no byte left; returns the filler file."""
    filler = mount / "filler"
    run("dd", "if=/dev/zero", f"of={filler}", "bs=64k")
    return filler


# -- checks shared by the cases ----------------------------------------------------------


class Ledger:
    """Every message the server acknowledged (202): they must all survive."""

    def __init__(self) -> None:
        self.acknowledged: list[tuple[str, str, str]] = []  # (session, message, reply)
        self.refused = 0

    def post(self, api: Api, session_id: str, content: str, problems: Problems,
             refusals: tuple[str, ...] = ("storage_unavailable",)) -> bool:
        response = api.post(f"/api/sessions/{session_id}/messages/", json={"content": content})
        if response.status_code == 202:
            body = response.json()
            self.acknowledged.append((session_id, body["message"]["id"], body["reply"]["id"]))
            return True
        self.refused += 1
        check_refusal(response, refusals, problems)
        return False

    def check(self, api: Api, problems: Problems) -> None:
        for session_id in {s for s, _m, _r in self.acknowledged}:
            response = api.get(f"/api/sessions/{session_id}/messages/")
            if response.status_code != 200:
                problems.append(f"messages of {session_id}: {response.status_code}")
                continue
            found = {m["id"]: m for m in response.json()}
            for sid, message_id, reply_id in self.acknowledged:
                if sid != session_id:
                    continue
                if message_id not in found:
                    problems.append(f"acknowledged message {message_id} lost")
                if reply_id not in found:
                    problems.append(f"acknowledged reply {reply_id} lost")
                elif found[reply_id]["status"] in OPEN:
                    problems.append(f"reply {reply_id} left {found[reply_id]['status']}")


def check_refusal(response: Any, codes: tuple[str, ...], problems: Problems) -> None:
    """A refusal is 503 in the API's error shape, with Retry-After and one of `codes`."""
    try:
        error = response.json()["error"]
        shaped = isinstance(error["code"], str) and isinstance(error["message"], str)
    except (ValueError, KeyError, TypeError):
        shaped, error = False, {}
    if response.status_code != 503 or not shaped or error.get("code") not in codes:
        problems.append(f"refusal {response.status_code} {response.text[:200]}")
    elif "Retry-After" not in response.headers:
        problems.append(f"{error['code']} without Retry-After")


def code_of(response: Any) -> str:
    """The error code of an API error response, or its status line's text."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return response.text[:80]


def wait_until(check: Callable[[], bool], timeout: float, pause: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(pause)
    return False


def wait_closed(api: Api, session_ids: list[str], idle: float = 120, limit: float = 1200
                ) -> bool:
    """Wait until no reply of these sessions is queued or streaming. False if one is stuck:
    nothing changed for `idle` seconds (a slow reply on a loaded machine still moves)."""
    seen: object = None
    changed = deadline = time.monotonic()
    deadline += limit
    while time.monotonic() < deadline:
        messages = [m for sid in session_ids
                    for m in api.get(f"/api/sessions/{sid}/messages/").json()]
        if all(m["status"] not in OPEN for m in messages):
            return True
        now_seen = [(m["id"], m["status"], len(m["content"])) for m in messages]
        if now_seen != seen:
            seen, changed = now_seen, time.monotonic()
        elif time.monotonic() - changed > idle:
            return False
        time.sleep(0.5)
    return False


def status_of(api: Api, session_id: str, reply_id: str) -> str:
    for message in api.get(f"/api/sessions/{session_id}/messages/").json():
        if message["id"] == reply_id:
            return str(message["status"])
    return "missing"


def verify(data_dir: Path, problems: Problems) -> None:
    """`localchat verify` on the stopped server's files: hash chain and read models."""
    done = subprocess.run([sys.executable, "-m", "app.cli", "verify"], cwd=ROOT,
                          env={**os.environ, "DATA_DIR": str(data_dir)},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        problems.append(f"cli verify: {done.stdout[-500:]} {done.stderr[-500:]}")


LOGS = Path(tempfile.gettempdir()) / "drill-resources-logs"


def server(data_dir: Path, log: Path, **env: str) -> ServerProcess:
    """A server whose log is kept in LOGS (outside the file system under test, which may
    refuse writes, and kept after the case for a look)."""
    process = ServerProcess(data_dir, **env)
    LOGS.mkdir(exist_ok=True)
    process.log_path = LOGS / log.name
    process.log_path.unlink(missing_ok=True)
    return process


# -- the cases ---------------------------------------------------------------------------


def read_only_at_start(work: Path) -> dict[str, Any]:
    """DATA_DIR on a read-only mount: the start stops with one line naming it, exit != 0;
    once the mount is writable again the same command starts."""
    problems: Problems = []
    data = work / "ro-data"
    data.mkdir(parents=True)
    with read_only_bind(data):
        done = subprocess.run(
            [str(UVICORN), "app.main:app", "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT, env={**os.environ, "DATA_DIR": str(data)},
            capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if "Cannot start" in line]
    if done.returncode == 0:
        problems.append("the server started (or exited 0) on a read-only DATA_DIR")
    if "Traceback" in output:
        problems.append("a traceback instead of one line")
    if len(errors) != 1 or str(data) not in errors[0] or "not writable" not in errors[0]:
        problems.append(f"no one-line error naming {data}: {output[-600:]}")
    process = server(data, work / "ro-start.log")
    try:
        process.start()  # writable again: starts with no other step
    except RuntimeError as error:
        problems.append(f"did not start once writable: {error}")
    finally:
        process.stop()
    return {"case": "read-only DATA_DIR at start", "exit_code": done.returncode,
            "error_line": errors[0].strip() if errors else "", "problems": problems}


def disk_full(work: Path, posts: int = 5, max_tokens: int = 48) -> dict[str, Any]:
    """DATA_DIR on a 64 MB tmpfs filled to the last byte while a reply streams and users
    post; then the filler is deleted and the same server must carry on."""
    problems: Problems = []
    ledger = Ledger()
    mount = work / "full"
    with tmpfs(mount, "64m"):
        data = mount / "data"
        process = server(data, work / "disk-full.log").start()
        try:
            api = Api(process.url).register("full_admin")
            first = api.new_session(title="가득 찬 디스크", max_tokens=max_tokens)
            ledger.post(api, first["id"], "안녕하세요! 한 문장으로 답해 주세요.", problems)
            other = api.new_session(title="흐르는 답변", max_tokens=max_tokens * 2)
            ledger.post(api, other["id"], "서울에 대해 길게 설명해 주세요.", problems)
            wait_until(lambda: status_of(api, other["id"], ledger.acknowledged[-1][2])
                       != "queued", 60, 0.05)
            filler = fill(mount)
            ledger_before_fill = ledger.refused
            for i in range(posts):
                ledger.post(api, first["id"], f"디스크가 가득 찼을 때 {i}번째 글", problems,
                            ("storage_unavailable", "read_models_failing"))
            new_session = api.post("/api/sessions/", json={"title": "새 대화"})
            session_while_full = new_session.status_code
            if new_session.status_code != 201:
                check_refusal(new_session, ("storage_unavailable", "read_models_failing"),
                              problems)
            reading = api.get(f"/api/sessions/{first['id']}/messages/").status_code
            if reading != 200:
                problems.append(f"reading while full: {reading}")
            refused_while_full = ledger.refused
            time.sleep(2)  # the streaming reply tries to record its tokens meanwhile
            filler.unlink()
            sessions = [first["id"], other["id"]]
            if not wait_closed(api, sessions):
                problems.append("a reply stayed queued or streaming, unchanged for 120 s, "
                                "after the disk had room again")
            if not ledger.post(api, first["id"], "공간이 생겼어요. 다시 답해 주세요.", problems):
                problems.append("posting failed after the disk had room again")
            elif (not wait_closed(api, [first["id"]])
                  or status_of(api, first["id"], ledger.acknowledged[-1][2]) != "complete"):
                problems.append("the reply after the recovery did not complete")
            health = api.get("/healthz")
            if health.status_code != 200:
                problems.append(f"healthz after recovery: {health.text}")
            ledger.check(api, problems)
            statuses = [status_of(api, s, r) for s, _m, r in ledger.acknowledged]
        finally:
            process.stop()
        verify(data, problems)
    return {"case": "disk full while replies stream", "posts_while_full": posts,
            "refused_while_full": refused_while_full - ledger_before_fill,
            "new_session_while_full": session_while_full,
            "acknowledged": len(ledger.acknowledged), "reply_statuses": statuses,
            "problems": problems}


def read_only_while_running(work: Path, posts: int = 3, max_tokens: int = 96
                            ) -> dict[str, Any]:
    """The kernel makes DATA_DIR's ext4 read-only under the running server (`abort`, as
    `errors=remount-ro` does after an I/O error). Writes answer 503; such a file system
    cannot be made writable again while mounted, so recovery is: stop, fsck, mount,
    start; the start closes what the stop left open, with no other step."""
    problems: Problems = []
    ledger = Ledger()
    image, mount = work / "ext4.img", work / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)],
                   check=True)
    data = mount / "data"
    process = server(data, work / "ro-running.log")
    try:
        process.start()
        api = Api(process.url).register("ro_admin")
        chat = api.new_session(title="읽기 전용", max_tokens=max_tokens)
        ledger.post(api, chat["id"], "부산에 대해 길게 설명해 주세요.", problems)
        wait_until(lambda: status_of(api, chat["id"], ledger.acknowledged[-1][2])
                   != "queued", 60, 0.05)
        subprocess.run(["mount", "-o", "remount,abort", str(mount)], check=True)
        for i in range(posts):
            ledger.post(api, chat["id"], f"읽기 전용일 때 {i}번째 글", problems,
                        ("storage_unavailable", "read_models_failing"))
        refused = ledger.refused
        reading = api.get(f"/api/sessions/{chat['id']}/messages/").status_code
        if reading != 200:
            problems.append(f"reading while read-only: {reading}")
        process.stop()
        run("umount", str(mount))
        fsck = run("e2fsck", "-fy", str(image))
        if fsck.returncode not in (0, 1):  # 1: errors corrected
            problems.append(f"e2fsck: {fsck.returncode} {fsck.stdout[-300:]}")
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
        process.start()
        if not wait_closed(api, [chat["id"]]):
            problems.append("a reply is still open after the restart")
        if not ledger.post(api, chat["id"], "다시 쓸 수 있어요.", problems):
            problems.append("posting failed after the restart")
        elif not wait_closed(api, [chat["id"]]):
            problems.append("the reply after the restart did not finish")
        ledger.check(api, problems)
        statuses = [status_of(api, s, r) for s, _m, r in ledger.acknowledged]
    finally:
        process.stop()
        if mount.is_mount():
            verify(data, problems)
        run("umount", "-l", str(mount))
    return {"case": "DATA_DIR turned read-only while running", "posts_while_read_only": posts,
            "refused_while_read_only": refused, "acknowledged": len(ledger.acknowledged),
            "reply_statuses": statuses, "problems": problems}


def model_vanishes(work: Path, how: str = "delete", max_tokens: int = 64) -> dict[str, Any]:
    """The loaded model's file is deleted (or renamed) during a reply; then a session asks
    for a model file that cannot be loaded, so the switch must load the vanished one back."""
    problems: Problems = []
    models = work / f"models-{how}"
    models.mkdir()
    loaded = models / "vanishing.gguf"
    shutil.copyfile(MODEL, loaded)
    broken = models / "broken.gguf"  # the header (what the registry reads) without weights
    with MODEL.open("rb") as source, broken.open("wb") as target:
        target.write(source.read(MODEL.stat().st_size // 2))
    process = server(work / f"model-{how}-data", work / f"model-{how}.log",
                     MODEL_PATH=str(loaded), MODELS_DIR=str(models)).start()
    try:
        api = Api(process.url).register("model_admin")
        chat = api.new_session(title="사라지는 모델", max_tokens=max_tokens)
        reply = api.post_message(chat["id"], "제주도에 대해 설명해 주세요.")["reply"]["id"]
        wait_until(lambda: status_of(api, chat["id"], reply) != "queued", 60, 0.05)
        during = status_of(api, chat["id"], reply)
        if how == "delete":
            loaded.unlink()
        else:
            loaded.rename(models / "renamed.bak")
        wait_closed(api, [chat["id"]])
        vanished_reply = status_of(api, chat["id"], reply)
        if vanished_reply != "complete":
            problems.append(f"the reply running when the file vanished ended {vanished_reply}")
        again = api.post_message(chat["id"], "한 번 더 답해 주세요.")["reply"]["id"]
        wait_closed(api, [chat["id"]])
        new_reply = status_of(api, chat["id"], again)
        if new_reply != "complete":
            problems.append(f"a new reply after the file vanished ended {new_reply}")
        listed = api.get("/api/llm/models/")
        if listed.status_code != 200 or any(m["id"] == "vanishing" for m in listed.json()):
            problems.append(f"model list after the file vanished: {listed.text[:200]}")
        # A switch to a file that cannot be loaded: the old file is gone, so nothing is.
        other = api.new_session(title="깨진 모델", model="broken")
        switch = api.post(f"/api/sessions/{other['id']}/messages/", json={"content": "안녕"})
        check_refusal(switch, ("model_load_failed",), problems)
        after = api.post(f"/api/sessions/{chat['id']}/messages/", json={"content": "안녕"})
        check_refusal(after, ("model_not_loaded",), problems)
        for response in (switch, after):
            if str(work) in response.text or ".gguf" in response.text:
                problems.append(f"a path reached the user: {response.text[:200]}")
        health = api.get("/healthz")
        if health.status_code != 200 or health.json()["model_loaded"] is not False:
            problems.append(f"healthz without a model: {health.text}")
        for page in ("/api/sessions/", "/api/llm/models/", "/"):
            if api.get(page).status_code >= 500:
                problems.append(f"{page} failed without a model")
        shutil.copyfile(MODEL, loaded)  # the operator puts a model back and restarts
        process.restart()
        back = api.post_message(chat["id"], "돌아왔나요?")["reply"]["id"]
        wait_closed(api, [chat["id"]])
        if status_of(api, chat["id"], back) != "complete":
            problems.append("no reply after the restart with the model back")
    finally:
        process.stop()
    return {"case": f"model file {how}d while loaded", "status_when_it_vanished": during,
            "that_reply": vanished_reply, "next_reply": new_reply,
            "switch_to_unloadable": f"{switch.status_code} {code_of(switch)}",
            "then": f"{after.status_code} {code_of(after)}",
            "problems": problems}


CASES: dict[str, Callable[[Path, argparse.Namespace], dict[str, Any]]] = {
    "read-only-start": lambda work, _a: read_only_at_start(work),
    "disk-full": lambda work, a: disk_full(work, posts=a.posts),
    "read-only-running": lambda work, a: read_only_while_running(work, posts=a.posts),
    "model-deleted": lambda work, _a: model_vanishes(work, "delete"),
    "model-renamed": lambda work, _a: model_vanishes(work, "rename"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--posts", type=int, default=10, help="posts while the disk refuses")
    args = parser.parse_args()
    if not can_mount():
        print("this drill mounts file systems: run it as root (CAP_SYS_ADMIN)")
        return 2
    failed = 0
    for name in args.case or list(CASES):
        with tempfile.TemporaryDirectory(prefix=f"drill-{name}-") as place:
            started = time.monotonic()
            figures = CASES[name](Path(place), args)
            seconds = time.monotonic() - started
        problems = figures.pop("problems")
        failed += bool(problems)
        print(f"{figures.pop('case')} ({seconds:.0f} s): "
              f"{'OK' if not problems else f'{len(problems)} problems'}")
        for key, value in figures.items():
            print(f"    {key}: {value}")
        for problem in problems:
            print(f"    PROBLEM: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
