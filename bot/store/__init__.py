"""The bot's database: one async interface (``bot.store.interface``), two backends.

``[storage] url`` (or ``KLING_DATABASE_URL``) picks the backend: a SQLite file path
(the embedded default) or a ``postgresql://`` URL, for several processes on several
machines. Only the modules of this package speak SQL.
"""

from __future__ import annotations

from bot import messages
from bot.store.interface import (
    ASK_LIFETIME,
    MAX_JOB_ID,
    STAGED_LIFETIME,
    Claims,
    LeaseLost,
    MediaFiles,
    MediaItem,
    PendingAsks,
    ReservedJob,
    Staged,
    Store,
    StoreOffline,
    TaskTaken,
)
from bot.store.locations import is_postgres_url, reason, shown

__all__ = ["ASK_LIFETIME", "MAX_JOB_ID", "STAGED_LIFETIME", "Claims", "LeaseLost", "MediaFiles", "MediaItem",
           "PendingAsks", "ReservedJob", "Staged", "Store", "StoreOffline", "StoreUnavailable", "TaskTaken",
           "is_postgres_url", "open_store"]


class StoreUnavailable(Exception):
    """The store cannot be opened; str() is one plain line, with no password in it."""


async def open_store(url: str, *, busy_timeout: float = 30.0) -> Store:
    """Open (and migrate) the store a URL names: a SQLite path, or a PostgreSQL URL.
    Raises StoreUnavailable (unreachable, refused, wrong password, not a database...)."""
    try:
        if is_postgres_url(url):
            from bot.store.postgres import PostgresStore  # only a PostgreSQL bot loads the driver

            return await PostgresStore.open(url)
        from bot.store.sqlite import SqliteStore

        return SqliteStore(url, busy_timeout=busy_timeout)
    except Exception as err:
        raise StoreUnavailable(messages.store_cannot_open(shown(url), reason(err, (url,)))) from None
