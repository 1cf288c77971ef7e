"""Users and their bearer tokens (stored as hashes)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from domain.users import username_key
from projections.base import ISO_FORMAT, Projection, iso, row_dict
from projections.database import ReadDB


class UsersProjection(Projection):
    name = "users"
    version = 2  # v2: the `disabled` column
    tables = ("users", "auth_tokens")
    # BIGINT: SQLite's INTEGER affinity, PostgreSQL's 64-bit integer.
    schema = """
    CREATE TABLE IF NOT EXISTS users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        username_key TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        is_admin BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        last_login_at TEXT,
        disabled BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS auth_tokens (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    """

    def on_User_Registered(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute(
            "INSERT INTO users (id, username, username_key, email, is_admin, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (str(e.originator_id), e.username, username_key(e.username), e.email,
             int(e.is_admin), iso(e.timestamp)),
        )

    def on_User_LoggedIn(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute(
            "INSERT INTO auth_tokens (token_hash, user_id, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (token_hash) DO NOTHING",
            (e.token_hash, str(e.originator_id), iso(e.timestamp)),
        )
        db.execute("UPDATE users SET last_login_at = ? WHERE id = ?",
                   (iso(e.timestamp), str(e.originator_id)))

    def on_User_LoggedOut(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE auth_tokens SET revoked_at = ? WHERE token_hash = ?",
                   (iso(e.timestamp), e.token_hash))

    def on_User_ProfileUpdated(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        for key, value in e.changes.items():
            if key in ("email", "display_name"):
                db.execute(f"UPDATE users SET {key} = ? WHERE id = ?",
                           (value, str(e.originator_id)))

    def on_User_PasswordChanged(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        # Every other sign-in stops: the old password's holder may have made them. No
        # token hash is empty, so '' keeps none when no token is kept.
        db.execute("UPDATE auth_tokens SET revoked_at = ? WHERE user_id = ?"
                   " AND revoked_at IS NULL AND token_hash <> ?",
                   (iso(e.timestamp), str(e.originator_id), e.kept_token or ""))

    def on_User_Disabled(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        # Every token is revoked, not just hidden: enabling the user later revives none.
        db.execute("UPDATE users SET disabled = 1 WHERE id = ?", (str(e.originator_id),))
        db.execute("UPDATE auth_tokens SET revoked_at = ? WHERE user_id = ?"
                   " AND revoked_at IS NULL", (iso(e.timestamp), str(e.originator_id)))

    def on_User_Enabled(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE users SET disabled = 0 WHERE id = ?", (str(e.originator_id),))

    def on_User_AdminGranted(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE users SET is_admin = 1 WHERE id = ?", (str(e.originator_id),))

    def on_User_AdminRevoked(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE users SET is_admin = 0 WHERE id = ?", (str(e.originator_id),))


USER_COLUMNS = (
    "u.id, u.username, u.email, u.display_name, u.is_admin, u.created_at, u.disabled"
)


def _user(row: Any) -> dict[str, Any]:
    user = row_dict(row)
    user["is_admin"] = bool(user["is_admin"])
    user["disabled"] = bool(user["disabled"])
    return user


async def user_for_token(
    db: aiosqlite.Connection | ReadDB, token_hash: str, ttl: timedelta, now: str
) -> dict[str, Any] | None:
    """The user a live (not revoked, not expired) token belongs to, unless disabled."""
    async with db.execute(
        f"SELECT {USER_COLUMNS}, t.created_at AS token_created_at FROM auth_tokens t"
        " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND t.revoked_at IS NULL"
        " AND u.disabled = 0",
        (token_hash,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    user = _user(row)
    expires = _plus(user.pop("token_created_at"), ttl)
    return user if expires > now else None


def _plus(stamp: str, delta: timedelta) -> str:
    moment = datetime.strptime(stamp, ISO_FORMAT)
    return (moment + delta).strftime(ISO_FORMAT)


async def get_user(db: aiosqlite.Connection | ReadDB, user_id: str) -> dict[str, Any] | None:
    async with db.execute(f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?",
                          (user_id,)) as cursor:
        row = await cursor.fetchone()
    return _user(row) if row else None


async def count_users(db: aiosqlite.Connection | ReadDB) -> int:
    async with db.execute("SELECT COUNT(*) FROM users") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
