"""Spend in USD and the admin alerts already sent (a part of ``PostgresStore``)."""

from __future__ import annotations

from decimal import Decimal

from bot.store.interface import SPEND_OF_JOB, UNQUOTED_CREDITS_OF_JOB
from bot.store.pg_session import Connections

SPEND_LOCK = 0x4B4C5350  # the advisory lock every accept under a [spend] cap takes ("KLSP")


class PgSpend:
    db: Connections

    async def spend_usd(self, since: float, place_key: str | None = None, *,
                        credit_usd: Decimal = Decimal("0.25")) -> Decimal:
        """What jobs created since ``since`` (of one place, or all) cost, as ``Store.spend_usd`` counts it."""
        row = await self.db.fetchrow(
            f"select coalesce(sum({SPEND_OF_JOB}), 0) as usd, coalesce(sum({UNQUOTED_CREDITS_OF_JOB}), 0) as unquoted"
            " from jobs where created_at >= $1 and ($2::text is null or place_key = $2)", since, place_key)
        assert row is not None
        return Decimal(row["usd"]) + credit_usd * int(row["unquoted"])

    async def lock_spend(self) -> None:
        """Serialise this transaction with every other accept under a cap, on every machine."""
        await self.db.execute("select pg_advisory_xact_lock($1)", SPEND_LOCK)

    async def claim_alert(self, key: str, at: float) -> bool:
        """Record the alert ``key`` as sent; False when it was already (by any process)."""
        return await self.db.execute(
            "insert into alerts_sent (key, at) values ($1, $2) on conflict (key) do nothing", key, at) == 1
