"""User accounts and the username index that makes usernames unique without a race."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import LastAdmin


def username_key(username: str) -> str:
    """Usernames are unique regardless of case: "Alice" and "alice" are one account."""
    return username.casefold()


class User(Aggregate):
    @event("Registered")
    def __init__(self, username: str, email: str, password_hash: str, is_admin: bool) -> None:
        self.username = username
        self.email = email
        self.password_hash = password_hash
        self.is_admin = is_admin
        self.display_name = ""
        self.active_tokens: set[str] = set()
        # When each active token was issued (its LoggedIn event's time), for expiry.
        self.token_issued: dict[str, datetime] = {}
        self.disabled = False

    class LoggedIn(Aggregate.Event):
        """A sign-in. An explicit event class (same topic as before) because its time is
        the token's issue time, which the decorated form cannot see."""

        token_hash: str
        address: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, User)
            aggregate.active_tokens.add(self.token_hash)
            aggregate.token_issued = {t: at for t, at in aggregate.token_issued.items()
                                      if t in aggregate.active_tokens}
            aggregate.token_issued[self.token_hash] = self.timestamp

    def log_in(self, token_hash: str, address: str, ttl: timedelta | None = None) -> None:
        """Sign in. With `ttl` (TOKEN_TTL_DAYS), the tokens older than that are dropped
        first, so the set of active tokens holds only live sign-ins, not every one ever."""
        if ttl is not None:
            now = datetime.now(UTC)
            expired = sorted(t for t in self.active_tokens
                             if t in self.token_issued and self.token_issued[t] + ttl <= now)
            if expired:
                self._expire_tokens(token_hashes=expired)
        self.trigger_event(self.LoggedIn, token_hash=token_hash, address=address)

    @event("TokensExpired")
    def _expire_tokens(self, token_hashes: list[str]) -> None:
        for token in token_hashes:
            self.active_tokens.discard(token)
            self.token_issued.pop(token, None)

    @event("LoginFailed")
    def record_failed_login(self, address: str) -> None:
        pass

    def log_out(self, token_hash: str) -> None:
        if token_hash in self.active_tokens:
            self._log_out(token_hash)

    @event("LoggedOut")
    def _log_out(self, token_hash: str) -> None:
        self.active_tokens.discard(token_hash)

    def change_password(self, password_hash: str, keep_token: str | None) -> None:
        """A new password signs the user out everywhere but `keep_token` (the caller's own
        sign-in, when it is still live): whoever knew the old password is locked out."""
        kept = keep_token if keep_token in self.active_tokens else None
        self._change_password(password_hash=password_hash, kept_token=kept)

    @event("PasswordChanged")
    def _change_password(self, password_hash: str, kept_token: str | None) -> None:
        self.password_hash = password_hash
        self.active_tokens = {kept_token} if kept_token else set()

    def update_profile(self, email: str | None, display_name: str | None) -> None:
        changes = {
            key: value
            for key, value in (("email", email), ("display_name", display_name))
            if value is not None and value != getattr(self, key)
        }
        if changes:
            self._update_profile(changes)

    @event("ProfileUpdated")
    def _update_profile(self, changes: dict[str, str]) -> None:
        for key, value in changes.items():
            setattr(self, key, value)

    # -- administration: `by` is the acting admin's id, None for the operator's command line.
    # Each command records nothing when the user is already in the state asked for.

    @property
    def is_active_admin(self) -> bool:
        return self.is_admin and not self.disabled

    def disable(self, by: UUID | None) -> None:
        if not self.disabled:
            self._disable(by=by)

    @event("Disabled")
    def _disable(self, by: UUID | None) -> None:
        """Signs the user out everywhere: every token stops, also after enabling again."""
        self.disabled = True
        self.active_tokens = set()

    def enable(self, by: UUID | None) -> None:
        if self.disabled:
            self._enable(by=by)

    @event("Enabled")
    def _enable(self, by: UUID | None) -> None:
        self.disabled = False

    def grant_admin(self, by: UUID | None) -> None:
        if not self.is_admin:
            self._grant_admin(by=by)

    @event("AdminGranted")
    def _grant_admin(self, by: UUID | None) -> None:
        self.is_admin = True

    def revoke_admin(self, by: UUID | None) -> None:
        if self.is_admin:
            self._revoke_admin(by=by)

    @event("AdminRevoked")
    def _revoke_admin(self, by: UUID | None) -> None:
        self.is_admin = False


class UsernameIndex(Aggregate):
    """One per username; its id is derived from the name, so a second claim conflicts."""

    @event("Claimed")
    def __init__(self, username: str, user_id: UUID) -> None:
        self.user_id = user_id

    @staticmethod
    def create_id(username: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/usernames/{username_key(username)}")


class AdminSeat(Aggregate):
    """Claimed by the first registered user, who becomes the admin; only one can exist.

    It also keeps the set of active admins (admin and not disabled), so that a command
    which would leave none is refused, and two such commands racing (in two processes:
    the server and the command line) conflict on this aggregate's version instead of both
    succeeding."""

    @event("Claimed")
    def __init__(self, user_id: UUID) -> None:
        self.user_id = user_id
        self.active_admins: set[UUID] = {user_id}

    def add(self, user_id: UUID) -> None:
        if user_id not in self.active_admins:
            self._add(user_id)

    @event("AdminAdded")
    def _add(self, user_id: UUID) -> None:
        self.active_admins.add(user_id)

    def remove(self, user_id: UUID) -> None:
        if user_id not in self.active_admins:
            return
        if self.active_admins == {user_id}:
            raise LastAdmin("this is the last active administrator")
        self._remove(user_id)

    @event("AdminRemoved")
    def _remove(self, user_id: UUID) -> None:
        self.active_admins.discard(user_id)

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/admin-seat")
