"""A throw-away PostgreSQL server for the tests, and fixtures that give each test a
fresh database on it (imported by tests/conftest.py).

One server per pytest process (so one per xdist worker), started on first use with
``initdb`` + ``pg_ctl`` in a temporary folder on a free 127.0.0.1 port and stopped at
the session's end; or the server ``KLING_TEST_POSTGRES_URL`` names (a URL whose user
may create databases). Without either, PostgreSQL tests skip with one line saying how
to install the binaries, except under CI (``CI`` set), where they fail.

Fixtures:
- ``storage_url`` (params "sqlite", "postgresql"): a migrated, empty store's location,
  a SQLite file path or a ``postgresql://`` URL, as ``[storage]`` takes it;
- ``empty_storage_url``: the same, not yet migrated;
- ``pg_url`` (PostgreSQL only, migrated) and ``pg_server`` (``restart()``, ``stop()``,
  ``start()``, for tests of outages; skips on a server the suite did not start).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql (or set KLING_TEST_POSTGRES_URL)"


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's bindir, else the newest Debian
    /usr/lib/postgresql/<version>/bin, else PATH."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                     check=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: [int(x) for x in Path(p).parent.parent.name.split(".") if x.isdigit()])
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """A PostgreSQL cluster in a temporary folder. initdb refuses to run as root, so
    under root the cluster belongs to (and runs as) the unprivileged user ``nobody``."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="kling-pg-"))
        self.data = self.folder / "data"
        self.port = 0
        self.as_user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self.as_user is not None:
            os.chown(self.folder, self.as_user.pw_uid, self.as_user.pw_gid)

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / tool), *args]
        user = {} if self.as_user is None else {
            "user": self.as_user.pw_uid, "group": self.as_user.pw_gid, "extra_groups": []}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.folder,
                              env={**os.environ, "LC_ALL": "C"}, **user)  # type: ignore[call-overload]
        if done.returncode != 0:
            log = (self.folder / "server.log")
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}\n"
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        self.port = _free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            # many pools in parallel (20 store objects in one test), and speed over durability
            "max_connections": "400", "shared_buffers": "32MB",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """``pg_ctl restart``: every connection is cut, the server comes back on its port."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-m", "fast", "-w",
                  "-t", "60", "restart")  # -l: else the new server holds the pipe we read to its end

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class PgServer:
    """What tests see of the server: database URLs, and outages when the suite owns it."""

    def __init__(self, admin_url: str, local: LocalServer | None):
        self.admin_url = admin_url
        self.local = local
        # migrated once per session; each test's database is a copy (named per session:
        # xdist workers, or other runs, may share a server named by the environment)
        self.template = f"kling_template_{uuid.uuid4().hex[:8]}"
        self.template_ready = False
        self.created: list[str] = []

    def url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def _own(self) -> LocalServer:
        if self.local is None:
            pytest.skip("needs a PostgreSQL server the suite started (KLING_TEST_POSTGRES_URL names another)")
        return self.local

    async def restart(self) -> None:
        await asyncio.to_thread(self._own().restart)

    async def stop(self) -> None:
        await asyncio.to_thread(self._own().stop)

    async def start(self) -> None:
        await asyncio.to_thread(self._own().start)

    async def create_database(self, *, migrated: bool) -> str:
        """A new database (a copy of the migrated template, or empty); returns its URL."""
        name = f"kling_test_{uuid.uuid4().hex[:12]}"
        if migrated and not self.template_ready:
            await self._make_template()
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'create database "{name}" template {self.template if migrated else "template0"}')
        finally:
            await admin.close()
        self.created.append(name)
        return self.url(name)

    async def drop_created(self) -> None:
        """Remove this session's databases (from a server the suite does not throw away)."""
        admin = await asyncpg.connect(self.admin_url)
        try:
            for name in [*self.created, self.template]:
                await admin.execute(f'drop database if exists "{name}" with (force)')
        finally:
            await admin.close()

    async def _make_template(self) -> None:
        from bot.store.postgres import PostgresStore

        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"create database {self.template} template template0")
        finally:
            await admin.close()
        store = await PostgresStore.open(self.url(self.template), listen=False)
        await store.close()
        self.template_ready = True


@pytest.fixture(scope="session")
def pg_server_session() -> Iterator[PgServer]:
    """The session's PostgreSQL server (started on first use), or a skip/fail saying why not."""
    named = os.environ.get("KLING_TEST_POSTGRES_URL")
    if named:
        server = PgServer(named, None)
        yield server
        with contextlib.suppress(Exception):
            asyncio.run(server.drop_created())
        return
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    local = LocalServer(bindir)
    atexit.register(local.remove)  # even if the session ends abruptly
    local.init()
    local.start()
    try:
        yield PgServer(local.url(), local)
    finally:
        local.remove()


@pytest.fixture
def pg_server(pg_server_session: PgServer) -> PgServer:
    return pg_server_session


@pytest.fixture
async def pg_url(pg_server: PgServer) -> str:
    """A fresh, migrated PostgreSQL database of this test's own."""
    return await pg_server.create_database(migrated=True)


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's location for each backend: a SQLite file path, or a
    ``postgresql://`` URL of a migrated database of this test's own."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.sqlite")
    server: PgServer = request.getfixturevalue("pg_server")
    return await server.create_database(migrated=True)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``storage_url``, but nothing migrated yet (an empty file or database)."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.sqlite")
    server: PgServer = request.getfixturevalue("pg_server")
    return await server.create_database(migrated=False)
