"""The payments table in PostgreSQL (a part of ``PostgresStore``): one row per charge,
written once by its key (``bot.store.interface``, "payments (#18)")."""

from __future__ import annotations

from typing import Any

from bot.store.pg_credits import clean
from bot.store.pg_migrations import storable
from bot.store.pg_session import Connections


class PgPayments:
    """``insert_payment``, ``payment``, ``latest_payment``, ``mark_refunded``, ``mark_consumed``,
    ``make_up_refund``."""

    db: Connections

    async def insert_payment(self, row: dict[str, Any]) -> bool:
        values = clean({**row, "details": row.get("details") or {}})
        columns = ", ".join(f'"{name}"' for name in values)  # names come from code, not users
        marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        # A rival insert of the same key not yet committed makes this one wait for it,
        # then do nothing: exactly one of any number of processes writes the row.
        return await self.db.execute(f"insert into payments ({columns}) values ({marks})"
                                     " on conflict (key) do nothing", *values.values()) == 1

    async def payment(self, key: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("select * from payments where key = $1", storable(key))
        return _payment(row) if row is not None else None

    async def latest_payment(self, user_key: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow("select * from payments where user_key = $1 and refunded_at is null"
                                     " order by at desc, key desc limit 1", storable(user_key))
        return _payment(row) if row is not None else None

    async def mark_refunded(self, key: str, *, at: float, by: str, credits: int, short: int) -> bool:
        return await self.db.execute(
            "update payments set refunded_at = $1, refunded_by = $2, refunded_credits = $3, refund_short = $4"
            " where key = $5 and refunded_at is null", at, storable(by), credits, short, storable(key)) == 1

    async def mark_consumed(self, key: str, at: float) -> None:
        await self.db.execute("update payments set consumed_at = $1 where key = $2 and consumed_at is null",
                              at, storable(key))

    async def make_up_refund(self, key: str, credits: int) -> bool:
        return await self.db.execute(
            "update payments set refunded_credits = refunded_credits + $1, refund_short = refund_short - $1"
            " where key = $2 and refunded_at is not null and refund_short >= $1", credits, storable(key)) == 1


def _payment(row: Any) -> dict[str, Any]:
    found = dict(row)
    found["details"] = dict(found["details"]) if found["details"] is not None else {}
    return found
