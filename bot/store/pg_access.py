"""The operator's controls in PostgreSQL (a part of ``PostgresStore``): the bot-wide
state (a pause), bans, and queued jobs cancelled in one fenced write."""

from __future__ import annotations

from typing import Any

from bot.jobs import Job
from bot.store.pg_migrations import storable
from bot.store.pg_parts import job_from_row
from bot.store.pg_session import Connections


class PgAccess:
    """``bot_state`` and ``bans`` rows, and ``cancel_queued`` (see ``bot.store.interface``)."""

    db: Connections

    async def bot_state(self, key: str) -> dict[str, Any] | None:
        value = await self.db.fetchval("select value from bot_state where key = $1", key)
        return dict(value) if value is not None else None

    async def set_bot_state(self, key: str, value: dict[str, Any] | None, at: float) -> None:
        if value is None:
            await self.db.execute("delete from bot_state where key = $1", key)
            return
        await self.db.execute("insert into bot_state (key, value, updated_at) values ($1, $2, $3)"
                              " on conflict (key) do update set value = excluded.value,"
                              " updated_at = excluded.updated_at", key, value, at)

    async def ban(self, user_key: str, *, at: float, by: str, reason: str) -> bool:
        return await self.db.execute("insert into bans (user_key, at, by, reason) values ($1, $2, $3, $4)"
                                     " on conflict (user_key) do nothing",
                                     storable(user_key), at, storable(by), storable(reason)) == 1

    async def unban(self, user_key: str) -> bool:
        return await self.db.execute("delete from bans where user_key = $1", storable(user_key)) == 1

    async def ban_of(self, user_key: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("select * from bans where user_key = $1", storable(user_key))
        return dict(row) if row is not None else None

    async def bans(self) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.db.fetch("select * from bans order by at, user_key")]

    async def queued_job_ids(self) -> list[int]:
        return [row["id"] for row in await self.db.fetch("select id from jobs where state = 'queued' order by id")]

    async def cancel_queued(self, job_id: int, *, finished_at: float, error: str, failure: str) -> Job | None:
        # Re-checked on the row's newest version once a rival writer (a claim) commits:
        # a job claimed meanwhile is no longer queued and stays as it is.
        row = await self.db.fetchrow(
            "update jobs set state = 'cancelled', finished_at = $1, updated_at = $1, error = $2, failure = $3,"
            " charged_usd = 0 where id = $4 and state = 'queued' and submit_started_at is null"
            " and prediction_id is null returning *", finished_at, storable(error), failure, job_id)
        return job_from_row(row) if row is not None else None
