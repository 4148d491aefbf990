"""The operator's controls in SQLite (a part of ``SqliteStore``): the bot-wide state (a
pause), bans, and queued jobs cancelled in one fenced write."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from bot.jobs import Job


class SqliteAccess:
    """``bot_state`` and ``bans`` rows, and ``cancel_queued`` (see ``bot.store.interface``)."""

    db: sqlite_utils.Database

    def _rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _job(self, job_id: int) -> Job | None:
        raise NotImplementedError

    async def bot_state(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("select value from bot_state where key = ?", [key])
        return json.loads(rows[0]["value"]) if rows and rows[0]["value"] else None

    async def set_bot_state(self, key: str, value: dict[str, Any] | None, at: float) -> None:
        if value is None:
            self.db.execute("delete from bot_state where key = ?", [key])
            return
        self.db.execute("insert into bot_state (key, value, updated_at) values (?, ?, ?)"
                        " on conflict (key) do update set value = excluded.value, updated_at = excluded.updated_at",
                        [key, json.dumps(value), at])

    async def ban(self, user_key: str, *, at: float, by: str, reason: str) -> bool:
        cursor = self.db.execute("insert into bans (user_key, at, by, reason) values (?, ?, ?, ?)"
                                 " on conflict (user_key) do nothing", [user_key, at, by, reason])
        return cursor.rowcount == 1

    async def unban(self, user_key: str) -> bool:
        return self.db.execute("delete from bans where user_key = ?", [user_key]).rowcount == 1

    async def ban_of(self, user_key: str) -> dict[str, Any] | None:
        rows = self._rows("select * from bans where user_key = ?", [user_key])
        return rows[0] if rows else None

    async def bans(self) -> list[dict[str, Any]]:
        return self._rows("select * from bans order by at, user_key")

    async def queued_job_ids(self) -> list[int]:
        return [row["id"] for row in self._rows("select id from jobs where state = 'queued' order by id")]

    async def cancel_queued(self, job_id: int, *, finished_at: float, error: str, failure: str) -> Job | None:
        cursor = self.db.execute(
            "update jobs set state = 'cancelled', finished_at = ?, updated_at = ?, error = ?, failure = ?,"
            " charged_usd = '0' where id = ? and state = 'queued' and submit_started_at is null"
            " and prediction_id is null", [finished_at, finished_at, error, failure, job_id])
        return self._job(job_id) if cursor.rowcount == 1 else None
