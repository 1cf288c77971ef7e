"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, `initdb` and
`pg_ctl` in a temporary directory, listening only on a unix socket in that directory.

PostgreSQL refuses to run as root; as root the cluster runs as `nobody` (via `setpriv`),
which owns the directory. Without the binaries, `require_binaries` fails under CI (the
`postgresql` package is part of `make test`) and skips elsewhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

# A module's tests run on both event stores with `pytestmark = both_stores`: each test that
# uses the `store` fixture (directly, or through `server`, `fresh_server`, `store_env`) runs
# once per store (conftest.py's pytest_generate_tests); tests that use none run once.
STORES = ["sqlite", "postgres"]
both_stores = pytest.mark.both_stores



def _newest_bin() -> Path:
    """Debian installs each major version in /usr/lib/postgresql/<version>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


BIN = Path(os.environ["PG_BIN"]) if os.environ.get("PG_BIN") else _newest_bin()
RUN_AS = "nobody"


def require_binaries() -> None:
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (BIN / name).is_file()]
    if not missing:
        return
    message = (f"PostgreSQL server binaries missing in {BIN} ({', '.join(missing)}): "
               "install Debian's postgresql package (make postgres) or set PG_BIN")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class PostgresCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="localchat-pg-"))
        self.data = self.dir / "data"
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                            "--clear-groups", "env", f"HOME={self.dir}"]
        self.started = False

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._prefix, *args], capture_output=True, text=True,
                              cwd=self.dir, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def start(self) -> PostgresCluster:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again) on the cluster's data."""
        # Only the socket in our directory. fsync=off: the machine does not crash under the
        # tests, so what PostgreSQL wrote stays in the page cache. But commits stay
        # synchronous: pause() is a crash of PostgreSQL itself, and with
        # synchronous_commit=off it lost acknowledged commits whose ids were then given out
        # again (a runner that had applied the lost id skipped the new event).
        options = (f"-k {self.dir} -c listen_addresses='' -c fsync=off"
                   " -c full_page_writes=off -c max_connections=300")
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "-o", options, "start")
        self.started = True

    def pause(self) -> None:
        """Stop the server at once (connections dropped), keeping the data."""
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.started = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.dir}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self.pause()
        shutil.rmtree(self.dir, ignore_errors=True)


def event_store_url(request: pytest.FixtureRequest, store: str) -> str:
    """EVENT_STORE for a new server or application: empty (its SQLite file in DATA_DIR) or
    a new database in the session's cluster (the `postgres` fixture)."""
    if store == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return cluster.create_database()
    return ""
