"""What the bot did in a span of days, as ``Store.daily_stats`` gives it (for /stats), and
the spend rule every figure of money follows (/stats, and ``Store.metric_totals`` for /metrics).

Both backends run the same grouped queries (``bot.store.sqlite_stats``,
``bot.store.pg_stats``) and fold their rows here, so the figures are the same whichever
database holds them. Money is folded in Python from rows grouped by the job's quote and
charge: SQLite keeps them as decimal text, and summing them in SQL would make them floats.

A job's spend (what it cost at WaveSpeed) is the one rule the caps count by
(``bot.store.interface.SPEND_OF_JOB``, and an unquoted job's credits at ``credit_usd``:
``UNQUOTED_CREDITS_OF_JOB``), so /stats, /metrics and the caps agree. A job's outcome is one of ``OUTCOMES``
by its state; ``refunded`` counts, besides, the jobs whose credits went back.

Payments (#18) count by day too: a purchase on the day it was credited, a refund on the day
it was made (so a refund of yesterday's purchase counts today).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.jobs import ACTIVE_STATES, JobState
from bot.store.interface import exact

DAY = 86400
OUTCOMES = ("delivered", "failed", "cancelled", "running")
REFUNDED = "refunded"  # a count beside the outcomes: jobs whose credits were given back
_OUTCOME_OF = {JobState.DONE.value: "delivered", JobState.FAILED.value: "failed",
               JobState.CANCELLED.value: "cancelled", **{s.value: "running" for s in ACTIVE_STATES}}
ACTIVE = tuple(s.value for s in ACTIVE_STATES)


@dataclass(frozen=True)
class PaymentCounts:
    """Purchases (#18) made in a span, and refunds made in it (of purchases made whenever)."""

    purchases: int = 0
    telegram: int = 0  # of the purchases: paid in Telegram Stars
    discord: int = 0  # of the purchases: Discord consumables
    credits: int = 0  # credits purchased
    stars: int = 0  # Telegram Stars received
    refunds: int = 0
    taken_back: int = 0  # purchased credits the refunds removed
    short: int = 0  # credits of refunded purchases already spent: not taken back

    def __add__(self, other: PaymentCounts) -> PaymentCounts:
        return PaymentCounts(*(getattr(self, name.name) + getattr(other, name.name) for name in fields(self)))

    def as_json(self) -> dict[str, int]:
        return {name.name: getattr(self, name.name) for name in fields(self)}


@dataclass(frozen=True)
class DayActivity:
    """One credit period (a day from ``[quota] reset_hour_utc``)."""

    day: str  # the date the period started on (ISO), as ``Credits.period`` labels it
    jobs: dict[str, int]  # OUTCOMES and REFUNDED -> jobs created that day
    spend_usd: Decimal
    credits: int  # credits spent (reservations not refunded)
    payments: PaymentCounts = field(default_factory=PaymentCounts)  # purchases and refunds made that day

    @property
    def total(self) -> int:
        return sum(self.jobs[name] for name in OUTCOMES)


@dataclass(frozen=True)
class Spender:
    """A user or a place (a server, a chat) among the busiest of a span."""

    key: str  # the user key ("telegram:1001") or the place key ("discord:guild:1")
    name: str  # the user's name as last seen ("" for a place, or unknown)
    jobs: int
    spend_usd: Decimal


@dataclass(frozen=True)
class Activity:
    """``Store.daily_stats``: every day of the span, oldest first (empty days too), the
    busiest users and places of the span, its failures by kind, and the queue now."""

    days: tuple[DayActivity, ...]
    top_users: tuple[Spender, ...]
    top_places: tuple[Spender, ...]
    failures: dict[str, int]  # ``bot.jobs.FAILURE_KINDS`` -> jobs (only kinds that happened)
    queued: int  # jobs waiting now (whenever they were made)
    running: int  # jobs started and not ended now


def day_index(moment: float, reset_hour_utc: int) -> int:
    """The credit period a moment falls in, as days since 1970-01-01 (what the queries group by)."""
    return int((moment - reset_hour_utc * 3600) // DAY)


def _label(index: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=index)).date().isoformat()


def spend_of(row: Mapping[str, Any], credit_usd: Decimal) -> Decimal:
    """The spend of a row of jobs grouped by their spend (``usd``, ``jobs``, ``unquoted``)."""
    return int(row["jobs"]) * (exact(row["usd"]) or Decimal(0)) + credit_usd * int(row["unquoted"] or 0)


def fold_days(rows: Iterable[Mapping[str, Any]], since: float, until: float,
              reset_hour_utc: int, credit_usd: Decimal,
              payments: Iterable[Mapping[str, Any]] = ()) -> tuple[DayActivity, ...]:
    """Rows of (day, state, refunded, usd, unquoted, jobs, credits) into every day of the span,
    with ``stats_sql.PAYMENTS``' rows (day, platform, purchases, credits, stars, refunds,
    taken_back, short) as each day's payments."""
    first, last = day_index(since, reset_hour_utc), day_index(until - 1e-6, reset_hour_utc)
    counts = {i: dict.fromkeys((*OUTCOMES, REFUNDED), 0) for i in range(first, last + 1)}
    spend = {i: Decimal(0) for i in counts}
    spent = dict.fromkeys(counts, 0)
    for row in rows:
        index, jobs = int(row["day"]), int(row["jobs"])
        if index not in counts:
            continue
        counts[index][_OUTCOME_OF.get(row["state"], "failed")] += jobs
        if row["refunded"]:
            counts[index][REFUNDED] += jobs
        else:
            spent[index] += int(row["credits"] or 0)
        spend[index] += spend_of(row, credit_usd)
    paid = {i: PaymentCounts() for i in counts}
    for row in payments:
        index = int(row["day"])
        if index in paid:
            paid[index] += _payment_counts(row)
    return tuple(DayActivity(_label(i), counts[i], spend[i], spent[i], paid[i]) for i in sorted(counts))


def _payment_counts(row: Mapping[str, Any]) -> PaymentCounts:
    purchases = int(row["purchases"] or 0)
    return PaymentCounts(
        purchases=purchases, telegram=purchases if row["platform"] == "telegram" else 0,
        discord=purchases if row["platform"] == "discord" else 0, credits=int(row["credits"] or 0),
        stars=int(row["stars"] or 0), refunds=int(row["refunds"] or 0),
        taken_back=int(row["taken_back"] or 0), short=int(row["short"] or 0))


def fold_spenders(rows: Iterable[Mapping[str, Any]], names: Mapping[str, str], top: int,
                  credit_usd: Decimal) -> tuple[Spender, ...]:
    """Rows of (key, usd, unquoted, jobs) into the ``top`` busiest keys:
    most jobs first, then most spend, then by key (a stable order)."""
    jobs: dict[str, int] = {}
    spend: dict[str, Decimal] = {}
    for row in rows:
        key, count = str(row["key"]), int(row["jobs"])
        jobs[key] = jobs.get(key, 0) + count
        spend[key] = spend.get(key, Decimal(0)) + spend_of(row, credit_usd)
    ranked = sorted(jobs, key=lambda key: (-jobs[key], -spend[key], key))[:top]
    return tuple(Spender(key, names.get(key) or "", jobs[key], spend[key]) for key in ranked)


def fold_models(rows: Iterable[Mapping[str, Any]], credit_usd: Decimal
                ) -> tuple[dict[tuple[str, str], int], dict[str, Decimal]]:
    """Rows of (model_id, state, usd, unquoted, jobs) into jobs by (model, state) and
    spend by model (``/metrics``: the same rule as /stats' and the caps')."""
    jobs: dict[tuple[str, str], int] = {}
    spend: dict[str, Decimal] = {}
    for row in rows:
        model, count = str(row["model_id"]), int(row["jobs"])
        jobs[model, str(row["state"])] = jobs.get((model, str(row["state"])), 0) + count
        spend[model] = spend.get(model, Decimal(0)) + spend_of(row, credit_usd)
    return jobs, spend


def fold_failures(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows of (kind, jobs) into kind -> jobs, most first."""
    found = {str(row["kind"]): int(row["jobs"]) for row in rows}
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def fold_now(rows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """Rows of (state, jobs) of the active jobs into (queued, running)."""
    queued = running = 0
    for row in rows:
        if row["state"] == JobState.QUEUED.value:
            queued += int(row["jobs"])
        else:
            running += int(row["jobs"])
    return queued, running


def fold_payment_totals(rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Rows of (platform, payments, refunded, credits, taken back, stars) as ``MetricTotals``'
    payment fields (``/metrics``)."""
    rows = list(rows)
    return {"payments": {str(row[0]): int(row[1]) for row in rows},
            "payment_refunds": {str(row[0]): int(row[2]) for row in rows},
            "credits_purchased": sum(int(row[3]) for row in rows),
            "credits_taken_back": sum(int(row[4]) for row in rows),
            "stars_received": sum(int(row[5]) for row in rows)}
