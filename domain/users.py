"""User accounts and the username index that makes usernames unique without a race."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event


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

    @event("LoggedIn")
    def log_in(self, token_hash: str, address: str) -> None:
        self.active_tokens.add(token_hash)

    @event("LoginFailed")
    def record_failed_login(self, address: str) -> None:
        pass

    def log_out(self, token_hash: str) -> None:
        if token_hash in self.active_tokens:
            self._log_out(token_hash)

    @event("LoggedOut")
    def _log_out(self, token_hash: str) -> None:
        self.active_tokens.discard(token_hash)

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


class UsernameIndex(Aggregate):
    """One per username; its id is derived from the name, so a second claim conflicts."""

    @event("Claimed")
    def __init__(self, username: str, user_id: UUID) -> None:
        self.user_id = user_id

    @staticmethod
    def create_id(username: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/usernames/{username_key(username)}")


class AdminSeat(Aggregate):
    """Claimed by the first registered user, who becomes the admin; only one can exist."""

    @event("Claimed")
    def __init__(self, user_id: UUID) -> None:
        self.user_id = user_id

    @staticmethod
    def create_id() -> UUID:
        return uuid5(NAMESPACE_URL, "/admin-seat")
