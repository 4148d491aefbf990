"""The PostgreSQL backend's side of a copy between stores (``bot.store.copy``): every row
in the neutral form of ``bot.store.interface`` (``COPIED_TABLES``), a job's media as the
bytes of its ``job_media`` row.

A part of ``PostgresStore`` (a mixin, kept apart for length). Ids are written as they
are; the identity sequences are then moved past them, so the next job or ledger entry
the bot writes takes a fresh id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from bot.store.interface import COPIED_TABLES, EXPORT_BYTES, EXPORT_ROWS, JSON_COLUMNS, MEDIA_BYTES
from bot.store.pg_migrations import storable
from bot.store.pg_parts import ACTIVE
from bot.store.pg_session import Connections

IDENTITY_TABLES = ("jobs", "ledger")  # tables whose id column is generated


class PgTransfer:
    """Export, import, erase and count the rows a copy moves."""

    db: Connections

    async def contents(self) -> dict[str, int]:
        counts = {table: int(await self.db.fetchval(f"select count(*) from {table}")) for table in COPIED_TABLES}
        size = await self.db.fetchval("select coalesce(sum(octet_length(data)), 0) from job_media")
        return {**counts, MEDIA_BYTES: int(size)}

    async def export_batches(self, table: str) -> AsyncIterator[list[dict[str, Any]]]:
        if table == "job_media":
            async for batch in self._export_media():
                yield batch
            return
        after: tuple[Any, ...] | None = None
        while rows := await self._page(table, "*", after, EXPORT_ROWS):
            yield rows
            after = tuple(rows[-1][name] for name in COPIED_TABLES[table])

    async def _page(self, table: str, columns: str, after: tuple[Any, ...] | None,
                    limit: int) -> list[dict[str, Any]]:
        """Rows of a table in key order, after the key ``after`` (from the start: None)."""
        key = ", ".join(COPIED_TABLES[table])
        where = (f" where ({key}) > ({', '.join(f'${n}' for n in range(1, len(after) + 1))})"
                 if after is not None else "")
        rows = await self.db.fetch(f"select {columns} from {table}{where} order by {key} limit {int(limit)}",
                                   *(after or ()))
        return [dict(row) for row in rows]

    async def _export_media(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Media rows with their bytes, a batch of about ``EXPORT_BYTES`` at a time: the
        sizes are read first, then the bytes of as many rows as fit in one batch."""
        after: tuple[Any, ...] | None = None
        while sizes := await self._page("job_media", "job_id, role, coalesce(octet_length(data), 0) as size",
                                        after, EXPORT_ROWS):
            after = (sizes[-1]["job_id"], sizes[-1]["role"])
            chunk: list[dict[str, Any]] = []
            total = 0
            for row in sizes:
                if chunk and total + row["size"] > EXPORT_BYTES:
                    yield await self._media_rows(chunk)
                    chunk, total = [], 0
                chunk.append(row)
                total += row["size"]
            if chunk:
                yield await self._media_rows(chunk)

    async def _media_rows(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "select job_id, role, mime, filename, data from job_media where (job_id, role) in"
            " (select * from unnest($1::bigint[], $2::text[])) order by job_id, role",
            [key["job_id"] for key in keys], [key["role"] for key in keys])
        return [dict(row) for row in rows]

    async def import_batch(self, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = list(rows[0])
        columns = ", ".join(f'"{name}"' for name in names)  # names come from code, not users
        marks = ", ".join(f"${n}" for n in range(1, len(names) + 1))
        records = [[_value(table, name, row[name]) for name in names] for row in rows]
        async with self.db.connection() as conn:
            await conn.executemany(f"insert into {table} ({columns}) values ({marks})", records)
            if table in IDENTITY_TABLES:
                # the next generated id follows the greatest one written (1 in an empty table)
                await conn.execute(f"select setval(pg_get_serial_sequence('{table}', 'id'),"
                                   f" coalesce(max(id), 1), max(id) is not null) from {table}")

    async def erase(self) -> None:
        await self.db.execute(f"truncate {', '.join(COPIED_TABLES)} restart identity")

    async def live_leases(self, now: float) -> list[tuple[int, float]]:
        rows = await self.db.fetch("select id, lease_until from jobs where state = any($1::text[])"
                                   " and lease_until >= $2 order by id", ACTIVE, now)
        return [(int(row["id"]), float(row["lease_until"])) for row in rows]


def _value(table: str, name: str, value: Any) -> Any:
    """A value as PostgreSQL takes it: a JSON column as JSON text (the connection's codec
    makes its strings storable), and text ``storable``."""
    if value is not None and name in JSON_COLUMNS.get(table, ()):
        return json.dumps(value)
    return storable(value) if isinstance(value, str) else value
