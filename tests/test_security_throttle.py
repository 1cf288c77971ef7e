"""Sign-in throttling (issue 7, items 1-3): atomic under concurrency, keyed on bounded
values, never locking the owner out for good, proxies believed only when configured, and
the same after a restart."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.security import LoginLimiter, forwarded_client, parse_networks
from tests.server import Api, ServerProcess

LIMIT = 3


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server behind a (simulated) trusted proxy on 127.0.0.1: X-Forwarded-For picks the
    client address. uvicorn's own proxy rewriting is off, as in the Procfile."""
    process = ServerProcess(tmp_path / "data", LOGIN_MAX_FAILURES=str(LIMIT),
                            REGISTER_MAX_PER_ADDRESS="2", TRUSTED_PROXIES="127.0.0.1",
                            FORWARDED_ALLOW_IPS="")
    yield process.start()
    process.stop()


def login(api: Api, username: str, password: str, address: str) -> int:
    response = api.post("/api/auth/login/", json={"username": username, "password": password},
                        headers={"X-Forwarded-For": address})
    if response.status_code == 429:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "rate_limited"
    return response.status_code


def register(api: Api, name: str, address: str, expect: int = 201) -> None:
    response = api.post("/api/auth/register/", headers={"X-Forwarded-For": address}, json={
        "username": name, "email": "someone@example.com", "password": "올바른 비밀번호"})
    assert response.status_code == expect, response.text


def test_throttle_end_to_end(proxied: ServerProcess) -> None:
    anon = Api(proxied.url)
    register(anon, "admin_kr", "10.9.9.9")
    register(anon, "jisu", "10.1.1.1")  # signs in from 10.1.1.1: a known address

    # 1. Thirty simultaneous wrong passwords: only LIMIT are even tried.
    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(lambda _: login(anon, "jisu", "틀린 비밀번호", "10.2.2.2"),
                              range(30)))
    assert codes.count(401) <= LIMIT and codes.count(429) >= 30 - LIMIT, codes

    # 2. A 1 MB username is refused before it becomes a throttle key (page and API).
    huge = "a" * 1_000_000
    assert anon.post("/api/auth/login/", json={"username": huge, "password": "x"}
                     ).status_code == 400
    page = anon.post("/login", data={"username": huge, "password": "x"},
                     headers={"X-Forwarded-For": "10.2.2.3"})
    assert page.status_code in (400, 403)

    # 3. Guessing from many addresses backs the account off, but the owner at a known
    # address still gets in with the right password, and a new address waits no longer
    # than the window.
    for i in range(3 * LIMIT):
        assert login(anon, "jisu", "틀린 비밀번호", f"10.3.0.{i}") in (401, 429)
    assert login(anon, "jisu", "올바른 비밀번호", "10.1.1.1") == 200
    for i in range(3 * LIMIT):
        login(anon, "jisu", "틀린 비밀번호", f"10.4.0.{i}")
    response = anon.post("/api/auth/login/", json={"username": "jisu", "password": "x"},
                         headers={"X-Forwarded-For": "10.5.5.5"})
    if response.status_code == 429:
        assert int(response.headers["Retry-After"]) <= 300 + 1

    # 4. The address that was throttled stays throttled after a restart (from the log).
    assert login(anon, "jisu", "올바른 비밀번호", "10.2.2.2") == 429
    proxied.restart()
    assert login(anon, "jisu", "올바른 비밀번호", "10.2.2.2") == 429
    assert login(anon, "jisu", "올바른 비밀번호", "10.1.1.1") == 200  # still known

    # 5. Sign-ups are throttled per address (item 4), and can be closed.
    register(anon, "minjun1", "10.6.6.6")
    register(anon, "minjun2", "10.6.6.6")
    register(anon, "minjun3", "10.6.6.6", expect=429)
    proxied.env["OPEN_REGISTRATION"] = "false"
    proxied.restart()
    register(anon, "minjun4", "10.7.7.7", expect=403)
    closed = anon.post("/api/auth/register/", json={
        "username": "minjun5", "email": "x@example.com", "password": "올바른 비밀번호"})
    assert closed.json()["error"]["code"] == "registration_closed"


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = parse_networks("127.0.0.1, 10.0.0.0/8")
    assert forwarded_client("127.0.0.1", ["203.0.113.7"], trusted) == "203.0.113.7"
    # Spoofed hops to the left of the proxies' own are not believed.
    assert forwarded_client("127.0.0.1", ["1.2.3.4, 203.0.113.7, 10.0.0.5"],
                            trusted) == "203.0.113.7"
    assert forwarded_client("198.51.100.1", ["203.0.113.7"], trusted) == "198.51.100.1"
    assert forwarded_client("127.0.0.1", ["203.0.113.7"], ()) == "127.0.0.1"
    assert forwarded_client("127.0.0.1", ["쓰레기"], trusted) == "127.0.0.1"


def test_limiter_backs_off_without_locking_out_for_good() -> None:
    """A fake clock: a window of minutes cannot pass in a test with the real one."""
    now = [1000.0]
    limiter = LoginLimiter(3, 300, clock=lambda: now[0])
    for i in range(20):
        if not limiter.admit("jisu", f"10.0.0.{i}"):
            now[0] += 0.01
    assert limiter.retry_after("jisu", "10.9.0.1") <= 301
    now[0] += 301
    assert limiter.admit("jisu", "10.9.0.1") == 0  # the owner can always try again
    limiter.succeed("jisu", "10.9.0.1")
    assert limiter.admit("jisu", "10.9.0.2") == 0  # forgiven after the right password
