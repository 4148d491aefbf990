"""The PostgreSQL backend of the store (``bot.store.interface``), through asyncpg: for
fronts and workers on several machines sharing one database.

It keeps the SQLite backend's semantics (``bot.store.sqlite``), call for call. Where
SQLite relies on its one write lock, this backend locks rows: inside ``transaction()``
``job(id)`` and ``user(key)`` read ``FOR NO KEY UPDATE`` and ``lock_user(key)`` takes a
transaction-scoped advisory lock on the key, so one user's read-check-write runs one at
a time on every machine, row or no row. Claims use ``FOR UPDATE SKIP LOCKED``
(``bot.store.pg_parts``); a job queued, or a task's end recorded, sends a NOTIFY that
wakes every process (``bot.store.pg_session.ChangeFeed``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from bot.jobs import ACTIVE_STATES, Job, JobState
from bot.store.interface import MAX_JOB_ID, LeaseLost, TaskTaken
from bot.store.pg_access import PgAccess
from bot.store.pg_credits import PgCreditWrites, clean
from bot.store.pg_metrics import PgMetrics
from bot.store.pg_migrations import USER_LOCK_CLASS, migrate, storable
from bot.store.pg_parts import ACTIVE, PgClaims, PgMediaFiles, PgModelListing, PgPendingAsks, job_from_row
from bot.store.pg_payments import PgPayments
from bot.store.pg_session import CONNECT_TIMEOUT, ChangeFeed, Connections, create_pool
from bot.store.pg_spend import PgSpend
from bot.store.pg_stats import PgStats
from bot.store.pg_transfer import PgTransfer

log = logging.getLogger(__name__)

JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}
ONE_JOB_PER_TASK = "jobs_one_job_per_task"  # the unique index on jobs.prediction_id


class PostgresStore(PgCreditWrites, PgTransfer, PgModelListing, PgMetrics, PgStats, PgSpend, PgAccess,
                    PgPayments):
    """The bot's database in PostgreSQL. One per event loop; any number per database."""

    hears_other_processes = True  # LISTEN/NOTIFY

    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed):
        self.db = Connections(pool)
        self.feed = feed
        self.asks = PgPendingAsks(self.db)
        self.claims = PgClaims(self.db)
        self.files = PgMediaFiles(self.db)

    @classmethod
    async def open(cls, url: str, *, min_size: int = 0, max_size: int = 10, listen: bool = True) -> PostgresStore:
        """Connect, migrate (one process at a time) and, with ``listen``, start hearing
        other processes' changes before returning."""
        pool = await create_pool(url, min_size=min_size, max_size=max_size)
        feed = ChangeFeed(url)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            if listen:
                await feed.start()
        except BaseException:
            await pool.close()
            raise
        return cls(pool, feed)

    async def close(self) -> None:
        await self.feed.close()
        try:
            await asyncio.wait_for(self.db.pool.close(), CONNECT_TIMEOUT)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.db.pool.terminate()

    async def schema_version(self) -> int:
        return int(await self.db.fetchval("select max(version) from kling_schema"))

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """One atomic unit of work on one connection; a transaction of the same task
        inside it joins it (as a savepoint)."""
        return self.db.transaction()

    def in_transaction(self) -> bool:
        return self.db.in_transaction() is not None

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(job_id)`` when any process queues a job or records a task's
        end (this one's too, once), and ``listener(0)`` after the connection to the
        server came back: what happened meanwhile went unheard."""
        self.feed.listeners.append(listener)

    def _locking(self) -> str:
        """Inside a transaction, a row read is locked against every other change until it
        ends. Not ``for update``: that also waits for the key-share locks that writing a
        row that refers to it takes (a job's second write in one transaction checks its
        user again), and a refund holding a job would then deadlock with one holding the
        user; no row's key ever changes."""
        return " for no key update" if self.db.in_transaction() is not None else ""

    async def lock_user(self, key: str) -> None:
        """Serialise this transaction with every other about the same user (outside a
        transaction there is nothing to hold a lock for)."""
        if self.db.needs_lock(key):  # accept locks the user, then reading its credits asks again
            await self.db.execute("select pg_advisory_xact_lock($1, hashtext($2))", USER_LOCK_CLASS, storable(key))

    # --- users and the ledger ----------------------------------------------------

    async def user(self, key: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("select * from users where key = $1" + self._locking(), key)
        return dict(row) if row is not None else None

    async def add_user(self, row: dict[str, Any]) -> None:
        await self._insert("users", row)

    async def update_user(self, key: str, **changes: Any) -> None:
        sets, args = _assignments(changes)
        await self.db.execute(f"update users set {sets} where key = ${len(args) + 1}", *args, key)

    async def add_ledger(self, **entry: Any) -> None:
        await self._insert("ledger", entry)

    async def settle(self, job_id: int, outcome: str) -> bool:
        """Mark a job's reservation committed or refunded, once: False if already settled."""
        return await self.db.execute("update jobs set settlement = $1 where id = $2 and settlement = 'reserved'",
                                     outcome, job_id) == 1

    async def _insert(self, table: str, row: dict[str, Any], returning: str = "") -> Any:
        values = clean(row)
        columns = ", ".join(f'"{name}"' for name in values)  # names come from code, not users
        marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        sql = f"insert into {table} ({columns}) values ({marks}){returning}"
        return await self.db.fetchval(sql, *values.values())

    # --- jobs -----------------------------------------------------------------

    async def insert_job(self, row: dict[str, Any]) -> int:
        """Write a new job; a queued one wakes every listening process once committed."""
        return int(await self._insert("jobs", row, " returning id"))

    async def job(self, job_id: int) -> Job | None:
        if not 0 < job_id <= MAX_JOB_ID:  # a number typed by a user: no such job
            return None
        row = await self.db.fetchrow("select * from jobs where id = $1" + self._locking(), job_id)
        return job_from_row(row) if row is not None else None

    async def job_row(self, job_id: int) -> dict[str, Any]:
        row = await self.db.fetchrow("select * from jobs where id = $1" + self._locking(), job_id)
        if row is None:
            raise IndexError(job_id)
        return dict(row)

    async def update_job(self, job_id: int, *, owner: str | None = None, known: Job | None = None,
                         **changes: Any) -> Job:
        """One write to a job row; returns the job as it now is (``known``, the job as the
        caller has it, spares reading the row back).

        With ``owner``, the write happens only while that process holds the job, and
        LeaseLost says it no longer does (a fence: two processes never both drive it).
        """
        sets, args = _assignments(changes)
        args.append(job_id)
        where = f"id = ${len(args)}"
        if owner:
            args.append(owner)
            where += f" and owner = ${len(args)}"
        sql = f"update jobs set {sets} where {where}" + ("" if known is not None else " returning *")
        conn = self.db.in_transaction()
        try:
            if conn is not None and "prediction_id" in changes:
                async with conn.transaction():  # a savepoint: a refused task id leaves the caller's transaction usable
                    row = await self._write_job(sql, args, known)
            else:
                row = await self._write_job(sql, args, known)
        except asyncpg.UniqueViolationError as err:
            if err.constraint_name == ONE_JOB_PER_TASK:
                raise TaskTaken(changes.get("prediction_id")) from None
            raise
        if row is None:
            raise LeaseLost(job_id) if owner else KeyError(job_id)
        if known is None:
            assert isinstance(row, asyncpg.Record)
            return job_from_row(row)
        kept = {name: value for name, value in changes.items() if name in JOB_FIELDS}
        if "state" in kept:
            kept["state"] = JobState(kept["state"])
        if "nsfw" in kept:
            kept["nsfw"] = bool(kept["nsfw"])
        return dataclasses.replace(known, **kept)

    async def _write_job(self, sql: str, args: list[Any], known: Job | None) -> asyncpg.Record | bool | None:
        """The updated row (or True when ``known`` spares reading it); None: no row matched."""
        if known is None:
            return await self.db.fetchrow(sql, *args)
        return True if await self.db.execute(sql, *args) == 1 else None

    async def record_result(self, job_id: int, prediction_id: str, result: dict[str, Any]) -> Job | None:
        """Keep a task's end as its webhook reported it, for the job that submitted it
        (one still waiting for its task); None when no such job waits for it. The first
        task reported stays: a later delivery naming another task never replaces it.
        Check and write are one statement: two deliveries at once keep one task."""
        if not 0 < job_id <= MAX_JOB_ID:
            return None
        row = await self.db.fetchrow(
            "update jobs set webhook_result = $1 where id = $2 and state in ('submitting', 'processing')"
            " and (prediction_id is null or prediction_id = $3)"
            " and (webhook_result is null or webhook_result->>'id' = $3) returning *",
            result, job_id, prediction_id)
        return job_from_row(row) if row is not None else None

    async def submits_in_window(self, model_id: str, job_id: int, start: float,
                                end: float) -> list[tuple[float, float | None]]:
        """(started, ended) of other jobs' submits of a model begun in a window that have
        no task id yet: their tasks, if any, may be among this window's."""
        rows = await self.db.fetch(
            "select submit_started_at, submit_ended_at from jobs where model_id = $1 and id <> $2"
            " and state = 'submitting' and prediction_id is null and submit_started_at between $3 and $4"
            " order by id", model_id, job_id, start, end)
        return [(float(started), None if ended is None else float(ended)) for started, ended in rows]

    async def prediction_claimed(self, prediction_id: str, job_id: int) -> bool:
        """Whether a job other than ``job_id`` follows this task, or had it named by a webhook
        to its own URL (a delivery of the same task at another job's URL is a replay)."""
        return bool(await self.db.fetchval(
            "select exists (select 1 from jobs where id <> $1 and (prediction_id = $2"
            " or webhook_result->>'id' = $2))", job_id, prediction_id))

    async def _jobs(self, where: str, *args: Any, order: str = "id", limit: int | None = None) -> list[Job]:
        bounded = f" limit {int(limit)}" if limit is not None else ""
        rows = await self.db.fetch(f"select * from jobs where {where} order by {order}{bounded}", *args)
        return [job_from_row(row) for row in rows]

    async def user_jobs(self, user_key: str, *, active_only: bool = True, limit: int = 10) -> list[Job]:
        states = ACTIVE_STATES if active_only else tuple(JobState)
        return await self._jobs("user_key = $1 and state = any($2::text[])", user_key,
                                [s.value for s in states], order="id desc", limit=max(limit, 0))

    async def finished_jobs(self, user_key: str, limit: int = 10) -> list[Job]:
        """A user's ended jobs, newest first."""
        return await self._jobs("user_key = $1 and not state = any($2::text[])", user_key, ACTIVE,
                                order="id desc", limit=limit)

    async def count_active(self, user_key: str) -> int:
        return int(await self.db.fetchval("select count(*) from jobs where user_key = $1 and state = any($2::text[])",
                                          user_key, ACTIVE))

    async def queue_position(self, job_id: int) -> int:
        """1-based place among queued jobs, first come first served; 0 if not queued."""
        if not 0 < job_id <= MAX_JOB_ID:
            return 0
        return int(await self.db.fetchval(
            "select count(*) from jobs where state = 'queued' and id <= $1"
            " and exists (select 1 from jobs j where j.id = $1 and j.state = 'queued')", job_id))

    async def recent_run_seconds(self, model_id: str, duration: str | None, limit: int = 20) -> list[float]:
        """How long the last jobs of a model took from submit to a ready video."""
        rows = await self.db.fetch(
            "select completed_at - submitted_at as span, inputs from jobs where model_id = $1"
            " and completed_at is not null and submitted_at is not null order by id desc limit $2",
            model_id, limit * 3)
        return [row["span"] for row in rows if (row["inputs"] or {}).get("duration") == duration][:limit]

    async def effect_counts(self) -> dict[str, int]:
        """How often each effect was asked for, for "most used first" menus."""
        rows = await self.db.fetch("select inputs->>'effect_scene' as effect, count(*) as times from jobs"
                                   " where kind = 'effect' group by effect")
        return {row["effect"]: row["times"] for row in rows if row["effect"]}

    async def usage_since(self, platform: str, since: float, place_key: str, place: object) -> tuple[int, int]:
        """(jobs, credits spent) on a platform since a moment, in one place (e.g. a server)."""
        row = await self.db.fetchrow(
            "select count(*) as jobs, coalesce(sum(case when settlement != 'refunded' then cost end), 0)::bigint"
            " as spent from jobs where platform = $1 and created_at >= $2 and reply_to->>$3 = $4",
            platform, since, place_key, str(place))
        assert row is not None
        return int(row["jobs"]), int(row["spent"])


def _assignments(changes: dict[str, Any]) -> tuple[str, list[Any]]:
    """``"a" = $1, "b" = $2`` and its arguments (names come from code, not users)."""
    values = clean(changes)
    sets = ", ".join(f'"{name}" = ${n}' for n, name in enumerate(values, start=1))
    return sets, list(values.values())
