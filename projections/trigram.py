"""SQLite FTS5's trigram matching and bm25 ranking, reproduced in Python for PostgreSQL.

Keyword search on SQLite is an FTS5 table with the trigram tokenizer; on PostgreSQL it is
a table with a pg_trgm index (projections/search.py). For both to give the same answers in
the same order, PostgreSQL's side matches and ranks exactly as FTS5 does:

- Text is indexed up to its first NUL only (FTS5 and SQLite's LIKE stop there), as
  trigrams of characters folded by FTS5's own case folding (`fold`), which is neither
  Python's `lower()` nor PostgreSQL's (that one depends on the server's locale).
- A word of three characters or more matches where its folding occurs in the folded text;
  SQLite's LIKE, used for shorter words, ignores the case of ASCII letters only
  (`ascii_fold`): the folded text finds all it finds, and exactly that for most words
  (`like_is_fold`).
- The rank is FTS5's `bm25()` with its constants and arithmetic (`bm25`), which needs the
  table's row count, its total of tokens, and how many rows hold each word.
"""

from __future__ import annotations

import math
import sqlite3
import string
from collections.abc import Sequence
from functools import cache

# Case mappings end below U+1F000 (Adlam, U+1E900, is the last cased script).
_CASED_BELOW = 0x1F000
# SQLite reads U+FFFE and U+FFFF as U+FFFD (its UTF-8 decoder's rule for non-characters).
_NONCHARACTERS = {0xFFFE: 0xFFFD, 0xFFFF: 0xFFFD}

_ASCII_UPPER = string.ascii_uppercase + "\ufffe\uffff"
_ASCII_TABLE = str.maketrans(_ASCII_UPPER, string.ascii_lowercase + "\ufffd\ufffd")

K1, B = 1.2, 0.75  # fts5_aux.c's bm25 constants


@cache
def _fold_table() -> dict[int, int]:
    """FTS5's case folding (the trigram tokenizer, case_sensitive=0), asked of this SQLite:
    every character with a case mapping, in one row of an FTS5 table, read back as terms."""
    cased = [c for c in range(1, _CASED_BELOW) if not 0xD800 <= c <= 0xDFFF
             and (chr(c).lower() != chr(c) or chr(c).upper() != chr(c)
                  or chr(c).casefold() != chr(c))]
    probe = [*cased, *_NONCHARACTERS]
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE t USING fts5(content, tokenize='trigram')")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        db.execute("INSERT INTO t (rowid, content) VALUES (1, ?)",
                   ("".join(map(chr, probe)) + "  ",))
        # The term at offset i is the folding of characters i, i+1 and i+2.
        table = {probe[offset]: ord(term[0])
                 for term, offset in db.execute("SELECT term, offset FROM v")
                 if offset < len(probe)}
    finally:
        db.close()
    return {c: f for c, f in table.items() if c != f}


@cache
def _beyond_ascii() -> frozenset[str]:
    """The characters FTS5's folding moves beyond SQLite's LIKE (ASCII case), and those it
    moves them to."""
    moved = {c: f for c, f in _fold_table().items() if chr(c) not in _ASCII_UPPER}
    return frozenset(map(chr, moved)) | frozenset(map(chr, moved.values()))


def like_is_fold(word: str) -> bool:
    """Whether finding `fold(word)` in a folded text is exactly SQLite's LIKE finding `word`
    in the text: true unless the word has a character of `_beyond_ascii` (then "é" would
    find "É", and "k" the Kelvin sign, which LIKE does not)."""
    return _beyond_ascii().isdisjoint(ascii_fold(word))


def indexed(text: str) -> str:
    """The part of `text` FTS5 indexes and SQLite's LIKE reads: up to its first NUL."""
    end = text.find("\x00")
    return text if end < 0 else text[:end]


def fold(text: str) -> str:
    """`text` as FTS5's trigram tokenizer folds it (one character for one)."""
    return text.translate(_fold_table())


def ascii_fold(text: str) -> str:
    """`text` as SQLite's LIKE compares it: ASCII letters in lower case."""
    return text.translate(_ASCII_TABLE)


def tokens(chars: int) -> int:
    """How many trigrams FTS5 counts in an indexed text of `chars` characters."""
    return max(chars - 2, 0)


def occurrences(text: str, word: str) -> int:
    """Matches of a phrase as FTS5 counts them: every position, overlapping ones too."""
    count, at = 0, text.find(word)
    while at >= 0:
        count += 1
        at = text.find(word, at + 1)
    return count


def bm25(freqs: Sequence[int], doc_tokens: int, rows: int, total_tokens: int,
         hits: Sequence[int]) -> float:
    """fts5_aux.c's bm25 for one row: `freqs[i]` matches of phrase i in the row, `hits[i]`
    rows holding phrase i, over a table of `rows` rows and `total_tokens` tokens. Same
    operations in the same order, so the same double: ties fall as in SQLite."""
    avgdl = float(total_tokens) / float(rows)
    score = 0.0
    for freq, hit in zip(freqs, hits, strict=True):
        idf = math.log((rows - hit + 0.5) / (hit + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        f = float(freq)
        score += idf * ((f * (K1 + 1.0)) / (f + K1 * (1 - B + B * float(doc_tokens) / avgdl)))
    return -1.0 * score
