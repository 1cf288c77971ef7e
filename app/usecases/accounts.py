"""Accounts: register, sign in and out, who a token belongs to, the profile and usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import anyio

from app.security import hash_password, new_token, token_hash, verify_password
from app.services import Services
from app.usecases import fields
from app.usecases.errors import (
    N_,
    Conflict,
    Forbidden,
    InvalidCredentials,
    Message,
    RateLimited,
)
from domain.errors import UsernameTaken
from domain.users import username_key
from projections import messages as messages_read
from projections import users as users_read
from projections.base import iso

PROFILE_KEYS = ("id", "username", "email", "display_name", "is_admin", "created_at")
DISPLAY_NAME_CHARS = 64
SIGN_IN_USERNAME_CHARS = 256
THROTTLE_RESTORE_BATCH = 1000


def token_ttl(services: Services) -> timedelta:
    return timedelta(days=services.settings.token_ttl_days)


@dataclass(frozen=True)
class SignedIn:
    user: dict[str, Any]
    token: str


def profile(user: Mapping[str, Any]) -> dict[str, Any]:
    return {key: user[key] for key in PROFILE_KEYS}


async def _read_user(services: Services, user_id: UUID | str) -> dict[str, Any]:
    user = await users_read.get_user(services.read_db, str(user_id))
    if user is None:  # the write was settled, so the row exists
        raise LookupError(f"user {user_id} is missing from the read model")
    return user


async def register(services: Services, values: Mapping[str, Any], address: str) -> SignedIn:
    """Create the user and sign them in. `values`: username, email, password."""
    username = fields.username(values)
    email = fields.email(values)
    password = fields.password(values)
    assert email is not None
    if (not services.settings.open_registration
            and await users_read.count_users(services.read_db) > 0):
        raise Forbidden(N_("Sign-up is closed here; ask an administrator for an account."),
                        code="registration_closed")
    retry_after = services.registrations.admit(address)
    if retry_after:
        raise RateLimited(Message(N_("Too many sign-ups from this address. Try again in"
                                     " %(n)s seconds."), {"n": retry_after}), retry_after)
    password_hash = await anyio.to_thread.run_sync(hash_password, password,
                                                   limiter=services.hashing)
    token = new_token()
    chat = services.chat
    try:
        user = await services.command(chat.register_user, username, email, password_hash)
    except UsernameTaken:
        raise Conflict("username_taken", N_("that username is already taken."),
                       field="username") from None
    position = await services.command(chat.log_in, user.id, token_hash(token), address,
                                      token_ttl(services))
    services.login_limiter.remember_address(username_key(username), address)
    await services.settle(position)
    return SignedIn(await _read_user(services, user.id), token)


async def sign_in(services: Services, username: str, password: str, address: str) -> SignedIn:
    """Check the credentials and record the sign-in (a failure is recorded for audit)."""
    # Bounded before it becomes a throttling key: any string sent would otherwise be kept.
    username = fields.required_text({"username": username}, "username",
                                    max_len=SIGN_IN_USERNAME_CHARS, allow_blank=False)
    # Keyed on the account's name and the address; the attempt is admitted (and counted as
    # a failure until it succeeds) before any await, so concurrent guesses queue up here.
    account = username_key(username)
    limiter = services.login_limiter
    retry_after = limiter.admit(account, address)
    if retry_after:
        raise RateLimited(Message(N_("Too many failed sign-ins. Try again in %(n)s seconds."),
                                  {"n": retry_after}), retry_after)
    user = await services.command(services.chat.find_user, username)
    ok = await anyio.to_thread.run_sync(
        verify_password, user.password_hash if user else None, password,
        limiter=services.hashing,
    )
    if user is None or not ok:
        if user is not None:
            await services.command(services.chat.record_failed_login, user.id, address)
        raise InvalidCredentials()
    limiter.succeed(account, address)
    if user.disabled:  # the password was right, so saying why is no leak
        raise Forbidden(N_("This account is disabled; ask an administrator."),
                        code="account_disabled")
    token = new_token()
    position = await services.command(services.chat.log_in, user.id, token_hash(token),
                                      address, token_ttl(services))
    await services.settle(position)
    return SignedIn(await _read_user(services, user.id), token)


async def restore_sign_in_throttle(services: Services) -> None:
    """Rebuild the sign-in throttle from the log, so a restart forgets no failed attempt
    (within the window) and no address an account has signed in from."""
    limiter, names = services.login_limiter, dict[str, str]()

    async def account_of(user_id: UUID) -> str | None:
        key = str(user_id)
        if key not in names:
            user = await users_read.get_user(services.read_db, key)
            if user is None:
                return None
            names[key] = username_key(user["username"])
        return names[key]

    for type_name in ("User.LoginFailed", "User.LoggedIn"):
        after = 0
        while True:
            batch = await services.event_log.select(after, THROTTLE_RESTORE_BATCH, type_name)
            for logged in batch:
                event: Any = logged.event
                account = await account_of(event.originator_id)
                if account is None:
                    continue
                if type_name == "User.LoginFailed":
                    limiter.restore_failure(account, event.address, event.timestamp.timestamp())
                else:
                    limiter.remember_address(account, event.address)
                after = logged.position
            if len(batch) < THROTTLE_RESTORE_BATCH:
                break


async def sign_out(services: Services, user_id: str, token: str) -> None:
    position = await services.command(services.chat.log_out, UUID(user_id), token_hash(token))
    await services.settle(position)


async def user_for_token(services: Services, token: str) -> dict[str, Any] | None:
    """The user a live (not revoked, not expired) token belongs to."""
    return await users_read.user_for_token(
        services.read_db, token_hash(token),
        timedelta(days=services.settings.token_ttl_days), iso(datetime.now(UTC)),
    )


async def update_profile(services: Services, user_id: str,
                         values: Mapping[str, Any]) -> dict[str, Any]:
    email = fields.email(values, required=False)
    display_name = fields.text(values, "display_name", max_len=DISPLAY_NAME_CHARS, strip=True)
    position = await services.command(services.chat.update_profile, UUID(user_id), email,
                                      display_name)
    await services.settle(position)
    return profile(await _read_user(services, user_id))


async def usage(services: Services, user_id: str) -> dict[str, Any]:
    return await messages_read.user_stats(services.read_db, user_id)
