"""The figures ``/metrics`` shows, read from a PostgreSQL database (a part of ``PostgresStore``)."""

from __future__ import annotations

from decimal import Decimal

from bot.store.interface import SPEND_OF_JOB, UNQUOTED_CREDITS_OF_JOB, MetricTotals
from bot.store.pg_session import Connections

# The spend rule the caps count by (``SPEND_OF_JOB``; an unquoted job's credits apart).
_SPENT = f"coalesce({SPEND_OF_JOB}, 0)"


class PgMetrics:
    """``OpsReads`` on PostgreSQL: one statement, so the figures agree with each other."""

    db: Connections

    async def metric_totals(self, *, credit_usd: Decimal = Decimal("0.25")) -> MetricTotals:
        row = await self.db.fetchrow(
            "select"
            f" (select coalesce(jsonb_agg(jsonb_build_array(model_id, state, n, spent::text, unquoted)), '[]'::jsonb)"
            f"   from (select model_id, state, count(*) as n, coalesce(sum({_SPENT}), 0) as spent,"
            f"         coalesce(sum({UNQUOTED_CREDITS_OF_JOB}), 0) as unquoted"
            "          from jobs group by model_id, state) as m) as by_model,"
            " (select coalesce(jsonb_object_agg(failure, n), '{}'::jsonb) from"
            "   (select failure, count(*) as n from jobs where failure is not null group by failure) as f) as failures,"
            " (select coalesce(sum(cost) filter (where settlement = 'committed'), 0)::bigint from jobs) as spent,"
            " (select coalesce(sum(cost) filter (where settlement = 'reserved'), 0)::bigint from jobs) as reserved,"
            " (select coalesce(sum(cost) filter (where settlement = 'refunded'), 0)::bigint from jobs) as refunded,"
            " (select coalesce(sum(daily_delta + bonus_delta), 0)::bigint from ledger"
            "   where entry in ('grant', 'set') and daily_delta + bonus_delta > 0) as granted")
        assert row is not None
        by_model = row["by_model"]  # jsonb: decoded by the pool's codec
        spend: dict[str, Decimal] = {}
        for model_id, _, _, spent, unquoted in by_model:
            spend[model_id] = spend.get(model_id, Decimal(0)) + Decimal(spent) + credit_usd * int(unquoted)
        return MetricTotals(
            jobs={(model_id, state): int(n) for model_id, state, n, _, _ in by_model},
            queue_depth=sum(int(n) for _, state, n, _, _ in by_model if state == "queued"),
            spend_usd=spend, failures={kind: int(n) for kind, n in row["failures"].items()},
            credits_spent=int(row["spent"]), credits_reserved=int(row["reserved"]),
            credits_refunded=int(row["refunded"]), credits_granted=int(row["granted"]))

    async def check_alive(self) -> None:
        await self.db.fetchval("select 1")

