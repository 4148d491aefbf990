"""A look at a database without changing it, for ``kling-bot doctor``: can it be reached,
may the bot write to it, and which schema version does it hold.

Nothing is kept and nothing is migrated: SQLite gets one write inside a transaction that
is rolled back (the only test a write-protected file in WAL mode fails), PostgreSQL's
privileges and read-only mode are read. Every reason given is masked (a PostgreSQL URL's
password never shows).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bot import messages
from bot.store.interface import COPIED_TABLES
from bot.store.locations import is_postgres_url, reason

PROBE_TIMEOUT = 5.0  # seconds: a database that does not answer in this time counts as unreachable


@dataclass(frozen=True)
class DatabaseHealth:
    """What ``inspect_database`` found. ``unreachable``: why it cannot be opened (None: it
    can); ``unwritable``: why the bot could not write (None: it can); ``version``: the schema
    version it holds (0: none yet, e.g. a file not yet created); ``newest``: this code's."""

    unreachable: str | None = None
    unwritable: str | None = None
    version: int = 0
    newest: int = 0
    exists: bool = True  # False: a SQLite file the bot will create at start
    busy: bool = False  # True: another connection held SQLite's write lock all along (writing not tried)


async def inspect_database(location: str) -> DatabaseHealth:
    """Reach the database ``location`` names (a SQLite path or a PostgreSQL URL) and say
    what state it is in, changing nothing."""
    if is_postgres_url(location):
        return await _inspect_postgres(location)
    return await asyncio.to_thread(_inspect_sqlite, location)


def _inspect_sqlite(location: str) -> DatabaseHealth:
    from bot.store.sqlite import MIGRATIONS

    newest = len(MIGRATIONS)
    path = Path(location)
    if path.is_dir():
        return DatabaseHealth(unreachable=messages.DB_IS_A_FOLDER, newest=newest)
    if not path.exists():
        return DatabaseHealth(newest=newest, exists=False)
    try:
        # mode=rw: never creates the file; a write-protected one opens read-only, and the
        # write lock below then says so.
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, timeout=PROBE_TIMEOUT,
                             isolation_level=None)
    except sqlite3.Error as err:
        return DatabaseHealth(unreachable=reason(err, ()), newest=newest)
    try:
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute("select count(*) from sqlite_master").fetchone()  # a file that is no database fails here
        except sqlite3.Error as err:
            return DatabaseHealth(unreachable=reason(err, ()), newest=newest)
        try:
            # A write, undone: BEGIN IMMEDIATE alone passes on a write-protected file in WAL mode.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(f"PRAGMA user_version = {version}")
            finally:
                db.execute("ROLLBACK")
        except sqlite3.Error as err:
            if getattr(err, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
                # Locked by a writer for PROBE_TIMEOUT: says nothing of the file's permissions.
                return DatabaseHealth(busy=True, version=version, newest=newest)
            return DatabaseHealth(unwritable=reason(err, ()), version=version, newest=newest)
        return DatabaseHealth(version=version, newest=newest)
    finally:
        db.close()


async def _inspect_postgres(url: str) -> DatabaseHealth:
    import asyncpg

    from bot.store.pg_migrations import MIGRATIONS

    newest = len(MIGRATIONS)
    try:
        conn = await asyncpg.connect(url, timeout=PROBE_TIMEOUT, command_timeout=PROBE_TIMEOUT)
    except Exception as err:  # refused, no such host or database, wrong password, timeout...
        return DatabaseHealth(unreachable=reason(err, (url,)), newest=newest)
    try:
        has_schema = await conn.fetchval("select to_regclass('kling_schema') is not null")
        version = int(await conn.fetchval("select coalesce(max(version), 0) from kling_schema")) \
            if has_schema else 0
        if await conn.fetchval("show transaction_read_only") == "on":
            return DatabaseHealth(unwritable=messages.DB_SERVER_READ_ONLY, version=version, newest=newest)
        if not has_schema:
            if not await conn.fetchval("select has_schema_privilege(current_schema(), 'CREATE')"):
                return DatabaseHealth(unwritable=messages.DB_NO_CREATE_PRIVILEGE, version=version, newest=newest)
            return DatabaseHealth(version=version, newest=newest)
        tables = ["kling_schema", *COPIED_TABLES]
        lacking = [row["name"] for row in await conn.fetch(
            "select name from unnest($1::text[]) as name where to_regclass(name) is not null"
            # one privilege per call: with several listed, has_table_privilege is true if ANY is held
            " and not (has_table_privilege(name, 'SELECT') and has_table_privilege(name, 'INSERT')"
            " and has_table_privilege(name, 'UPDATE') and has_table_privilege(name, 'DELETE'))", tables)]
        if lacking:
            return DatabaseHealth(unwritable=messages.db_no_write_privilege(lacking), version=version,
                                  newest=newest)
        return DatabaseHealth(version=version, newest=newest)
    except Exception as err:
        return DatabaseHealth(unreachable=reason(err, (url,)), newest=newest)
    finally:
        await conn.close()
