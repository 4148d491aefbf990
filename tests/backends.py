"""Backend-neutral peeks into a store's tables, for tests that run on SQLite and on
PostgreSQL (``pytestmark = pytest.mark.both_backends``, see tests/conftest.py).

Tests write their SQL once, with SQLite's ``?`` placeholders; on PostgreSQL they become
``$1, $2, …``. Reaching into the store's connection is fine here: these are tests
checking what the tables hold, not code paths of the bot.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from bot.store import is_postgres_url


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$n`` (no test SQL has a ``?`` in a literal)."""
    count = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def on_postgres(store: Any) -> bool:
    """Whether a store (or a storage URL) is the PostgreSQL backend."""
    return is_postgres_url(store) if isinstance(store, str) else type(store).__name__ == "PostgresStore"


async def raw_sql(store: Any, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Run one statement on a store's own connection (inside its transaction, if the
    task has one open); its rows as dicts (none for a write without ``returning``)."""
    if on_postgres(store):
        return [dict(row) for row in await store.db.fetch(_numbered(sql), *args)]
    cursor = store.db.execute(sql, list(args))
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


async def ledger_entries(store: Any, job_id: int | None = None) -> list[str]:
    """The ledger's entries (of one job, or all), oldest first."""
    where, args = ("where job_id = ?", [job_id]) if job_id is not None else ("", [])
    return [row["entry"] for row in await raw_sql(store, f"select entry from ledger {where} order by id", args)]


async def count_rows(store: Any, table: str) -> int:
    [row] = await raw_sql(store, f"select count(*) as n from {table}")
    return int(row["n"])


async def query(database: str, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query on the database another process uses (a SQLite path or a
    PostgreSQL URL), on a connection of its own; none while the file or its tables do
    not exist yet (the process is still starting)."""
    if on_postgres(database):
        conn = await asyncpg.connect(database)
        try:
            return [tuple(row) for row in await conn.fetch(_numbered(sql), *args)]
        except asyncpg.UndefinedTableError:
            return []
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
    if not Path(database).exists():
        return []
    with contextlib.closing(sqlite3.connect(database)) as conn:
        try:
            return conn.execute(sql, list(args)).fetchall()
        except sqlite3.OperationalError:  # the process is still creating its tables
            return []


def storage_config(database: str) -> str:
    """The ``[storage]`` line that names this database in a config file."""
    return f'url = "{database}"' if on_postgres(database) else f'path = "{database}"'


def process_config(tmp_path: Path, base_url: str, database: str, extra: str = "") -> Path:
    """A config.toml for bot processes on one database and a simulator (``extra``: more TOML)."""
    from tests.conftest import API_KEY  # conftest imports this module

    path = tmp_path / "config.toml"
    path.write_text(f"""
[wavespeed]
base_url = "{base_url}"
api_key = "{API_KEY}"
poll_interval = 0.2
history_settle = 0.5

[storage]
{storage_config(database)}
videos_dir = "{tmp_path / 'videos'}"
lease_seconds = 2

[quota]
daily_credits = 20
max_jobs_per_user = 20
{extra}
""")
    return path
