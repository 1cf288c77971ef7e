"""Resources (issue 7 drills): a full or read-only disk and a vanishing model file give a
clear error, lose nothing acknowledged, and recover without hand work.

The server cases are drills/resources.py's, run small: real servers on real file systems
(a filled tmpfs, a read-only bind mount, an ext4 image the kernel turns read-only). They
mount, so they need root and are skipped elsewhere."""

from __future__ import annotations

import errno
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.inference.batched_engine import BatchedEngine
from app.inference.engine import Turn
from app.inference.jobs import MODEL_FAILED, Failed, GenerationRequest
from app.inference.kv_cache import SeqStateCache
from app.inference.sampling import GenerationParams
from app.storage import check_writable, storage_problem
from domain.application import SNAPSHOT_INTERVAL, ChatApplication
from drills import resources

needs_mount = pytest.mark.skipif(not resources.can_mount(),
                                 reason="mounts file systems: needs root (CAP_SYS_ADMIN)")


@needs_mount
def test_an_unwritable_data_dir_stops_the_start_in_one_line(tmp_path: Path) -> None:
    figures = resources.read_only_at_start(tmp_path)
    assert figures["problems"] == []
    assert figures["exit_code"] == 3 and "Read-only file system" in figures["error_line"]


@needs_mount
def test_a_full_disk_refuses_writes_with_503_and_the_server_recovers_in_place(
        tmp_path: Path) -> None:
    figures = resources.disk_full(tmp_path, posts=3, max_tokens=8)
    assert figures["problems"] == []
    assert figures["refused_while_full"] >= 1  # the disk really refused
    assert figures["acknowledged"] >= 3  # two before, one after


@needs_mount
def test_a_file_system_turned_read_only_is_recovered_by_the_next_start(
        tmp_path: Path) -> None:
    figures = resources.read_only_while_running(tmp_path, posts=2, max_tokens=16)
    assert figures["problems"] == []
    assert figures["refused_while_read_only"] == 2


def test_the_model_file_vanishing_keeps_replies_going_and_hides_its_path(
        tmp_path: Path) -> None:
    """Deleted while loaded: the mapped weights stay readable (Linux keeps a deleted file
    while it is mapped), so the running reply and the next complete; a switch that must
    load the vanished file back fails with 503, never naming the file."""
    figures = resources.model_vanishes(tmp_path, "delete", max_tokens=8)
    assert figures["problems"] == []
    assert (figures["that_reply"], figures["next_reply"]) == ("complete", "complete")


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with resources.tmpfs(tmp_path / "full", "4m") as mount:
        resources.fill(mount)
        yield mount


@needs_mount
def test_a_kv_state_the_disk_refuses_is_dropped_and_leaves_no_partial_file(
        full_tmpfs: Path) -> None:
    cache = SeqStateCache(full_tmpfs / "kv-cache", 64 << 20)
    assert cache.put("대화", [1, 2, 3], b"\0" * (1 << 20)) is False
    assert cache.take("대화") is None
    assert list((full_tmpfs / "kv-cache").iterdir()) == []


@needs_mount
def test_the_start_check_finds_a_full_disk(full_tmpfs: Path) -> None:
    with pytest.raises(OSError) as refused:
        check_writable(full_tmpfs / "data")
    assert refused.value.errno == errno.ENOSPC and storage_problem(refused.value)


def test_storage_errors_are_told_apart_by_their_codes(tmp_path: Path) -> None:
    path = tmp_path / "읽기전용.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        read_only.execute("INSERT INTO t VALUES ('가')")
    assert storage_problem(refused.value)  # SQLITE_READONLY
    with pytest.raises(sqlite3.OperationalError) as mistake:
        read_only.execute("SELECT * FROM 없는_표")
    assert not storage_problem(mistake.value)  # a bug stays a 500
    assert storage_problem(OSError(errno.ENOSPC, "No space left on device"))
    assert not storage_problem(OSError(errno.ENOENT, "No such file"))


def test_a_refused_snapshot_does_not_make_a_committed_save_look_failed(tmp_path: Path) -> None:
    """A fake failure, said here: a trigger refuses the snapshot row, standing in for a disk
    with room for the small event but not the larger snapshot written after it (filling a
    disk to that byte is not reproducible). Before the fix the save raised although its
    event was committed: a post answered 503 'not saved' and its reply stayed queued."""
    db = tmp_path / "events.sqlite"
    chat = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(db)})
    owner = uuid.uuid4()
    session_id, _ = chat.start_session(owner, "스냅숏", {"system_prompt": "", "temperature": 0.7,
                                                        "top_p": 0.95, "max_tokens": 8})
    n = 0
    while chat.get_session(session_id).version < SNAPSHOT_INTERVAL - 1:
        n += 1
        chat.update_session(session_id, owner, f"제목 {n}", {})
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TRIGGER no_room BEFORE INSERT ON stored_snapshots "
                    "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END")
    head = chat.head()
    position = chat.update_session(session_id, owner, "백 번째 제목", {})
    assert position == head + 1 == chat.head()
    assert chat.get_session(session_id).title == "백 번째 제목"
    chat.close()


class FailingStepEngine(BatchedEngine):
    """A fake failure, said here: the real llama.cpp cannot be made to raise on demand.
    Its sampling raises with a file path in the message, as a native error might."""

    def _sample(self, entries: list[Any]) -> None:
        raise RuntimeError("/srv/비밀/models/model.gguf: tensor read failed")


def test_a_batched_engine_error_tells_the_user_nothing_internal() -> None:
    """Issue 7 item 9, the batched path (tests/test_actor.py covers the serial one)."""
    settings = Settings()
    engine = FailingStepEngine(settings.model_path, n_ctx=512, n_parallel=2, n_threads=1,
                               n_batch=64)
    try:
        tokens = engine.prepare("", [Turn("user", "안녕하세요")], 8).tokens
        failed = engine.submit(GenerationRequest(
            tokens, GenerationParams(temperature=0.0, top_p=0.95, max_tokens=8)),
            lambda _event: None)
        assert failed.done.wait(120)
        assert failed.outcome == Failed("generation_failed", MODEL_FAILED)
        assert "/srv" not in MODEL_FAILED and "tensor" not in MODEL_FAILED
    finally:
        engine.close()

