"""The model registry: every GGUF file the server may run, described from its own header.

Files come from the models directory, `MODEL_PATHS` (files or directories) and `MODEL_PATH`.
Each is described by reading the GGUF key/value header only (context length, chat template,
architecture, name), never the weights, so listing costs milliseconds even for 7B files.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
# GGUF value types: fixed-size scalars by type id (struct format), then string and array.
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
WANTED_SUFFIXES = (".context_length",)
WANTED_KEYS = ("general.architecture", "general.name", "tokenizer.chat_template")
MAX_STRING = 16 << 20  # a sanity bound: a longer "string" means a corrupt header


class NotGguf(Exception):
    """The file is not a readable GGUF model."""


@dataclass(frozen=True)
class ModelFile:
    id: str
    path: Path
    size_bytes: int
    n_ctx_train: int | None  # the context length the model was trained with
    chat_template: str | None
    architecture: str | None
    name: str | None


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise NotGguf("the header ends early")
    return data


def _u64(f: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(f, 8))[0])


def _string(f: BinaryIO, keep: bool = True) -> str:
    n = _u64(f)
    if n > MAX_STRING:
        raise NotGguf("a header string is implausibly long")
    if not keep:
        f.seek(n, 1)
        return ""
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int, keep: bool) -> Any:
    if kind in SCALARS:
        fmt = SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == STRING:
        return _string(f, keep)
    if kind == ARRAY:
        item_kind = struct.unpack("<I", _read(f, 4))[0]
        count = _u64(f)
        if item_kind in SCALARS:  # skip the whole array at once
            f.seek(count * struct.calcsize(SCALARS[item_kind]), 1)
        else:
            for _ in range(count):
                _value(f, item_kind, keep=False)
        return None
    raise NotGguf(f"unknown value type {kind}")


def read_header(path: Path) -> dict[str, Any]:
    """The header keys this registry uses (a subset of the file's metadata)."""
    found: dict[str, Any] = {}
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise NotGguf("no GGUF magic number")
        version = struct.unpack("<I", _read(f, 4))[0]
        if version < 2:
            raise NotGguf(f"GGUF version {version} is too old")
        _u64(f)  # tensor count
        for _ in range(_u64(f)):
            key = _string(f)
            kind = struct.unpack("<I", _read(f, 4))[0]
            wanted = key in WANTED_KEYS or key.endswith(WANTED_SUFFIXES)
            value = _value(f, kind, keep=wanted)
            if wanted:
                found[key] = value
    return found


def describe(path: Path) -> ModelFile:
    header = read_header(path)
    arch = header.get("general.architecture")
    n_ctx = header.get(f"{arch}.context_length") if arch else None
    return ModelFile(
        id=path.stem, path=path, size_bytes=path.stat().st_size,
        n_ctx_train=int(n_ctx) if isinstance(n_ctx, int) else None,
        chat_template=header.get("tokenizer.chat_template"),
        architecture=arch, name=header.get("general.name"),
    )


def parse_paths(raw: str) -> list[Path]:
    """MODEL_PATHS: entries separated by commas or colons."""
    return [Path(part.strip()) for part in raw.replace(":", ",").split(",") if part.strip()]


class ModelRegistry:
    """Scans on every call (a directory listing and a few header reads), remembering each
    file's description while its size and modification time stay the same."""

    def __init__(self, models_dir: Path, extra: Iterable[Path], default: Path) -> None:
        self._models_dir = models_dir
        self._extra = list(extra)
        self.default_path = default
        self._known: dict[Path, tuple[tuple[int, int], ModelFile]] = {}

    def _candidates(self) -> list[Path]:
        found: list[Path] = []
        for place in [self._models_dir, *self._extra, self.default_path]:
            if place.is_dir():
                found += sorted(p for p in place.glob("*.gguf") if p.is_file())
            elif place.is_file():
                found.append(place)
        # One entry per path, not per inode: a link is another name for a model on purpose.
        unique: dict[Path, Path] = {}
        for path in found:
            unique.setdefault(path.absolute(), path)
        return list(unique.values())

    def models(self) -> list[ModelFile]:
        """Every readable model, the default first; unreadable files are left out."""
        listed: list[ModelFile] = []
        seen_ids: set[str] = set()
        for path in self._candidates():
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            cached = self._known.get(path)
            if cached is None or cached[0] != stamp:
                try:
                    cached = (stamp, describe(path))
                except (NotGguf, OSError):
                    continue
                self._known[path] = cached
            model = cached[1]
            if model.id not in seen_ids:  # the first file of a name wins
                seen_ids.add(model.id)
                listed.append(model)
        default = self.default_path.absolute()
        listed.sort(key=lambda m: m.path.absolute() != default)
        return listed

    def find(self, model_id: str) -> ModelFile | None:
        return next((m for m in self.models() if m.id == model_id), None)

    def is_default(self, model: ModelFile) -> bool:
        return model.path.absolute() == self.default_path.absolute()
