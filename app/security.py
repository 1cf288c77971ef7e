"""Passwords, bearer tokens, CSRF tokens and the sign-in rate limiter."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verified against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are stored only as this hash; a leaked event log grants no access."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_secret(configured: str, data_dir: Path) -> bytes:
    if configured:
        return configured.encode()
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def csrf_token(secret: bytes, session_token: str) -> str:
    return hmac.new(secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


SWEEP_MIN = 1024  # tracked keys before expired ones are swept out


class LoginLimiter:
    """Counts failed sign-ins per username and per address within a sliding window."""

    def __init__(self, max_failures: int, window_seconds: int) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        # Only keys with failures inside the window are kept, so probing many usernames or
        # addresses cannot grow this without bound.
        self._failures: dict[str, deque[float]] = {}
        self._sweep_at = SWEEP_MIN

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        self._sweep_at = max(SWEEP_MIN, 2 * len(self._failures))

    @property
    def tracked(self) -> int:
        """How many usernames and addresses have recent failures."""
        return len(self._failures)

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            stamps = self._recent(key, now)
            if len(stamps) >= self.max_failures:
                wait = max(wait, stamps[0] + self.window - now)
        return int(wait) + 1 if wait else 0

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= self._sweep_at:
            self._sweep(now)
        for key in keys:
            self._recent(key, now)
            self._failures.setdefault(key, deque()).append(now)

    def succeed(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
