"""The figures ``/metrics`` shows, read from a SQLite database (a part of ``SqliteStore``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import sqlite_utils

from bot.store.interface import SPEND_OF_JOB, UNQUOTED_CREDITS_OF_JOB, MetricTotals

MICRO = 1_000_000  # money is summed in millionths of a dollar: exact, where text summed as REAL is not

# The spend rule the caps count by (``SPEND_OF_JOB``; an unquoted job's credits apart).
_SPENT_MICRO = f"cast(round(cast(coalesce({SPEND_OF_JOB}, '0') as real) * {MICRO}) as integer)"


class SqliteMetrics:
    """``OpsReads`` on SQLite: one read transaction, so the figures agree with each other."""

    db: sqlite_utils.Database
    path: Path

    async def metric_totals(self, *, credit_usd: Decimal = Decimal("0.25")) -> MetricTotals:
        # A read inside BEGIN (deferred) sees one snapshot of the WAL; nothing is locked for writers.
        in_transaction = self.db.conn.in_transaction
        if not in_transaction:
            self.db.execute("begin")
        try:
            by_model = self.db.execute(
                f"select model_id, state, count(*), sum({_SPENT_MICRO}), sum({UNQUOTED_CREDITS_OF_JOB})"
                " from jobs group by model_id, state").fetchall()
            failures = self.db.execute(
                "select failure, count(*) from jobs where failure is not null group by failure").fetchall()
            spent, reserved, refunded = self.db.execute(
                "select coalesce(sum(case when settlement = 'committed' then cost end), 0),"
                " coalesce(sum(case when settlement = 'reserved' then cost end), 0),"
                " coalesce(sum(case when settlement = 'refunded' then cost end), 0) from jobs").fetchone()
            granted = self.db.execute(
                "select coalesce(sum(daily_delta + bonus_delta), 0) from ledger"
                " where entry in ('grant', 'set') and daily_delta + bonus_delta > 0").fetchone()[0]
        finally:
            if not in_transaction:
                self.db.execute("commit")
        spend: dict[str, Decimal] = {}
        for model_id, _, _, micro, unquoted in by_model:
            spend[model_id] = (spend.get(model_id, Decimal(0)) + Decimal(micro or 0) / MICRO
                               + credit_usd * int(unquoted or 0))
        return MetricTotals(
            jobs={(model_id, state): count for model_id, state, count, _, _ in by_model},
            queue_depth=sum(count for _, state, count, _, _ in by_model if state == "queued"),
            spend_usd=spend, failures={kind: count for kind, count in failures},
            credits_spent=int(spent), credits_reserved=int(reserved), credits_refunded=int(refunded),
            credits_granted=int(granted))

    async def check_alive(self) -> None:
        if str(self.path) != ":memory:" and not self.path.exists():
            # The file was deleted or moved: this connection still answers, but what it
            # writes lands in a file no other process (nor a restart) will ever open.
            raise FileNotFoundError(str(self.path))
        self.db.execute("select 1").fetchone()
