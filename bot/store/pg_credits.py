"""The PostgreSQL backend's credit writes in as few round trips as their guarantees allow
(``bot.store.interface``: ``user_and_active_jobs``, ``insert_reserved_job``, ``commit_job``).

A credit pair was 15 round trips; each costs the bot and the server CPU, so the writes
an accept and a settle make together are one statement each: a data-modifying CTE is
atomic by itself (no BEGIN and COMMIT needed), and its parts see one snapshot, so the
conditions they test are those of the same moment. What to reserve and what the ledger
says stays in ``bot.credits``: these statements only write what they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.jobs import Job, JobState
from bot.store.interface import LeaseLost, MediaItem, Staged
from bot.store.pg_migrations import storable
from bot.store.pg_parts import ACTIVE, job_from_row
from bot.store.pg_session import Connections

USER_COLUMNS = ("key", "platform", "name", "period", "daily_left", "bonus", "created_at")


class PgCreditWrites:
    """Accept's read and write, and settle's one write, for ``PostgresStore``."""

    db: Connections

    def _locking(self) -> str:
        """`` for no key update`` inside a transaction (``PostgresStore._locking``)."""
        raise NotImplementedError

    async def user_and_active_jobs(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The user's row (locked inside a transaction) and their active jobs' count, in one
        round trip. Read after ``lock_user``: this statement's snapshot is taken once the lock
        is held, so it counts every job an earlier holder committed."""
        row = await self.db.fetchrow(
            f"with found as materialized (select * from users where key = $1{self._locking()})"
            " select (select count(*) from jobs where user_key = $1 and state = any($2::text[])) as active_jobs,"
            " found.* from (select) as one left join found on true", storable(key), ACTIVE)
        assert row is not None
        found = dict(row)
        active = int(found.pop("active_jobs"))
        return (found if found["key"] is not None else None), active

    async def insert_reserved_job(self, row: dict[str, Any], *, user: dict[str, Any], entry: dict[str, Any],
                                  media: Sequence[MediaItem] = ()) -> Job:
        """One statement: the user's row upserted, the job inserted, its ledger row and its
        media inserted naming it (foreign keys are checked at the statement's end)."""
        args: list[Any] = []

        def marks(values: dict[str, Any]) -> tuple[str, str]:
            names = ", ".join(f'"{name}"' for name in values)  # names come from code, not users
            places = []
            for value in clean(values).values():
                args.append(value)
                places.append(f"${len(args)}")
            return names, ", ".join(places)

        user_names, user_marks = marks({name: user[name] for name in USER_COLUMNS})
        updates = ", ".join(f'"{name}" = excluded."{name}"' for name in USER_COLUMNS
                            if name not in ("key", "created_at"))
        job_names, job_marks = marks(row)
        entry_names, entry_marks = marks({name: value for name, value in entry.items() if name != "job_id"})
        sql = (f"with who as (insert into users ({user_names}) values ({user_marks})"
               f" on conflict (key) do update set {updates}),"
               f" job as (insert into jobs ({job_names}) values ({job_marks}) returning *),"
               f" entry as (insert into ledger ({entry_names}, job_id) values ({entry_marks}, (select id from job)))")
        for n, item in enumerate(media):  # one insert each: a bytea[] would cost a type lookup per connection
            names, places = marks({"role": item.role, "mime": item.mime, "filename": item.filename,
                                   "data": _bytes(item.data)})
            sql += f", media{n} as (insert into job_media (job_id, {names}) values ((select id from job), {places}))"
        written = await self.db.fetchrow(sql + " select * from job", *args)
        assert written is not None
        return job_from_row(written)

    async def commit_job(self, job_id: int, *, owner: str, entry: dict[str, Any], drop_media: bool,
                         **changes: Any) -> bool:
        """One statement: the job's row locked only if ``owner`` holds it, then changed, its
        settlement moved only if still reserved (as the locked row says: a refund committed
        meanwhile is seen), the ledger row and the media drop only for a row that moved."""
        values = clean(changes)
        args: list[Any] = [job_id, owner, drop_media]
        sets = []
        for name, value in values.items():
            args.append(value)
            sets.append(f'"{name}" = ${len(args)}')  # names come from code, not users
        entry_values = clean(entry)
        entry_marks = []
        for value in entry_values.values():
            args.append(value)
            entry_marks.append(f"${len(args)}")
        entry_names = ", ".join(f'"{name}"' for name in entry_values)
        settled = await self.db.fetchval(
            # coalesce: a row with no settlement is held all the same (None would read as LeaseLost)
            "with held as (select id, coalesce(settlement = 'reserved', false) as reserved from jobs"
            " where id = $1 and owner = $2 for no key update),"
            f" moved as (update jobs set {', '.join(sets)}, settlement = case when held.reserved then 'committed'"
            " else jobs.settlement end from held where jobs.id = held.id returning jobs.id, held.reserved),"
            f" entry as (insert into ledger ({entry_names}) select {', '.join(entry_marks)} from moved"
            " where moved.reserved),"
            " media as (delete from job_media where $3 and job_id in (select id from moved))"
            " select reserved from moved", *args)
        if settled is None:
            raise LeaseLost(job_id)
        return bool(settled)


def _bytes(data: bytes | Staged) -> bytes:
    """A media item's bytes (a file staged by a SQLite store is read)."""
    if isinstance(data, Staged):
        if data.data is not None:
            return data.data
        assert data.path is not None
        return data.path.read_bytes()
    return data


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """Values as PostgreSQL takes them: a JobState as its text; text ``storable``."""
    return {name: value.value if isinstance(value, JobState) else storable(value) if isinstance(value, str)
            else value for name, value in values.items()}
