"""Saved KV state of chats that lost their sequence slot, on disk within a size budget.

One file per chat: a small header, the chat's tokens (what the state holds, position by
position), then llama.cpp's sequence state bytes. Least recently used files go first when
the budget is exceeded. Files are written under a temporary name and renamed, so a crash
leaves either the old entry or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"LCKV1\0"
HEADER = struct.Struct("<6sQQ")  # magic, token count, state byte count


@dataclass(frozen=True)
class SavedState:
    tokens: list[int]
    data: bytes


class SeqStateCache:
    def __init__(self, directory: Path, budget_bytes: int) -> None:
        self.directory = directory
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")

    def put(self, key: str, tokens: list[int], data: bytes) -> bool:
        """Store a chat's state; False when it alone is larger than the whole budget or
        the disk refuses it."""
        size = HEADER.size + 4 * len(tokens) + len(data)
        path = self._path(key)
        with self._lock:
            if size > self.budget_bytes:
                path.unlink(missing_ok=True)
                return False
            temporary = path.with_suffix(".tmp")
            try:
                with temporary.open("wb") as file:
                    file.write(HEADER.pack(MAGIC, len(tokens), len(data)))
                    file.write(array("i", tokens).tobytes())
                    file.write(data)
                os.replace(temporary, path)
            except OSError as error:  # a full or read-only disk: the chat is read again
                log.warning("KV state of %s not saved: %s", key, error.strerror or error)
                temporary.unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                return False
            self._trim(keep=path)
        return True

    def take(self, key: str) -> SavedState | None:
        """Remove and return a chat's state (the live slot owns it from now on)."""
        path = self._path(key)
        with self._lock:
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return None
            path.unlink(missing_ok=True)
        try:
            magic, n_tokens, n_data = HEADER.unpack_from(raw)
            body = HEADER.size + 4 * n_tokens
            if magic != MAGIC or len(raw) != body + n_data:
                raise ValueError("bad size or magic")
        except (struct.error, ValueError) as error:
            log.warning("dropping unreadable KV cache file %s: %s", path.name, error)
            return None
        tokens = array("i")
        tokens.frombytes(raw[HEADER.size:body])
        return SavedState(tokens.tolist(), raw[body:])

    def discard(self, key: str) -> None:
        with self._lock:
            self._path(key).unlink(missing_ok=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("*.kv"))

    def _trim(self, keep: Path) -> None:
        files = []
        for path in self.directory.glob("*.kv"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size
