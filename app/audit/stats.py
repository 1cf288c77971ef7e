"""Figures about a data directory: the log, the read models, the chain head, the files."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from app.audit.backup import CHROMA, EVENTS, READ_MODELS
from app.audit.log import connect_readonly
from app.audit.log import head as log_head


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _one(db: sqlite3.Connection, sql: str) -> Any:
    try:
        row = db.execute(sql).fetchone()
    except sqlite3.OperationalError:  # a table this read model does not have (yet)
        return None
    return row[0] if row else None


def collect(data_dir: Path) -> dict[str, Any]:
    log = connect_readonly(data_dir / EVENTS)
    try:
        head = log_head(log)
        by_type = {
            topic.split(":", 1)[-1]: count for topic, count in log.execute(
                "SELECT topic, COUNT(*) FROM stored_events GROUP BY topic ORDER BY 2 DESC")
        }
    finally:
        log.close()
    figures: dict[str, Any] = {"events": head, "events_by_type": by_type}
    read_path = data_dir / READ_MODELS
    if read_path.is_file():
        db = connect_readonly(read_path)
        try:
            figures.update({
                "users": _one(db, "SELECT COUNT(*) FROM users"),
                "admins": _one(db, "SELECT COUNT(*) FROM users WHERE is_admin = 1"
                                   " AND disabled = 0"),
                "disabled_users": _one(db, "SELECT COUNT(*) FROM users WHERE disabled = 1"),
                "sessions": _one(db, "SELECT COUNT(*) FROM sessions WHERE deleted = 0"),
                "messages": _one(db, "SELECT COUNT(*) FROM messages"),
                "projections": {
                    name: {"position": position, "lag": max(0, head - position)}
                    for name, position in db.execute(
                        "SELECT name, position FROM projection_positions ORDER BY name")
                },
            })
            row = db.execute(
                "SELECT position, hash FROM hash_chain ORDER BY position DESC LIMIT 1"
            ).fetchone() if _one(db, "SELECT 1 FROM hash_chain LIMIT 1") else None
            figures["chain_head"] = (
                {"position": row[0], "hash": bytes(row[1]).hex()} if row else None)
        finally:
            db.close()
    figures["bytes"] = {name: _size(data_dir / name) for name in (EVENTS, READ_MODELS, CHROMA)
                        if (data_dir / name).exists()}
    return figures
