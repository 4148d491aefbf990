"""What the bot did, for its admins: ``Engine.stats`` (/stats, ``kling-bot stats``) and
``Engine.wavespeed_balance`` (/balance).

Read-only, from the store that every process shares, so any process answers the same.
Days are credit periods (from ``[quota] reset_hour_utc``), as the credits count them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot import messages
from bot.config import Settings
from bot.credits import Credits
from bot.stats_chart import ChartDay, draw_chart
from bot.store import Store
from bot.store.activity import OUTCOMES, REFUNDED, Activity, DayActivity, PaymentCounts, Spender
from bot.wavespeed import AuthError, WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

CHART_DAYS = 14  # days the /stats chart shows
WEEK = 7  # the longer span /stats shows beside today
MAX_DAYS = 366  # the longest span ``kling-bot stats --days`` reads
PAYMENT_DAYS = 30  # the span ``kling-bot payments list`` shows unless told
TOP = 5  # users and places listed
BALANCE_WAIT = 20.0  # seconds /balance waits for WaveSpeed (retries included)


@dataclass(frozen=True)
class Window:
    """A span of days: its jobs by outcome, spend, credits, busiest users and places, failures."""

    days: int
    since: float  # when its first day started (a timestamp)
    jobs: dict[str, int]  # OUTCOMES and REFUNDED -> jobs
    spend_usd: Decimal
    credits: int
    top_users: tuple[Spender, ...]
    top_places: tuple[Spender, ...]
    failures: dict[str, int]
    payments: PaymentCounts = field(default_factory=PaymentCounts)  # purchases and refunds made in the span

    @property
    def total(self) -> int:
        return sum(self.jobs[name] for name in OUTCOMES)

    @classmethod
    def of(cls, since: float, counted: tuple[DayActivity, ...], activity: Activity) -> Window:
        """The span of the days ``counted`` (their jobs, spend, credits), with the busiest
        users and places and the failures ``activity`` read for it."""
        jobs = {name: sum(day.jobs[name] for day in counted) for name in (*OUTCOMES, REFUNDED)}
        return cls(len(counted), since, jobs, sum((day.spend_usd for day in counted), Decimal(0)),
                   sum(day.credits for day in counted), activity.top_users, activity.top_places,
                   activity.failures, sum((day.payments for day in counted), PaymentCounts()))

    def as_json(self) -> dict[str, Any]:
        return {"days": self.days, "since": _iso(self.since), "jobs": {"total": self.total, **self.jobs},
                "spend_usd": str(self.spend_usd), "credits": self.credits,
                "top_users": [_spender(s) for s in self.top_users],
                "top_places": [_spender(s) for s in self.top_places], "failures": dict(self.failures),
                "payments": self.payments.as_json()}


@dataclass(frozen=True)
class Stats:
    """Today, the last ``window.days`` days, each of the last ``max(days, 14)`` days (with its
    payments), the queue now."""

    at: float
    today: Window
    window: Window
    daily: tuple[DayActivity, ...]  # oldest first; the chart shows the last CHART_DAYS
    queued: int
    running: int

    def text(self) -> str:
        return messages.stats_text(self)

    def chart_png(self) -> bytes:
        """The chart of the last 14 days: jobs (bars) and spend (line)."""
        return draw_chart([ChartDay(day.day[5:], day.total, day.jobs["delivered"], day.spend_usd)
                           for day in self.daily[-CHART_DAYS:]])

    def as_json(self) -> dict[str, Any]:
        """Every figure as JSON values (money as decimal strings, never floats)."""
        return {"at": _iso(self.at), "queued": self.queued, "running": self.running,
                "today": self.today.as_json(), "window": self.window.as_json(),
                "daily": [{"day": day.day, "jobs": {"total": day.total, **day.jobs},
                           "spend_usd": str(day.spend_usd), "credits": day.credits} for day in self.daily],
                "payments": [{"day": day.day, **day.payments.as_json()} for day in self.daily]}


@dataclass(frozen=True)
class PaymentLine:
    """One payment as an admin looks it up (to find a charge to /refund)."""

    key: str  # "telegram:<charge id>" / "discord:<entitlement id>": what /refund takes
    platform: str
    user_key: str
    pack: str
    credits: int
    stars: int | None
    sku_id: str | None
    at: float
    refunded_at: float | None
    taken_back: int  # credits the refund removed (0 when not refunded)
    short: int  # credits of it already spent when refunded, not taken back
    refunded_by: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> PaymentLine:
        return cls(str(row["key"]), str(row["platform"]), str(row["user_key"]), str(row["pack"]),
                   int(row["credits"]), None if row["stars"] is None else int(row["stars"]),
                   row["sku_id"] or None, float(row["at"]),
                   None if row["refunded_at"] is None else float(row["refunded_at"]),
                   int(row["refunded_credits"] or 0), int(row["refund_short"] or 0), row["refunded_by"] or "")

    def text(self) -> str:
        return messages.payment_line(self)

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "platform": self.platform, "user": self.user_key, "pack": self.pack,
                "credits": self.credits, "stars": self.stars, "sku_id": self.sku_id, "at": _iso(self.at),
                "refunded_at": None if self.refunded_at is None else _iso(self.refunded_at),
                "taken_back": self.taken_back, "short": self.short, "refunded_by": self.refunded_by or None}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


def _spender(spender: Spender) -> dict[str, Any]:
    return {"key": spender.key, "name": spender.name, "jobs": spender.jobs, "spend_usd": str(spender.spend_usd)}


class AdminFigures:
    """/stats and /balance; ``Engine`` inherits these."""

    settings: Settings
    store: Store
    credits: Credits
    client: WaveSpeedClient
    clock: Callable[[], float]

    async def stats(self, days: int = WEEK) -> Stats:
        """Today and the last ``days`` days (1 to 366), with each day of the last ``max(days, 14)``."""
        days = max(1, min(int(days), MAX_DAYS))
        now = self.clock()
        reset = self.settings.quota.reset_hour_utc
        today = self._period_start(now)
        until = today + 86400

        figures: dict[str, Any] = {"top": TOP, "credit_usd": self.settings.quota.credit_usd}

        def since(n: int) -> float:
            return today - (n - 1) * 86400

        daily = await self.store.daily_stats(since(max(days, CHART_DAYS)), until, reset, **figures)
        window = await self.store.daily_stats(since(days), until, reset, **figures)
        now_day = await self.store.daily_stats(today, until, reset, **figures)
        # Every count comes from the one read of the days: jobs another process adds between
        # the reads must not make today's figures exceed the week's.
        return Stats(now, Window.of(today, daily.days[-1:], now_day),
                     Window.of(since(days), daily.days[-days:], window), daily.days,
                     daily.queued, daily.running)

    async def payments_list(self, days: int = PAYMENT_DAYS, user_key: str | None = None) -> list[PaymentLine]:
        """The payments credited in the last ``days`` days (1 to 366: today's credit period and the
        days before it), of ``user_key`` or everyone's, newest first (``kling-bot payments list``)."""
        days = max(1, min(int(days), MAX_DAYS))
        rows = await self.store.payments_since(self._period_start(self.clock()) - (days - 1) * 86400, user_key)
        return [PaymentLine.of(row) for row in rows]

    def _period_start(self, now: float) -> float:
        """When the credit period (the day of the figures) ``now`` falls in started."""
        return (datetime.fromisoformat(self.credits.period(now)).replace(tzinfo=UTC)
                + timedelta(hours=self.settings.quota.reset_hour_utc)).timestamp()

    async def wavespeed_balance(self) -> str:
        """WaveSpeed's balance as one line for an admin (a refused key or no answer said plainly)."""
        try:
            usd = await asyncio.wait_for(self.client.balance(), BALANCE_WAIT)
        except AuthError:
            return messages.BALANCE_BAD_KEY
        except (WaveSpeedError, TimeoutError) as err:
            log.warning("balance: %s", err)
            return messages.BALANCE_UNAVAILABLE
        return messages.balance_text(usd)
