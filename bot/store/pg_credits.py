"""The PostgreSQL backend's credit writes in as few round trips as their guarantees allow
(``bot.store.interface``: ``user_and_active_jobs``, ``insert_reserved_job``,
``reserve_if_unchanged``, ``commit_job``).

A credit pair was 15 round trips; each costs the bot and the server CPU, so the writes
an accept and a settle make together are one statement each: a data-modifying CTE is
atomic by itself (no BEGIN and COMMIT needed), and its parts see one snapshot, so the
conditions they test are those of the same moment. What to reserve and what the ledger
says stays in ``bot.credits``: these statements only write what they are given. An
accept from a user row the process read before (``reserve_if_unchanged``) is a single
statement, without a transaction: it writes only if the row's version is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from bot.jobs import JobState
from bot.store.interface import LeaseLost, MediaItem, ReservedJob, Staged
from bot.store.pg_migrations import USER_LOCK_CLASS, storable
from bot.store.pg_parts import ACTIVE, job_from_row
from bot.store.pg_session import Connections

USER_COLUMNS = ("key", "platform", "name", "period", "daily_left", "bonus", "purchased", "created_at")


def _user_columns(user: dict[str, Any]) -> tuple[str, ...]:
    """The columns of a user row to write: ``allowance`` too when the row names it."""
    return USER_COLUMNS + (("allowance",) if "allowance" in user else ())


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
                                  media: Sequence[MediaItem] = ()) -> ReservedJob:
        """One statement: the user's row upserted, the job inserted, its ledger row and its
        media inserted naming it (foreign keys are checked at the statement's end)."""
        args: list[Any] = []
        user_names, user_marks = _marks(args, {name: user[name] for name in _user_columns(user)})
        updates = ", ".join(f'"{name}" = excluded."{name}"' for name in _user_columns(user)
                            if name not in ("key", "created_at"))
        sql = (f"with who as (insert into users ({user_names}) values ({user_marks})"
               f" on conflict (key) do update set {updates} returning version),")
        written = await self.db.fetchrow(sql + _job_after_who(args, row, entry, media), *args)
        assert written is not None
        return _reserved(written)

    async def reserve_if_unchanged(self, row: dict[str, Any], *, user: dict[str, Any], version: int,
                                   active_below: int, entry: dict[str, Any],
                                   media: Sequence[MediaItem] = ()) -> ReservedJob | None:
        """One statement, atomic without a transaction: the user's lock, then their row
        written only if its version is still ``version`` and their active jobs are fewer
        than ``active_below``; the job, its ledger row and its media only after that write.

        Why a count from the statement's snapshot is safe. Under READ COMMITTED the
        snapshot is taken when the statement starts, before it waits for the lock or the
        row; the UPDATE's WHERE is then checked again on the row's newest version once any
        writer of the row has committed (EvalPlanQual), but the count is not taken again.
        Every accept of the user writes their row (the version moves, by trigger) in the
        same transaction that inserts the job, so a job the snapshot cannot see came with
        a newer version than ``version``: the check on the newest row fails and nothing is
        written. A job that ended meanwhile only makes the count too high (a refusal
        here, and the caller asks again under the lock).

        Why the lock. The locked path (``lock_user``, then ``user_and_active_jobs``, then
        ``insert_reserved_job``) counts the user's jobs with its read's snapshot. Were this
        statement to write without the lock, that read could start before it commits, wait
        for the row it holds, and then see the new row but not its job. Holding the lock
        from before it touches the row to its end (the statement's one-time filter runs
        first), this statement either commits before such a read starts or waits for that
        transaction to end (and then finds the version it wrote)."""
        args: list[Any] = [USER_LOCK_CLASS, storable(user["key"]), version, ACTIVE, active_below]
        changes = {name: user[name] for name in _user_columns(user) if name not in ("key", "created_at")}
        sets = []
        for name, value in clean(changes).items():
            args.append(value)
            sets.append(f'"{name}" = ${len(args)}')  # names come from code, not users
        sql = ("with locked as materialized (select pg_advisory_xact_lock($1, hashtext($2))),"
               f" who as (update users set {', '.join(sets)} where key = $2 and version = $3"
               " and exists (select from locked)"
               " and (select count(*) from jobs where user_key = $2 and state = any($4::text[])) < $5"
               " returning version),")
        written = await self.db.fetchrow(sql + _job_after_who(args, row, entry, media), *args)
        return _reserved(written) if written is not None else None

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


def _marks(args: list[Any], values: dict[str, Any]) -> tuple[str, str]:
    """Column names and their placeholders, the values appended to ``args``."""
    names = ", ".join(f'"{name}"' for name in values)  # names come from code, not users
    places = []
    for value in clean(values).values():
        args.append(value)
        places.append(f"${len(args)}")
    return names, ", ".join(places)


def _job_after_who(args: list[Any], row: dict[str, Any], entry: dict[str, Any], media: Sequence[MediaItem]) -> str:
    """The rest of an accept's statement, after a ``who`` CTE that returns the user's
    version once written (no row: nothing more is written): the job, its ledger row
    and its media, then the job with that version and its place in the queue. The
    place is counted in the statement's snapshot, which the new job is not in."""
    job_names, job_marks = _marks(args, row)
    entry_names, entry_marks = _marks(args, {name: value for name, value in entry.items() if name != "job_id"})
    sql = (f" job as (insert into jobs ({job_names}) select {job_marks} from who returning *),"
           f" entry as (insert into ledger ({entry_names}, job_id) select {entry_marks}, job.id from job)")
    for n, item in enumerate(media):  # one insert each: a bytea[] would cost a type lookup per connection
        names, places = _marks(args, {"role": item.role, "mime": item.mime, "filename": item.filename,
                                      "data": _bytes(item.data)})
        sql += f", media{n} as (insert into job_media (job_id, {names}) select job.id, {places} from job)"
    return sql + (" select job.*, (select version from who) as user_version,"
                  " case when job.state = 'queued' then 1 + (select count(*) from jobs queued"
                  " where queued.state = 'queued' and queued.id < job.id) else 0 end as queue_position from job")


def _reserved(written: asyncpg.Record) -> ReservedJob:
    return ReservedJob(job_from_row(written), int(written["user_version"]), int(written["queue_position"]))


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
