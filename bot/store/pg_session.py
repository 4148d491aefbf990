"""Connections of the PostgreSQL backend: the pool, the transaction a task is in, and
the LISTEN connection that brings other processes' wake-ups.

A call outside ``transaction()`` takes a pooled connection in autocommit; inside one,
every call of the task that opened it uses the transaction's connection (kept per task
in a context variable: a task started inside the transaction gets a pooled connection,
never a share of one it must not use concurrently). When the server goes away (refused,
restarting, cut), a call raises ``StoreOffline`` and the pool connects again on the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import errno
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg

from bot.store.interface import MAX_JOB_ID, StoreOffline
from bot.store.pg_migrations import CHANNEL, prepare_connection

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # seconds: a server that does not answer makes a call fail, not hang
COMMAND_TIMEOUT = 60.0  # seconds: a statement on a connection that went silent fails, not hangs
KEEPALIVE = 30.0  # seconds between probes of a quiet LISTEN connection
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # LISTEN reconnection backoff, then the last
# What a server that is down, restarting or cut off looks like to the driver.
OFFLINE_ERRORS = (ConnectionError, TimeoutError, socket.gaierror, asyncpg.PostgresConnectionError,
                  asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError)
OFFLINE_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


def is_offline(err: BaseException, conn: asyncpg.Connection | None = None) -> bool:
    """Whether an error says the server cannot be reached (rather than refusing a statement);
    any error on a connection the server closed is that."""
    if isinstance(err, OFFLINE_ERRORS):
        return True
    if isinstance(err, OSError) and err.errno in OFFLINE_ERRNOS:
        return True
    # The driver's word for a statement or a commit on a connection the server cut
    # ("cannot call Transaction.__aexit__(): the underlying connection is closed").
    if isinstance(err, asyncpg.InterfaceError) and "closed" in str(err):
        return True
    if _stuck(err):
        return True
    if conn is None:
        return False
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # already handed back to the pool, as its holder failed
        return True


def _stuck(err: BaseException) -> bool:
    """Whether a pooled connection was handed out in the middle of an earlier operation:
    one the server cut mid-statement before the driver saw it ("cannot switch to state
    ...; another operation is in progress"), or one released while a statement still ran
    (the pool's reset, a round trip saved on every call, does not look)."""
    return isinstance(err, (asyncpg.InternalClientError, asyncpg.InterfaceError)) \
        and "another operation" in str(err)


@contextlib.contextmanager
def offline_as_store_offline(conn: asyncpg.Connection | None = None) -> Iterator[None]:
    """Raise StoreOffline, backend-neutral, for an error that says the server is unreachable."""
    try:
        yield
    except StoreOffline:
        raise
    except Exception as err:
        if is_offline(err, conn):
            raise StoreOffline(f"{type(err).__name__}: {err}") from err
        raise


@dataclasses.dataclass
class _Open:
    """A transaction a task opened: its connection, the locks it holds, how deep in savepoints."""

    task: asyncio.Task[Any] | None
    conn: asyncpg.Connection
    locked: set[str] = dataclasses.field(default_factory=set)
    savepoints: int = 0


class Connections:
    """The pool and the per-task transaction: the SQL helpers every part of the backend uses."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self._current: contextvars.ContextVar[_Open | None] = \
            contextvars.ContextVar(f"kling-pg-transaction-{id(self)}", default=None)

    def _open(self) -> _Open | None:
        current = self._current.get()
        return current if current is not None and current.task is asyncio.current_task() else None

    def in_transaction(self) -> asyncpg.Connection | None:
        """The connection of the transaction this task opened, if any."""
        current = self._open()
        return current.conn if current is not None else None

    def needs_lock(self, key: str) -> bool:
        """Whether this transaction must still take the lock named ``key`` (False: it holds
        it already, so asking again would be a wasted round trip; or there is no transaction). A lock taken outside any
        savepoint is held to the transaction's end; one taken inside a savepoint may go
        with it, so it is not remembered."""
        current = self._open()
        if current is None or key in current.locked:
            return False  # outside a transaction there is nothing to hold a lock for
        if current.savepoints == 0:
            current.locked.add(key)
        return True

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One atomic unit of work on one connection; nested use is a savepoint."""
        current = self._open()
        if current is not None:
            current.savepoints += 1
            try:
                with offline_as_store_offline(current.conn):
                    async with current.conn.transaction():
                        yield
            finally:
                current.savepoints -= 1
            return
        with offline_as_store_offline():
            async with self.pool.acquire() as conn:
                with offline_as_store_offline(conn):
                    async with conn.transaction():
                        token = self._current.set(_Open(asyncio.current_task(), conn))
                        try:
                            yield
                        finally:
                            self._current.reset(token)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The transaction's connection, or a pooled one for several statements in a row."""
        joined = self.in_transaction()
        if joined is not None:
            with offline_as_store_offline(joined):
                yield joined
            return
        with offline_as_store_offline():
            async with self.pool.acquire() as conn:
                with offline_as_store_offline(conn):
                    try:
                        yield conn
                    except (asyncpg.InternalClientError, asyncpg.InterfaceError) as err:
                        if _stuck(err):  # released as it is, it would fail whoever gets it next
                            conn.terminate()
                        raise

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the number of rows it touched."""
        async with self.connection() as conn:
            status = await conn.execute(sql, *args)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdecimal() else 0


async def create_pool(url: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                     command_timeout=COMMAND_TIMEOUT, reset=_nothing_to_reset,
                                     init=prepare_connection)
    assert pool is not None
    return pool


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """Pool connections keep no session state (no LISTEN, SET or session-level lock), so
    a released one needs no reset query: a round trip saved on every call. (The driver
    still rolls back a transaction left open.)"""


class ChangeFeed:
    """LISTEN on one dedicated connection, kept across server restarts: each notification
    calls every listener with its job id; after a reconnection every listener is called
    with 0 ("look at everything": notifications sent meanwhile were lost)."""

    def __init__(self, url: str):
        self.url = url
        self.listeners: list[Callable[[int], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self.reconnections = 0

    async def start(self) -> None:
        """Listen before returning: a job queued after ``open`` is never missed."""
        await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="kling-pg-listen")

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
        try:
            self._lost.clear()
            conn.add_termination_listener(lambda _conn: self._lost.set())
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    async def _keep_listening(self) -> None:
        while True:
            await self._until_lost()
            log.warning("lost the PostgreSQL LISTEN connection; reconnecting")
            for attempt in itertools.count():
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                try:
                    await self._listen()
                    break
                except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    continue
            self.reconnections += 1
            log.info("listening to PostgreSQL again")
            self._call(0)

    async def _until_lost(self) -> None:
        """Return when the connection is gone: closed by the server, or silent (a machine
        that vanished sends no goodbye, so the connection is probed now and then)."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), KEEPALIVE)
                return
            assert self._conn is not None
            try:
                await self._conn.execute("select 1", timeout=CONNECT_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._conn.terminate()
                return

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # Anyone who may connect may NOTIFY this channel: only a job's id counts.
        if payload.isascii() and payload.isdecimal() and len(payload) <= 19 and 0 < int(payload) <= MAX_JOB_ID:
            self._call(int(payload))

    def _call(self, job_id: int) -> None:
        for listener in self.listeners:
            try:
                listener(job_id)
            except Exception:  # one listener's bug must not silence the others
                log.exception("a store change listener failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), CONNECT_TIMEOUT)
            if not self._conn.is_closed():
                self._conn.terminate()
