"""Fixtures: a shared real server (with its admin) and fresh servers for restart drills."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.postgres import STORES, PostgresCluster, event_store_url, require_binaries
from tests.server import CHROMIUM, CHROMIUM_FLAGS, ROOT, Api, ServerProcess

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
            "both_stores"):
        metafunc.parametrize("store", STORES, indirect=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run on the SQLite and PostgreSQL stores")
    if not MODEL.is_file():
        raise pytest.UsageError(f"{MODEL} is missing: run 'make model' (make test does it).")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster, started the first time a test needs it."""
    require_binaries()
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def store(request: pytest.FixtureRequest) -> str:
    """The servers' event store: "sqlite" unless the module runs on `both_stores`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_env(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an in-process ChatApplication on this test's store (a SQLite file
    in tmp_path, or a new PostgreSQL database)."""
    if store == "postgres":
        from app.config import Settings
        from app.event_store import event_store_env

        return event_store_env(Settings(event_store=event_store_url(request, store)))
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp_path / "events.sqlite")}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
           store: str) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp(f"shared-server-{store}"),
                            event_store_url(request, store)).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def admin(server: ServerProcess) -> Api:
    """The shared server's first user, hence its admin (registered before anyone else)."""
    return Api(server.url).register("admin_user")


@pytest.fixture
def anon(server: ServerProcess, admin: Api) -> Api:
    return Api(server.url)


@pytest.fixture
def user(anon: Api) -> Api:
    return anon.register()


@pytest.fixture
def fresh_server(tmp_path: Path, request: pytest.FixtureRequest,
                 store: str) -> Iterator[ServerProcess]:
    """A server of its own, for tests that kill or restart it."""
    process = ServerProcess(tmp_path / "data", event_store_url(request, store))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, one per test module that asks for it."""
    assert Path(CHROMIUM).exists(), "install Debian's chromium (make test does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # The system prefers light: only the theme toggle can make a page dark.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    yield ctx
    ctx.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[
        None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tail of every server log the test used: the server's side."""
    report = yield
    if report.failed and call.when == "call":
        for name in ("fresh_server", "server"):
            process = getattr(item, "funcargs", {}).get(name)
            if isinstance(process, ServerProcess) and process.log_path.exists():
                tail = process.log_path.read_text(errors="replace")[-4000:]
                report.sections.append((f"{name} log (tail)", tail))
    return report
