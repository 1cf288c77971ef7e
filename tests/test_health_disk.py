"""/healthz reports a DATA_DIR that refuses writes (`data_dir: "error"`, 503) and recovers
when it takes them again, probing the disk at most once per few seconds, off the event loop.

The disks are real, as in drills/resources.py: a tmpfs filled with `dd`, a read-only bind
mount, and a hung one (an ext4 image frozen with `fsfreeze`: writes wait in the kernel
until it is thawed). They mount, so they need root and are skipped elsewhere."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.storage import WritableProbe, check_writable
from drills import resources
from tests.clock import Clock
from tests.postgres import event_store_url
from tests.server import ServerProcess

needs_mount = pytest.mark.skipif(not resources.can_mount(),
                                 reason="mounts file systems: needs root (CAP_SYS_ADMIN)")
PROBE_THREAD = "data-dir-probe"


def probe_threads() -> int:
    return sum(thread.name == PROBE_THREAD for thread in threading.enumerate())


@needs_mount
def test_a_full_disk_is_found_once_the_cached_answer_is_old(tmp_path: Path) -> None:
    clock = Clock()
    with resources.tmpfs(tmp_path / "작은디스크", "4m") as mount:
        data = mount / "데이터"
        probe = WritableProbe(data, ttl=5, timeout=30, clock=clock)

        async def drill() -> list[bool]:
            seen = [await probe.writable()]
            filler = resources.fill(mount)
            with pytest.raises(OSError) as full:
                check_writable(data)  # the disk really refuses now
            assert full.value.errno == errno.ENOSPC
            seen.append(await probe.writable())  # within 5 s: the cached answer, no write
            clock.now += 5
            seen.append(await probe.writable())
            filler.unlink()
            seen.append(await probe.writable())  # cached again
            clock.now += 5
            seen.append(await probe.writable())
            return seen

        assert asyncio.run(drill()) == [True, True, False, False, True]


@needs_mount
def test_a_read_only_disk_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "읽기전용"
    data.mkdir()
    with resources.read_only_bind(data):
        assert asyncio.run(WritableProbe(data).writable()) is False
    assert asyncio.run(WritableProbe(data).writable()) is True


@pytest.fixture
def frozen_ext4(tmp_path: Path) -> Iterator[tuple[Path, list[bool]]]:
    """A mounted ext4 image, and a switch: `frozen[0] = True` freezes it (thawed at the end,
    whatever happens: a thread waiting in a frozen write cannot be killed)."""
    image, mount = tmp_path / "ext4.img", tmp_path / "멈춘디스크"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    frozen = [False]
    try:
        yield mount, frozen
    finally:
        subprocess.run(["fsfreeze", "-u", str(mount)], capture_output=True, check=False)
        for thread in threading.enumerate():
            if thread.name == PROBE_THREAD:
                thread.join(30)
        subprocess.run(["umount", str(mount)], check=True)


@needs_mount
def test_a_hung_disk_counts_as_refusing_and_holds_one_thread(
        frozen_ext4: tuple[Path, list[bool]]) -> None:
    mount, _ = frozen_ext4
    clock = Clock()
    probe = WritableProbe(mount / "데이터", ttl=5, timeout=0.5, clock=clock)

    async def drill() -> list[Any]:
        seen: list[Any] = [await probe.writable()]
        subprocess.run(["fsfreeze", "-f", str(mount)], check=True)
        clock.now += 5
        ticks = 0

        async def tick() -> None:  # runs only if the event loop is not blocked
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(tick())
        seen.append(await probe.writable())  # the write hangs: an error after 0.5 s
        ticking.cancel()
        seen.append(ticks > 1)
        seen.append(probe_threads())
        clock.now += 5
        seen.append(await probe.writable())  # still hung: an error at once, no new thread
        seen.append(probe_threads())
        subprocess.run(["fsfreeze", "-u", str(mount)], check=True)
        while probe_threads():  # the hung write ends once thawed
            await asyncio.sleep(0.01)
        clock.now += 5
        seen.append(await probe.writable())
        return seen

    assert asyncio.run(drill()) == [True, False, True, 1, False, 1, True]


def health(process: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{process.url}/healthz", timeout=30)
    return response.status_code, response.json()


def wait_health(process: ServerProcess, status: int, limit: float = 60) -> dict[str, Any]:
    """/healthz once it answers `status` (its disk answer is cached a few seconds)."""
    deadline = time.monotonic() + limit
    while True:
        code, body = health(process)
        if code == status or time.monotonic() > deadline:
            assert code == status, body
            return body
        time.sleep(0.2)


@needs_mount
@pytest.mark.both_stores
def test_healthz_is_503_while_the_data_dir_is_full_and_200_once_it_has_room(
        tmp_path: Path, request: pytest.FixtureRequest, store: str) -> None:
    with resources.tmpfs(tmp_path / "가득", "64m") as mount:
        process = ServerProcess(mount / "data", event_store_url(request, store))
        process.log_path = tmp_path / "server.log"  # outside the disk that fills
        process.start()
        try:
            code, body = health(process)
            assert code == 200
            assert body == {"status": "ok", "model_loaded": True, "event_store": "ok",
                            "projections": "ok", "data_dir": "ok"}
            filler = resources.fill(mount)
            body = wait_health(process, 503)
            assert body == {"status": "error", "model_loaded": True, "event_store": "ok",
                            "projections": "ok", "data_dir": "error"}
            filler.unlink()
            body = wait_health(process, 200)
            assert body["data_dir"] == "ok" and body["status"] == "ok"
        finally:
            process.stop()
    assert "refuses writes: No space left on device" in process.log_path.read_text()
