"""Rendering a streaming reply as Markdown: cost per piece, start vs end of a long reply.

A realistic ~2,000-token reply (prose, headings, nested lists, a table, a task list, four
code blocks) is cut into the pieces the model would stream, using the default model's own
tokenizer (vocabulary only, no inference). Each piece goes through the streaming renderer
(app/rendering/streaming.py: frozen blocks + re-rendered tail). Reference, in the same run:
the naive way, re-rendering the whole text so far for every piece. Two granularities: one
piece per token (the worst case) and one per 8 tokens (the actor commits a token event per
8 tokens or 50 ms, and the live page renders per event).

    .venv/bin/python bench/markdown_render.py
"""

from __future__ import annotations

import codecs
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from llama_cpp import Llama

from app.rendering.markdown import render_uncached
from app.rendering.streaming import StreamingMarkdown

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EDGE = 0.10  # "start" and "end": the first and the last 10 % of the pieces

REPLY = '''\
Sure! Below is a complete walkthrough for building a small **REST API** in Python with
*FastAPI* and SQLite. 아래 예제는 그대로 복사해서 실행할 수 있습니다. We will go step by step:
first the project layout, then the data model, the endpoints, tests, and finally a few
notes about deployment.

## 1. Overview

The service keeps a list of notes. Each note has a title, a body and a creation time.
The API offers the usual operations:

1. **Create** a note with `POST /notes`
2. **List** notes with `GET /notes`, newest first, with optional paging:
   - `limit` (default 20, at most 100)
   - `offset` (default 0)
3. **Read** one note with `GET /notes/{id}`
4. **Delete** a note with `DELETE /notes/{id}`

Why FastAPI? It validates requests from type hints, writes the OpenAPI schema for you
and is fast enough for almost anything a small team needs.

## 2. Setup

Create a virtual environment and install the dependencies:

```bash
python3 -m venv .venv
source .venv/bin/activate
pip install fastapi "uvicorn[standard]" pydantic pytest httpx
mkdir -p notes_api/tests && cd notes_api
```

The project will look like this when we are done:

```text
notes_api/
├── app.py
├── db.py
└── tests/
    └── test_notes.py
```

## 3. The database layer

We keep all SQL in one small module. Every function opens its own connection, which is
the simplest safe choice with SQLite when requests run in a thread pool.

```python
"""db.py — storage for notes (SQLite, one file)."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

DB_PATH = Path("notes.sqlite")

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
)
"""


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(DB_PATH)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


def init() -> None:
    with connect() as conn:
        conn.execute(SCHEMA)


def create_note(title: str, body: str) -> dict:
    now = datetime.now(timezone.utc).isoformat()
    with connect() as conn:
        cur = conn.execute(
            "INSERT INTO notes (title, body, created_at) VALUES (?, ?, ?)",
            (title, body, now),
        )
        return {"id": cur.lastrowid, "title": title, "body": body, "created_at": now}


def list_notes(limit: int, offset: int) -> list[dict]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT * FROM notes ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [dict(row) for row in rows]
```

> **Note:** `created_at` is stored as an ISO 8601 string in UTC. SQLite has no real
> date type, and ISO strings sort correctly as text.

## 4. The endpoints

Now the API itself. Pydantic models describe what comes in and what goes out, so invalid
input is rejected with a clear `422` response before our code even runs.

```python
"""app.py — the HTTP API."""
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

import db

app = FastAPI(title="Notes")


class NoteIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(default="", max_length=10_000)


class NoteOut(NoteIn):
    id: int
    created_at: str


@app.on_event("startup")
def startup() -> None:
    db.init()


@app.post("/notes", response_model=NoteOut, status_code=201)
def create(note: NoteIn) -> dict:
    return db.create_note(note.title, note.body)


@app.get("/notes", response_model=list[NoteOut])
def index(limit: int = Query(20, le=100), offset: int = Query(0, ge=0)) -> list[dict]:
    return db.list_notes(limit, offset)


@app.get("/notes/{note_id}", response_model=NoteOut)
def read(note_id: int) -> dict:
    for note in db.list_notes(limit=1, offset=0):
        if note["id"] == note_id:
            return note
    raise HTTPException(status_code=404, detail="note not found")
```

Run it with `uvicorn app:app --reload` and open <http://127.0.0.1:8000/docs> to try every
endpoint from the browser.

## 5. Choosing a database

| Option | Setup | Concurrency | Good for |
|:-------|:-----:|:------------|---------:|
| SQLite | none | one writer at a time | prototypes, personal tools |
| PostgreSQL | a server | many writers | production services |
| DuckDB | none | one writer | analytics, reports |
| 메모리 (dict) | none | none | 테스트 전용 |

For this tutorial SQLite is the right choice: there is nothing to install and the whole
database is one file you can copy or delete.

## 6. Testing

FastAPI ships a test client built on `httpx`. Each test gets a fresh database file, so
tests never depend on each other:

```python
import pytest
from fastapi.testclient import TestClient

import app as notes_app
import db


@pytest.fixture
def client(tmp_path, monkeypatch):
    monkeypatch.setattr(db, "DB_PATH", tmp_path / "test.sqlite")
    db.init()
    return TestClient(notes_app.app)


def test_create_and_list(client):
    response = client.post("/notes", json={"title": "장보기", "body": "우유, 빵"})
    assert response.status_code == 201
    notes = client.get("/notes").json()
    assert [n["title"] for n in notes] == ["장보기"]


def test_title_is_required(client):
    assert client.post("/notes", json={"body": "no title"}).status_code == 422
```

## 7. Checklist before you ship

- [x] Input validation (Pydantic does it)
- [x] Tests for the happy path and for bad input
- [ ] Authentication (for example an API key header)
- [ ] Backups of `notes.sqlite`
- [ ] Logging and a health check endpoint

## 8. 요약

**FastAPI**와 **SQLite**로 작은 API를 만들었습니다.

- SQL은 `db.py`에 모았습니다.
- 검증은 *Pydantic*이 합니다.

배포할 때는 ~~개발 서버~~ 워커 여러 개로 실행하세요.

Next, I can add authentication or a small HTML front end. Which would help most?
'''


def token_pieces(text: str) -> list[str]:
    """The text as the model streams it: one string per token (UTF-8 kept whole)."""
    llm = Llama(str(MODEL), vocab_only=True, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    decoder = codecs.getincrementaldecoder("utf-8")()
    pieces = [decoder.decode(llm.detokenize([t])) for t in tokens]
    pieces[-1] += decoder.decode(b"", final=True)
    return pieces


def batched(pieces: list[str], size: int) -> list[str]:
    return ["".join(pieces[i:i + size]) for i in range(0, len(pieces), size)]


def streaming_costs(pieces: list[str]) -> list[float]:
    renderer = StreamingMarkdown()
    costs = []
    for piece in pieces:
        started = time.perf_counter()
        renderer.feed(piece)
        costs.append(time.perf_counter() - started)
    started = time.perf_counter()
    renderer.finish()
    costs[-1] += time.perf_counter() - started
    return costs


def naive_costs(pieces: list[str]) -> list[float]:
    text = ""
    costs = []
    for piece in pieces:
        text += piece
        started = time.perf_counter()
        render_uncached(text)
        costs.append(time.perf_counter() - started)
    return costs


def summary(costs: list[float]) -> tuple[float, float, float, float, float]:
    """Mean ms per piece over the first and the last 10 %, the highest mean over any 10 %
    window (the tail is then a long code block), the worst piece, the total (ms)."""
    edge = max(1, int(len(costs) * EDGE))
    windows = [statistics.mean(costs[i:i + edge]) for i in range(0, len(costs) - edge + 1)]
    return (statistics.mean(costs[:edge]) * 1000, statistics.mean(costs[-edge:]) * 1000,
            max(windows) * 1000, max(costs) * 1000, sum(costs) * 1000)


def report(name: str, costs: list[float]) -> float:
    start, end, window, worst, total = summary(costs)
    print(f"  {name:<20} start {start:6.2f}  end {end:6.2f}  worst window {window:6.2f}"
          f"  worst piece {worst:6.2f}  total {total:7.0f} ms")
    return total


def run(label: str, pieces: list[str],
        measure: Callable[[list[str]], list[float]] = streaming_costs) -> None:
    print(f"{label}: {len(pieces)} pieces")
    streaming = report("streaming renderer", measure(pieces))
    naive = report("naive (whole text)", naive_costs(pieces))
    print(f"  naive / streaming total: {naive / streaming:.1f}x")


def main() -> None:
    pieces = token_pieces(REPLY)
    text = "".join(pieces)
    assert text == REPLY
    print(f"reply: {len(pieces)} tokens (SmolLM2 tokenizer), {len(text)} characters,"
          f" final HTML {len(render_uncached(text))} characters")  # also loads the lexers
    print("ms per piece: mean over the first / last 10 % of pieces, highest 10 % window")
    run("one piece per token", pieces)
    run("one piece per 8 tokens (one token event)", batched(pieces, 8))


if __name__ == "__main__":
    main()
