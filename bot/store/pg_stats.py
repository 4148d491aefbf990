"""``Store.daily_stats`` on PostgreSQL (a part of ``PostgresStore``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bot.store import stats_sql
from bot.store.activity import ACTIVE, DAY, Activity, fold_days, fold_failures, fold_now, fold_spenders
from bot.store.pg_session import Connections

_MARKS = {"since": "$1", "until": "$2", "active": ", ".join(f"'{state}'" for state in ACTIVE),
          "day": f"floor((created_at - $3) / {DAY})::bigint",
          "paid_day": f"floor((at - $3) / {DAY})::bigint",
          "refund_day": f"floor((refunded_at - $3) / {DAY})::bigint", "user": "$2::text"}


class PgStats:
    """The figures /stats shows, read from the jobs, users and payments tables."""

    db: Connections

    async def _grouped(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.db.fetch(sql.format(**_MARKS), *args)]

    async def daily_stats(self, since: float, until: float, reset_hour_utc: int, *, top: int = 5,
                          credit_usd: Decimal = Decimal("0.25")) -> Activity:
        """Jobs, spend and credits per day of [since, until), the span's busiest users and
        places and its failures by kind, and the queue now (``bot.store.activity``)."""
        if self.db.in_transaction() is not None:
            return await self._daily_stats(since, until, reset_hour_utc, top, credit_usd)
        async with self.db.transaction():
            # One snapshot for every query, so the figures agree while other processes write.
            await self.db.execute("set transaction isolation level repeatable read, read only")
            return await self._daily_stats(since, until, reset_hour_utc, top, credit_usd)

    async def _daily_stats(self, since: float, until: float, reset_hour_utc: int, top: int,
                     credit_usd: Decimal) -> Activity:
        days = await self._grouped(stats_sql.DAYS, since, until, float(reset_hour_utc * 3600))
        payments = await self._grouped(stats_sql.PAYMENTS, since, until, float(reset_hour_utc * 3600))
        users = await self._grouped(stats_sql.USERS, since, until)
        places = await self._grouped(stats_sql.PLACES, since, until)
        keys = sorted({row["key"] for row in users})
        names = {row["key"]: row["name"] for row in
                 await self._grouped("select key, name from users where key = any($1::text[])", keys)}
        queued, running = fold_now(await self._grouped(stats_sql.NOW))
        return Activity(fold_days(days, since, until, reset_hour_utc, credit_usd, payments),
                        fold_spenders(users, names, top, credit_usd),
                        fold_spenders(places, {}, top, credit_usd),
                        fold_failures(await self._grouped(stats_sql.FAILURES, since, until)), queued, running)

    async def payments_since(self, since: float, user_key: str | None = None) -> list[dict[str, Any]]:
        """Payments credited since ``since`` (of one user, or everyone's), newest first."""
        return await self._grouped(stats_sql.PAYMENT_LIST, since, user_key or "")
