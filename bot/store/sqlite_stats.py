"""``Store.daily_stats`` on SQLite (a part of ``SqliteStore``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlite_utils

from bot.store import stats_sql
from bot.store.activity import ACTIVE, DAY, Activity, fold_days, fold_failures, fold_now, fold_spenders

_MARKS = {"since": ":since", "until": ":until", "active": ", ".join(f"'{state}'" for state in ACTIVE),
          # created_at is a moment after 1970: the cast's truncation is the floor
          "day": f"cast((created_at - :offset) / {DAY} as integer)",
          "paid_day": f"cast((at - :offset) / {DAY} as integer)",
          "refund_day": f"cast((refunded_at - :offset) / {DAY} as integer)", "user": ":user"}


class SqliteStats:
    """The figures /stats shows, read from the jobs, users and payments tables."""

    db: sqlite_utils.Database

    def _grouped(self, sql: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql.format(**_MARKS), args)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def daily_stats(self, since: float, until: float, reset_hour_utc: int, *, top: int = 5,
                          credit_usd: Decimal = Decimal("0.25")) -> Activity:
        """Jobs, spend and credits per day of [since, until), the span's busiest users and
        places and its failures by kind, and the queue now (``bot.store.activity``)."""
        # One read transaction: one snapshot of the WAL, so the figures agree with each other
        # while other processes write (and nothing is locked for them).
        in_transaction = self.db.conn.in_transaction
        if not in_transaction:
            self.db.execute("begin")
        try:
            return self._daily_stats(since, until, reset_hour_utc, top, credit_usd)
        finally:
            if not in_transaction:
                self.db.execute("commit")

    def _daily_stats(self, since: float, until: float, reset_hour_utc: int, top: int,
                     credit_usd: Decimal) -> Activity:
        span = {"since": since, "until": until}
        days = self._grouped(stats_sql.DAYS, {**span, "offset": reset_hour_utc * 3600})
        payments = self._grouped(stats_sql.PAYMENTS, {**span, "offset": reset_hour_utc * 3600})
        users = self._grouped(stats_sql.USERS, span)
        places = self._grouped(stats_sql.PLACES, span)
        keys = sorted({row["key"] for row in users})
        names = {row["key"]: row["name"] for row in self._named(keys)}
        queued, running = fold_now(self._grouped(stats_sql.NOW, {}))
        return Activity(fold_days(days, since, until, reset_hour_utc, credit_usd, payments),
                        fold_spenders(users, names, top, credit_usd),
                        fold_spenders(places, {}, top, credit_usd),
                        fold_failures(self._grouped(stats_sql.FAILURES, span)), queued, running)

    async def payments_since(self, since: float, user_key: str | None = None) -> list[dict[str, Any]]:
        """Payments credited since ``since`` (of one user, or everyone's), newest first."""
        return self._grouped(stats_sql.PAYMENT_LIST, {"since": since, "user": user_key or ""})

    def _named(self, keys: list[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 500):  # SQLite's limit on parameters is 999 in older builds
            chunk = keys[start:start + 500]
            found += self._grouped(f"select key, name from users where key in ({', '.join('?' * len(chunk))})",
                                   chunk)  # type: ignore[arg-type]
        return found
