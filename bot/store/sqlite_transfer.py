"""The SQLite backend's side of a copy between stores (``bot.store.copy``): every row in
the neutral form of ``bot.store.interface`` (``COPIED_TABLES``), a job's media read from
and written to the files beside the database that its rows name.

A part of ``SqliteStore`` (a mixin, kept apart for length); its calls run on the store's
one connection, inside the copy's transaction when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from bot.jobs import ACTIVE_STATES
from bot.store.interface import (
    COPIED_TABLES,
    DECIMAL_COLUMNS,
    EXPORT_BYTES,
    EXPORT_ROWS,
    JSON_COLUMNS,
    MEDIA_BYTES,
    MediaMissing,
    exact,
)

if TYPE_CHECKING:
    from bot.store.sqlite import SqliteMediaFiles

ACTIVE = tuple(s.value for s in ACTIVE_STATES)


class SqliteTransfer:
    """Export, import, erase and count the rows a copy moves."""

    db: sqlite_utils.Database
    files: SqliteMediaFiles

    async def contents(self) -> dict[str, int]:
        counts = {table: int(self.db.execute(f"select count(*) from {table}").fetchone()[0])
                  for table in COPIED_TABLES}
        stored = self.db.execute("select coalesce(sum(length(data)), 0) from job_media where path is null")
        size = int(stored.fetchone()[0])
        for (path,) in self.db.execute("select path from job_media where path is not null").fetchall():
            with contextlib.suppress(OSError):  # a missing file: its export says so
                size += Path(path).stat().st_size
        return {**counts, MEDIA_BYTES: size}

    async def export_batches(self, table: str) -> AsyncIterator[list[dict[str, Any]]]:
        if table == "job_media":
            async for batch in self._export_media():
                yield batch
            return
        after: tuple[Any, ...] | None = None
        while rows := self._page(table, "*", after, EXPORT_ROWS):
            yield [_decoded(table, row) for row in rows]
            after = tuple(rows[-1][name] for name in COPIED_TABLES[table])

    def _page(self, table: str, columns: str, after: tuple[Any, ...] | None, limit: int) -> list[dict[str, Any]]:
        """Rows of a table in key order, after the key ``after`` (from the start: None)."""
        key = ", ".join(COPIED_TABLES[table])
        where = f" where ({key}) > ({', '.join('?' * len(after))})" if after is not None else ""
        cursor = self.db.execute(f"select {columns} from {table}{where} order by {key} limit {int(limit)}",
                                 list(after or ()))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def _export_media(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Media rows with their bytes, one file read at a time: a batch holds at most
        ``EXPORT_BYTES`` (or one larger file), never the whole folder."""
        batch: list[dict[str, Any]] = []
        size = 0
        after: tuple[Any, ...] | None = None
        while rows := self._page("job_media", "job_id, role, mime, filename, path", after, EXPORT_ROWS):
            after = (rows[-1]["job_id"], rows[-1]["role"])
            for row in rows:
                path = row.pop("path")
                row["data"] = await self._media_bytes(row["job_id"], row["role"], path)
                if batch and (size + len(row["data"] or b"") > EXPORT_BYTES or len(batch) >= EXPORT_ROWS):
                    yield batch
                    batch, size = [], 0
                batch.append(row)
                size += len(row["data"] or b"")
        if batch:
            yield batch

    async def _media_bytes(self, job_id: int, role: str, path: str | None) -> bytes | None:
        if path is None:  # kept in the row (a database older than media files)
            found = self.db.execute("select data from job_media where job_id = ? and role = ?",
                                    [job_id, role]).fetchone()
            return found[0] if found else None
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        except OSError as err:
            raise MediaMissing(job_id, role, path, str(err.strerror or err)) from None

    async def import_batch(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if table == "job_media":
            rows = [await self._media_file(row) for row in rows]
        rows = [_encoded(table, row) for row in rows]
        names = list(rows[0])
        columns = ", ".join(f'"{name}"' for name in names)  # names come from code, not users
        self.db.conn.executemany(f"insert into {table} ({columns}) values ({', '.join('?' * len(names))})",
                                 [[row[name] for name in names] for row in rows])

    async def _media_file(self, row: dict[str, Any]) -> dict[str, Any]:
        """A media row as this backend keeps it: the bytes in a file, the row naming it."""
        data = row["data"]
        kept = {name: value for name, value in row.items() if name != "data"}
        if data is None:
            return {**kept, "path": None}
        path = self.files.folder / f"job-{row['job_id']}-{row['role']}{Path(row['filename'] or '').suffix}"
        await asyncio.to_thread(path.write_bytes, data)
        return {**kept, "path": str(path)}

    async def erase(self) -> None:
        paths = [path for (path,) in self.db.execute("select path from job_media where path is not null")]
        for table in reversed(COPIED_TABLES):  # a row before the rows it refers to
            self.db.execute(f"delete from {table}")
        for path in paths:
            Path(path).unlink(missing_ok=True)

    async def live_leases(self, now: float) -> list[tuple[int, float]]:
        rows = self.db.execute(f"select id, lease_until from jobs where state in ({', '.join('?' * len(ACTIVE))})"
                               " and lease_until >= ? order by id", [*ACTIVE, now]).fetchall()
        return [(int(job_id), float(until)) for job_id, until in rows]


def _decoded(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns as Python values, money as ``Decimal`` (the neutral form)."""
    for name in JSON_COLUMNS.get(table, ()):
        if row[name] is not None:
            row[name] = json.loads(row[name])
    for name in DECIMAL_COLUMNS.get(table, ()):
        row[name] = exact(row[name])
    return row


def _encoded(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """JSON columns and money as the text this backend keeps."""
    return {name: json.dumps(value) if value is not None and name in JSON_COLUMNS.get(table, ())
            else str(value) if isinstance(value, Decimal) else value
            for name, value in row.items()}
