"""Searching one's own messages, and the retrieval that long conversations use for context.

Search merges two rankings: keyword matches (substrings, through the trigram index) and
semantic matches (nearest embeddings, so a paraphrase in other words is found too). They
are fused by reciprocal rank, which needs no common scale between bm25 and cosine.
Whatever the vector index suggests is checked against the keyword read model, the
authority on who owns a message and whether its session still exists.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite
import anyio

from app.usecases import fields
from app.usecases.errors import N_, InvalidInput
from projections import search as search_read
from projections.database import ReadDB
from projections.vectors import VectorIndex

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
RRF_K = 60  # the usual reciprocal-rank-fusion constant: damps the weight of the top ranks
SNIPPET_CHARS = 160
MARK_OPEN, MARK_CLOSE = "<mark>", "</mark>"


class SearchDeps(Protocol):
    """What search needs from the composition root (app.services.Services)."""

    @property
    def read_db(self) -> aiosqlite.Connection | ReadDB: ...

    vectors: VectorIndex | None


@dataclass(frozen=True)
class Hit:
    session_id: str
    session_title: str
    message_id: str
    snippet: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "session_title": self.session_title,
                "message_id": self.message_id, "snippet": self.snippet, "score": self.score}


def query_text(q: str | None) -> str:
    """The query as searched: stripped, non-empty, at most MAX_QUERY_CHARS."""
    if q is None or not q.strip():
        raise InvalidInput("q", N_("must not be empty."))
    if "\x00" in q:
        raise InvalidInput("q", N_("must not contain NUL characters."))
    q = " ".join(q.split())
    if len(q) > MAX_QUERY_CHARS:
        raise InvalidInput("q", fields.at_most(MAX_QUERY_CHARS))
    return q


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", fields.between(1, MAX_LIMIT))
    return limit


async def search(
    deps: SearchDeps, user_id: str, q: str | None, limit: int = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """The user's own messages matching `q`, best first:
    [{session_id, session_title, message_id, snippet, score}]."""
    hits = await search_messages(deps.read_db, deps.vectors, user_id, q, limit)
    return [hit.as_dict() for hit in hits]


async def search_messages(
    db: aiosqlite.Connection | ReadDB, vectors: VectorIndex | None, user_id: str, q: str | None,
    limit: int = DEFAULT_LIMIT,
) -> list[Hit]:
    text = query_text(q)
    limit = check_limit(limit)
    keyword = await search_read.keyword_search(db, user_id, text, limit)
    semantic = await _semantic(db, vectors, user_id, text, limit)
    found = {f.message_id: f for f in keyword} | {f.message_id: f for f in semantic}
    scores = fuse([[f.message_id for f in keyword], [f.message_id for f in semantic]])
    words = search_read.terms(text)
    ranked = sorted(scores, key=lambda mid: -scores[mid])[:limit]
    return [
        Hit(session_id=found[mid].session_id, session_title=found[mid].session_title,
            message_id=mid, snippet=snippet(found[mid].content, words),
            score=round(scores[mid], 6))
        for mid in ranked
    ]


async def _semantic(
    db: aiosqlite.Connection | ReadDB, vectors: VectorIndex | None, user_id: str, text: str,
    limit: int,
) -> list[search_read.Found]:
    """Semantic matches, nearest first, limited to what the user may see now."""
    if vectors is None:
        return []
    try:
        nearest = await anyio.to_thread.run_sync(vectors.search, user_id, text, limit)
    except Exception:  # the keyword half still answers
        log.exception("semantic search failed")
        return []
    close = [mid for mid, _similarity in nearest]
    visible = await search_read.visible_messages(db, user_id, close)
    return [visible[mid] for mid in close if mid in visible]


def fuse(rankings: Sequence[Sequence[str]]) -> dict[str, float]:
    """Reciprocal rank fusion: each list adds 1 / (RRF_K + rank) to the ids it holds."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return scores


def snippet(content: str, words: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """HTML-safe excerpt of `content` around the first match, every match in <mark>.

    Without a literal match (a semantic hit) it is the text's beginning, unmarked.
    """
    # Whitespace to single spaces, one for one, so match offsets stay valid.
    flat = re.sub(r"\s", " ", content)
    spans = _match_spans(flat, words)
    start = 0
    if spans:
        start = max(0, min(spans[0][0] - width // 3, len(flat) - width))
    end = min(len(flat), start + width)
    out, at = [], start
    for low, high in spans:
        low, high = max(low, start), min(high, end)
        if low >= high:
            continue
        out.append(html.escape(flat[at:low]))
        out.append(MARK_OPEN + html.escape(flat[low:high]) + MARK_CLOSE)
        at = high
    out.append(html.escape(flat[at:end]))
    return ("…" if start > 0 else "") + "".join(out).strip() + ("…" if end < len(flat) else "")


def _match_spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Case-insensitive occurrences of any word, merged where they overlap, in order."""
    spans = sorted(
        (m.start(), m.end())
        for word in words if word
        for m in re.finditer(re.escape(word), text, re.IGNORECASE)
    )
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


# -- context for long conversations -------------------------------------------------------


def relevant_messages(
    vectors: VectorIndex | None, session_id: str, query: str, exclude_ids: Sequence[str],
    limit: int,
) -> list[tuple[str, str, str, float]]:
    """The session's earlier messages nearest in meaning to `query` (the new message),
    best first, as (message_id, role, content, cosine similarity). `exclude_ids` are the
    turns already in the prompt. Synchronous: called from the inference worker thread.

    Messages not yet embedded (the newest, usually) are simply not returned; without a
    vector index there is nothing to return.
    """
    if vectors is None or limit <= 0 or not query.strip():
        return []
    try:
        related = vectors.related(session_id, query, exclude_ids, limit)
    except Exception:  # the reply goes ahead with the newest turns only
        log.exception("retrieving related messages failed")
        return []
    return [(r.message_id, r.role, r.content, r.score) for r in related]
