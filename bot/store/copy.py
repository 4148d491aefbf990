"""Copy everything a bot keeps from one store to another, whatever their backends
(``kling-bot db copy``): users, the ledger, jobs (every column: leases, webhook results,
settlements, quotes), their media (bytes, wherever a backend keeps them), pending
questions and the cached model listing.

The shape of Red-DiscordBot's ``BaseDriver.migrate_to``: one backend-neutral loop over
the source's ``export_batches`` and the target's ``import_batch``, so each backend only
knows its own side. The target is written in one transaction: a copy that fails leaves
it as it was. Batches keep memory flat however many gigabytes of media there are.
Afterwards the target's counts (rows per table, media bytes) must equal the source's.

A source whose jobs are leased by a running bot is refused: the copy would miss what
that bot writes after it (a job accepted, a credit spent), and once the copy's processes
start, two bots would drive the same jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from bot import messages
from bot.store import open_store
from bot.store.interface import CACHE_TABLES, COPIED_TABLES, MEDIA_BYTES, MediaMissing, Store
from bot.store.locations import is_postgres_url, passwords, reason, shown

__all__ = ["MEDIA_BYTES", "CopyFailed", "CopyMismatch", "CopyProgress", "CopyRefused", "copy_between",
           "copy_store", "described", "passwords", "shown"]

ROW_WEIGHT = 1024  # a row costs about as much to copy as a KiB of media (for the progress bar)


class CopyRefused(Exception):
    """The copy did not start, or stopped, and wrote nothing: one line says why."""


class CopyFailed(Exception):
    """The copy broke off (the connection was lost, a row was refused): nothing was written."""


class CopyMismatch(Exception):
    """The copy was written, but the target's counts differ from the source's."""


@dataclass(frozen=True)
class CopyProgress:
    """Where a copy is: the table being copied, what the source holds and what is done
    (rows per table, and media bytes under ``MEDIA_BYTES``)."""

    table: str
    total: dict[str, int]
    done: dict[str, int]
    table_done: bool = False

    @property
    def fraction(self) -> float:
        def work(counts: dict[str, int]) -> int:
            return sum(counts[t] for t in COPIED_TABLES) * ROW_WEIGHT + counts[MEDIA_BYTES]

        total = work(self.total)
        return min(1.0, work(self.done) / total) if total else 1.0


def same_database(a: str, b: str) -> bool:
    """Whether two locations name one database (best effort: one server may have many names)."""
    if is_postgres_url(a) != is_postgres_url(b):
        return False
    if not is_postgres_url(a):
        return Path(a).resolve() == Path(b).resolve()
    first, second = urlsplit(a), urlsplit(b)
    return ((first.hostname, first.port or 5432, first.path.strip("/"))
            == (second.hostname, second.port or 5432, second.path.strip("/")))


async def open_for_copy(location: str, *, source: bool) -> Store:
    """Open (and migrate) one side of a copy; a source SQLite file must exist (a typo must
    not become an empty database). Any problem is one line, its secrets masked."""
    if source and not is_postgres_url(location) and not Path(location).is_file():
        raise CopyRefused(messages.copy_no_such_file(location))
    try:
        if is_postgres_url(location):
            from bot.store.postgres import PostgresStore  # only a PostgreSQL copy loads the driver

            return await PostgresStore.open(location, max_size=2, listen=False)
        return await open_store(location)
    except Exception as err:  # unreachable, refused, wrong password, not a database...
        raise CopyRefused(messages.copy_cannot_open(shown(location), reason(err, (location,)))) from None


async def copy_store(source: Store, target: Store, *, force: bool, now: float,
                     progress: Callable[[CopyProgress], None] | None = None,
                     names: tuple[str, str] = ("source", "target")) -> dict[str, int]:
    """Copy every row and media byte of ``source`` into ``target``; returns the counts,
    checked on both sides. ``names``: how messages call the two stores."""
    for store, name in ((source, names[0]), (target, names[1])):
        if leases := await store.live_leases(now):
            until = datetime.fromtimestamp(max(end for _, end in leases), UTC)
            raise CopyRefused(messages.copy_in_use(name, len(leases), until))
    held = await target.contents()
    if any(n for table, n in held.items() if table not in CACHE_TABLES) and not force:
        raise CopyRefused(messages.copy_target_not_empty(names[1], described(held)))
    total = await source.contents()
    done = dict.fromkeys(total, 0)
    try:
        async with target.transaction():
            if any(held.values()):  # with --force, or only a cache the source's copy replaces
                await target.erase()
            for table in COPIED_TABLES:
                async for batch in source.export_batches(table):
                    await target.import_batch(table, batch)
                    done[table] += len(batch)
                    if table == "job_media":
                        done[MEDIA_BYTES] += sum(len(row["data"] or b"") for row in batch)
                    if progress is not None:
                        progress(CopyProgress(table, total, dict(done)))
                if progress is not None:
                    progress(CopyProgress(table, total, dict(done), table_done=True))
    except MediaMissing as missing:
        raise CopyRefused(messages.copy_media_missing(missing.job_id, missing.role, missing.path,
                                                      missing.reason)) from None
    copied = await target.contents()
    if copied != total or done != total:
        raise CopyMismatch(messages.copy_counts_differ(described(total), described(copied)))
    return copied


async def copy_between(source: str, target: str, *, force: bool, now: float,
                       progress: Callable[[CopyProgress], None] | None = None) -> dict[str, int]:
    """``copy_store`` between two locations (SQLite paths or PostgreSQL URLs)."""
    if same_database(source, target):
        raise CopyRefused(messages.copy_same_database(shown(source)))
    source_store = await open_for_copy(source, source=True)
    try:
        target_store = await open_for_copy(target, source=False)
        try:
            return await copy_store(source_store, target_store, force=force, now=now, progress=progress,
                                    names=(shown(source), shown(target)))
        except (CopyRefused, CopyMismatch):
            raise
        except Exception as err:
            raise CopyFailed(messages.copy_failed(reason(err, (source, target)))) from None
        finally:
            await target_store.close()
    finally:
        await source_store.close()


def described(counts: dict[str, int]) -> str:
    """Counts in words: ``3 users, 5 jobs, ... (1.2 MB of media)``."""
    return messages.copy_counts({table: counts[table] for table in COPIED_TABLES}, counts[MEDIA_BYTES])
