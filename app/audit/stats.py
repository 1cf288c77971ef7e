"""Figures about a data directory: the log, the read models, the chain head, the sizes.

Either store: the log through `AuditLog` (app/audit/log.py), the read models where
`read_models_for` puts them (the SQLite file, read-only; or PostgreSQL's `read_models`
schema). The figures are the same for the same events on both; only `bytes` differs (files
on SQLite; on PostgreSQL the events table and the read-model schema, and what is left in
DATA_DIR).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.audit.backup import CHROMA, EVENTS, READ_MODELS
from app.audit.log import events_table, missing_table, open_log, open_read_models
from app.config import Settings
from app.event_store import postgres_url, read_models_for
from projections.database import SCHEMA


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _one(db: Any, sql: str) -> Any:
    missing = missing_table(db)
    try:
        row = db.execute(sql).fetchone()
    except missing:  # a table this read model does not have (yet)
        return None
    return row[0] if row else None


def _read_figures(db: Any, head: int) -> dict[str, Any]:
    figures = {
        "users": _one(db, "SELECT COUNT(*) FROM users"),
        "admins": _one(db, "SELECT COUNT(*) FROM users WHERE is_admin = 1 AND disabled = 0"),
        "disabled_users": _one(db, "SELECT COUNT(*) FROM users WHERE disabled = 1"),
        "sessions": _one(db, "SELECT COUNT(*) FROM sessions WHERE deleted = 0"),
        "messages": _one(db, "SELECT COUNT(*) FROM messages"),
        "projections": {},
    }
    if _one(db, "SELECT COUNT(*) FROM projection_positions") is not None:
        figures["projections"] = {
            name: {"position": position, "lag": max(0, head - position)}
            for name, position in db.execute(
                "SELECT name, position FROM projection_positions ORDER BY name")
        }
    row = db.execute(
        "SELECT position, hash FROM hash_chain ORDER BY position DESC LIMIT 1"
    ).fetchone() if _one(db, "SELECT 1 FROM hash_chain LIMIT 1") else None
    figures["chain_head"] = {"position": row[0], "hash": bytes(row[1]).hex()} if row else None
    return figures


def _postgres_bytes(settings: Settings) -> dict[str, int]:
    """The events table and the read-model schema, as PostgreSQL counts them (with
    indexes and TOAST)."""
    db = read_models_for(settings).connect()
    try:
        row = db.execute(
            "SELECT pg_total_relation_size(to_regclass(?)),"
            " (SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            "   JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE n.nspname = ? AND c.relkind IN ('r', 'm'))",
            [f'public."{events_table()}"', SCHEMA]).fetchone()
    finally:
        db.close()
    return {f"postgresql:{events_table()}": int(row[0] or 0),
            f"postgresql:{SCHEMA}": int(row[1] or 0)}


def collect(settings: Settings) -> dict[str, Any]:
    data_dir = settings.data_dir
    log = open_log(settings)
    try:
        head = log.head()
        by_type = {topic.split(":", 1)[-1]: count
                   for topic, count in log.counts_by_topic().items()}
        figures: dict[str, Any] = {"events": head, "events_by_type": by_type}
        db = open_read_models(settings)
        if db is not None:
            try:
                figures.update(_read_figures(db, head))
            finally:
                db.close()
        sizes: dict[str, int] = {}
        if postgres_url(settings) is not None:
            sizes.update(_postgres_bytes(settings))
    finally:
        log.close()
    on_disk = (EVENTS, READ_MODELS, CHROMA) if not sizes else (READ_MODELS, CHROMA)
    figures["bytes"] = {**{name: _size(data_dir / name) for name in on_disk
                           if (data_dir / name).exists()}, **sizes}
    return figures
