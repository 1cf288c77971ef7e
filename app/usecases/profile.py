"""The user's own account: changing the password, and their usage day by day."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio

from app.security import hash_password, token_hash, verify_password
from app.services import Services
from app.usecases import accounts, fields
from app.usecases.errors import N_, InvalidInput
from projections import messages as messages_read

USAGE_DAYS = 30
MAX_USAGE_DAYS = 366


@dataclass(frozen=True)
class DayUsage:
    day: date
    messages: int
    tokens: int


async def change_password(services: Services, user_id: str, token: str | None,
                          values: Mapping[str, Any]) -> None:
    """Check the current password, record the new one; every sign-in but `token` (the
    caller's own, kept so the page that asked stays signed in) stops working."""
    current = fields.required_text(values, "current_password", max_len=1024)
    new = fields.password({"password": values.get("new_password")})
    user = await services.command(services.chat.get_user, UUID(user_id))
    if not await anyio.to_thread.run_sync(verify_password, user.password_hash, current):
        raise InvalidInput("current_password", N_("is wrong."))
    if new == current:
        raise InvalidInput("new_password", N_("must differ from the current password."))
    password_hash = await anyio.to_thread.run_sync(hash_password, new)
    kept = token_hash(token) if token else None
    position = await services.command(services.chat.change_password, UUID(user_id),
                                      password_hash, kept)
    await services.settle(position)


async def daily_usage(services: Services, user_id: str, days: int = USAGE_DAYS,
                      today: date | None = None) -> list[DayUsage]:
    """One entry per UTC day, oldest first, the last being today; quiet days are zeros."""
    if not 1 <= days <= MAX_USAGE_DAYS:
        raise InvalidInput("days", fields.between(1, MAX_USAGE_DAYS))
    last = today or datetime.now(UTC).date()
    first = last - timedelta(days=days - 1)
    counts = await messages_read.daily_usage(services.read_db, user_id, first.isoformat())
    result = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        messages, tokens = counts.get(day.isoformat(), (0, 0))
        result.append(DayUsage(day, messages, tokens))
    return result


async def usage(services: Services, user_id: str, days: int = USAGE_DAYS
                ) -> tuple[dict[str, Any], list[DayUsage]]:
    """The totals of GET /api/auth/me/stats/ and the days behind the chart."""
    return await accounts.usage(services, user_id), await daily_usage(services, user_id, days)
