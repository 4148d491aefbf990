"""The figures ``/metrics`` shows, read from a SQLite database (a part of ``SqliteStore``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import sqlite_utils

from bot.store import stats_sql
from bot.store.activity import fold_models, fold_payment_totals
from bot.store.interface import MetricTotals


class SqliteMetrics:
    """``OpsReads`` on SQLite: one read transaction, so the figures agree with each other."""

    db: sqlite_utils.Database
    path: Path

    async def metric_totals(self, *, credit_usd: Decimal = Decimal("0.25")) -> MetricTotals:
        self._still_there()  # a deleted file's figures are stale, not the database's
        # A read inside BEGIN (deferred) sees one snapshot of the WAL; nothing is locked for writers.
        in_transaction = self.db.conn.in_transaction
        if not in_transaction:
            self.db.execute("begin")
        try:
            cursor = self.db.execute(stats_sql.MODELS)
            names = [column[0] for column in cursor.description]
            by_model = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            failures = self.db.execute(
                "select failure, count(*) from jobs where failure is not null group by failure").fetchall()
            spent, reserved, refunded = self.db.execute(
                "select coalesce(sum(case when settlement = 'committed' then cost end), 0),"
                " coalesce(sum(case when settlement = 'reserved' then cost end), 0),"
                " coalesce(sum(case when settlement = 'refunded' then cost end), 0) from jobs").fetchone()
            granted = self.db.execute(
                "select coalesce(sum(daily_delta + bonus_delta), 0) from ledger"
                " where entry in ('grant', 'set') and daily_delta + bonus_delta > 0").fetchone()[0]
            payments = self.db.execute(
                "select platform, count(*), count(refunded_at), coalesce(sum(credits), 0),"
                " coalesce(sum(refunded_credits), 0), coalesce(sum(stars), 0) from payments"
                f" where {stats_sql.CREDITED} group by platform"
            ).fetchall()
        finally:
            if not in_transaction:
                self.db.execute("commit")
        jobs, spend = fold_models(by_model, credit_usd)  # the spend rule once: the caps', /stats'
        return MetricTotals(
            jobs=jobs, queue_depth=sum(count for (_, state), count in jobs.items() if state == "queued"),
            spend_usd=spend, failures={kind: count for kind, count in failures},
            credits_spent=int(spent), credits_reserved=int(reserved), credits_refunded=int(refunded),
            credits_granted=int(granted), **fold_payment_totals(payments))

    async def check_alive(self) -> None:
        self._still_there()
        self.db.execute("select 1").fetchone()

    def _still_there(self) -> None:
        if str(self.path) != ":memory:" and not self.path.exists():
            # The file was deleted or moved: this connection still answers, but what it
            # writes lands in a file no other process (nor a restart) will ever open.
            raise FileNotFoundError(str(self.path))
