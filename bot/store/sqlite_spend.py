"""Spend in USD and the admin alerts already sent (a part of ``SqliteStore``)."""

from __future__ import annotations

from decimal import Decimal

import sqlite_utils

from bot.store.interface import SPEND_OF_JOB, UNQUOTED_CREDITS_OF_JOB


class SqliteSpend:
    db: sqlite_utils.Database

    async def spend_usd(self, since: float, place_key: str | None = None, *,
                        credit_usd: Decimal = Decimal("0.25")) -> Decimal:
        """What jobs created since ``since`` (of one place, or all) cost, as ``Store.spend_usd`` counts it."""
        # Money is decimal text here: summed in Python, exactly, a distinct amount at a time.
        place = " and place_key = ?" if place_key is not None else ""
        rows = self.db.execute(
            f"select usd, count(*), coalesce(sum(unquoted), 0) from (select {SPEND_OF_JOB} as usd,"
            f" {UNQUOTED_CREDITS_OF_JOB} as unquoted from jobs where created_at >= ?{place}) group by usd",
            [since, *([place_key] if place_key is not None else [])]).fetchall()
        total = Decimal(0)
        for usd, count, unquoted in rows:
            if usd is not None:
                total += Decimal(str(usd)) * count
            total += credit_usd * int(unquoted)
        return total

    async def lock_spend(self) -> None:
        """Nothing to do: a transaction already holds SQLite's one write lock."""

    async def claim_alert(self, key: str, at: float) -> bool:
        """Record the alert ``key`` as sent; False when it was already (by any process)."""
        cursor = self.db.execute("insert into alerts_sent (key, at) values (?, ?) on conflict (key) do nothing",
                                 [key, at])
        return cursor.rowcount == 1
