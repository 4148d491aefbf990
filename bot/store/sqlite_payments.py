"""The payments table in SQLite (a part of ``SqliteStore``): one row per charge, written
once by its key (``bot.store.interface``, "payments (#18)")."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from bot.store.interface import mended


class SqlitePayments:
    """``insert_payment``, ``payment``, ``latest_payment``, ``mark_refunded``, ``mark_consumed``,
    ``make_up_refund``."""

    db: sqlite_utils.Database

    def _rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def insert_payment(self, row: dict[str, Any]) -> bool:
        values = {**row, "details": json.dumps(row.get("details") or {})}
        columns = ", ".join(values)  # names come from code, not users
        cursor = self.db.execute(
            f"insert into payments ({columns}) values ({', '.join('?' * len(values))}) on conflict (key) do nothing",
            [mended(value) if isinstance(value, str) else value for value in values.values()])
        return cursor.rowcount == 1

    async def payment(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("select * from payments where key = ?", [mended(key)])
        return _payment(rows[0]) if rows else None

    async def latest_payment(self, user_key: str) -> dict[str, Any] | None:
        rows = self._rows("select * from payments where user_key = ? and refunded_at is null"
                          " order by at desc, key desc limit 1", [mended(user_key)])
        return _payment(rows[0]) if rows else None

    async def mark_refunded(self, key: str, *, at: float, by: str, credits: int, short: int) -> bool:
        cursor = self.db.execute(
            "update payments set refunded_at = ?, refunded_by = ?, refunded_credits = ?, refund_short = ?"
            " where key = ? and refunded_at is null", [at, mended(by), credits, short, mended(key)])
        return cursor.rowcount == 1

    async def mark_consumed(self, key: str, at: float) -> None:
        self.db.execute("update payments set consumed_at = ? where key = ? and consumed_at is null",
                        [at, mended(key)])

    async def make_up_refund(self, key: str, credits: int) -> bool:
        cursor = self.db.execute(
            "update payments set refunded_credits = refunded_credits + ?, refund_short = refund_short - ?"
            " where key = ? and refunded_at is not null and refund_short >= ?",
            [credits, credits, mended(key), credits])
        return cursor.rowcount == 1


def _payment(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "details": json.loads(row["details"]) if row["details"] else {}}
