"""The figures ``/metrics`` shows, read from a PostgreSQL database (a part of ``PostgresStore``)."""

from __future__ import annotations

from decimal import Decimal

from bot.store import stats_sql
from bot.store.activity import fold_models, fold_payment_totals
from bot.store.interface import MetricTotals
from bot.store.pg_session import Connections


class PgMetrics:
    """``OpsReads`` on PostgreSQL: one statement, so the figures agree with each other."""

    db: Connections

    async def metric_totals(self, *, credit_usd: Decimal = Decimal("0.25")) -> MetricTotals:
        row = await self.db.fetchrow(
            "select"
            # money as text: the pool's jsonb codec would read numbers as floats
            " (select coalesce(jsonb_agg(jsonb_build_object('model_id', model_id, 'state', state,"
            "   'usd', usd::text, 'unquoted', unquoted,"
            f"   'jobs', jobs)), '[]'::jsonb) from ({stats_sql.MODELS}) as m) as by_model,"
            " (select coalesce(jsonb_object_agg(failure, n), '{}'::jsonb) from"
            "   (select failure, count(*) as n from jobs where failure is not null group by failure) as f) as failures,"
            " (select coalesce(sum(cost) filter (where settlement = 'committed'), 0)::bigint from jobs) as spent,"
            " (select coalesce(sum(cost) filter (where settlement = 'reserved'), 0)::bigint from jobs) as reserved,"
            " (select coalesce(sum(cost) filter (where settlement = 'refunded'), 0)::bigint from jobs) as refunded,"
            " (select coalesce(sum(daily_delta + bonus_delta), 0)::bigint from ledger"
            "   where entry in ('grant', 'set') and daily_delta + bonus_delta > 0) as granted,"
            " (select coalesce(jsonb_agg(jsonb_build_array(platform, n, refunded, credits, taken_back, stars)),"
            "   '[]'::jsonb) from (select platform, count(*) as n, count(refunded_at) as refunded,"
            "   coalesce(sum(credits), 0) as credits, coalesce(sum(refunded_credits), 0) as taken_back,"
            f"   coalesce(sum(stars), 0) as stars from payments where {stats_sql.CREDITED} group by platform) as p)"
            " as payments")
        assert row is not None
        # jsonb, decoded by the pool's codec; the spend rule once (the caps', /stats')
        jobs, spend = fold_models(row["by_model"], credit_usd)
        return MetricTotals(
            jobs=jobs, queue_depth=sum(count for (_, state), count in jobs.items() if state == "queued"),
            spend_usd=spend, failures={kind: int(n) for kind, n in row["failures"].items()},
            credits_spent=int(row["spent"]), credits_reserved=int(row["reserved"]),
            credits_refunded=int(row["refunded"]), credits_granted=int(row["granted"]),
            **fold_payment_totals(row["payments"]))

    async def check_alive(self) -> None:
        await self.db.fetchval("select 1")

