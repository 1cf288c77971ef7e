"""Passwords, bearer tokens, CSRF tokens and the sign-in rate limiter."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
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


def private_data_dir(data_dir: Path) -> None:
    """Keep DATA_DIR for this user only: files this process creates from now on (event
    store, read models, their -wal and -shm) are 0600, and those made earlier are fixed."""
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for path in data_dir.iterdir():
        if path.is_file() and path.stat().st_mode & 0o077:
            path.chmod(0o600)


def load_secret(configured: str, data_dir: Path) -> bytes:
    if configured:
        return configured.encode()
    path = data_dir / "secret_key"
    try:  # created 0600 in one step: never readable by others, not even for a moment
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def csrf_token(secret: bytes, session_token: str) -> str:
    return hmac.new(secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


def form_csrf_token(secret: bytes, nonce: str) -> str:
    """The sign-in and sign-up forms' token, before any session exists: bound to a random
    nonce in the browser's own cookie (signed double submit), so another site cannot post
    a form that signs the victim in to the attacker's account (login CSRF)."""
    return hmac.new(secret, b"form:" + nonce.encode(), hashlib.sha256).hexdigest()


SWEEP_MIN = 1024  # tracked keys before expired ones are swept out
BACKOFF_BASE_SECONDS = 1.0


class LoginLimiter:
    """Throttles sign-ins as ASVS V2.2 suggests, without locking the rightful owner out.

    - Per address: at most `max_failures` failed attempts in the sliding window.
    - Per account: after `max_failures` failures (from anywhere) each further attempt
      waits an exponentially growing pause, capped at the window, so the owner can always
      try again (never a lockout that lasts forever); and from an address the account
      has signed in from before, the account's back-off does not apply at all (the owner
      at their usual address is not locked out by someone guessing elsewhere).
    - Attempts are admitted atomically: an attempt counts as a failure from the moment it
      is admitted until it succeeds, so concurrent guesses cannot all pass the check.

    Times are wall-clock seconds, so the state can be rebuilt after a restart from the
    LoginFailed and LoggedIn events in the log (`restore_failure`, `remember_address`).
    """

    def __init__(self, max_failures: int, window_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        # Only keys with failures inside the window are kept, so probing many usernames or
        # addresses cannot grow this without bound.
        self._failures: dict[str, deque[float]] = {}
        self._known: set[tuple[str, str]] = set()  # (account, address) signed in before
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
        """How many accounts and addresses have recent failures."""
        return len(self._failures)

    def _address_wait(self, address: str, now: float) -> float:
        stamps = self._recent(f"addr:{address}", now)
        if len(stamps) >= self.max_failures:
            return stamps[-self.max_failures] + self.window - now
        return 0.0

    def _account_wait(self, account: str, address: str, now: float) -> float:
        if (account, address) in self._known:
            return 0.0
        stamps = self._recent(f"user:{account}", now)
        excess = len(stamps) - self.max_failures
        if excess < 0:
            return 0.0
        pause = min(BACKOFF_BASE_SECONDS * 2 ** min(excess, 32), float(self.window))
        return stamps[-1] + pause - now

    def retry_after(self, account: str, address: str) -> int:
        """Seconds until `account` may be tried from `address`; 0 when allowed now."""
        now = self._clock()
        wait = max(self._address_wait(address, now), self._account_wait(account, address, now))
        return int(wait) + 1 if wait > 0 else 0

    def admit(self, account: str, address: str) -> int:
        """Admit one attempt (0) or say how many seconds to wait. An admitted attempt
        counts as failed until `succeed` is called for it."""
        wait = self.retry_after(account, address)
        if not wait:
            self._record(account, address, self._clock())
        return wait

    def _record(self, account: str, address: str, at: float) -> None:
        if len(self._failures) >= self._sweep_at:
            self._sweep(self._clock())
        for key in (f"user:{account}", f"addr:{address}"):
            stamps = self._failures.setdefault(key, deque())
            stamps.append(at)
            if len(stamps) > 1 and stamps[-2] > at:  # restored out of order
                self._failures[key] = deque(sorted(stamps))

    def succeed(self, account: str, address: str) -> None:
        """The admitted attempt was right: the account's failures are forgiven and the
        address becomes one it is known from. The address keeps its count, so signing in
        to one's own account does not reset a guessing address's limit."""
        self._failures.pop(f"user:{account}", None)
        addr = self._failures.get(f"addr:{address}")
        if addr:
            addr.pop()  # the attempt admitted as a failure was not one
            if not addr:
                del self._failures[f"addr:{address}"]
        self._known.add((account, address))

    def restore_failure(self, account: str, address: str, at: float) -> None:
        """A failed sign-in read back from the log after a restart."""
        if at > self._clock() - self.window:
            self._record(account, address, at)

    def remember_address(self, account: str, address: str) -> None:
        """The account signed in (or signed up) from `address`, now or in the log."""
        self._known.add((account, address))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.1, 192.168.0.0/16` -> networks; raises ValueError on a malformed entry."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def forwarded_client(peer: str, forwarded_for: list[str],
                     trusted: tuple[Network, ...]) -> str:
    """The client address behind trusted proxies: X-Forwarded-For is read right to left
    (each proxy appends the address it saw), skipping trusted proxies; the first other
    address is the client. An untrusted peer's header is ignored: anyone can write one."""
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:  # garbage from the client: the last proxy is all we know
                return peer
    return peer


class RateWindow:
    """At most `limit` events per key in a sliding window (e.g. sign-ups per address)."""

    def __init__(self, limit: int, window_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._sweep_at = SWEEP_MIN

    def admit(self, key: str) -> int:
        """Count one event for `key` (0) or say how many seconds to wait (nothing counted)."""
        now = self._clock()
        if len(self._events) >= self._sweep_at:
            for other in list(self._events):
                self._expire(other, now)
            self._sweep_at = max(SWEEP_MIN, 2 * len(self._events))
        stamps = self._expire(key, now)
        if len(stamps) >= self.limit:
            return int(stamps[0] + self.window - now) + 1
        self._events.setdefault(key, stamps).append(now)
        return 0

    def _expire(self, key: str, now: float) -> deque[float]:
        stamps = self._events.get(key, deque())
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            self._events.pop(key, None)
        return stamps
