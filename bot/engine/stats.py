"""What the bot did, for its admins: ``Engine.stats`` (/stats, ``kling-bot stats``) and
``Engine.wavespeed_balance`` (/balance).

Read-only, from the store that every process shares, so any process answers the same.
Days are credit periods (from ``[quota] reset_hour_utc``), as the credits count them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bot import messages
from bot.config import Settings
from bot.credits import Credits
from bot.stats_chart import ChartDay, draw_chart
from bot.store import Store
from bot.store.activity import OUTCOMES, REFUNDED, Activity, DayActivity, Spender
from bot.wavespeed import AuthError, WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

CHART_DAYS = 14  # days the /stats chart shows
WEEK = 7  # the longer span /stats shows beside today
MAX_DAYS = 366  # the longest span ``kling-bot stats --days`` reads
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
                   activity.failures)

    def as_json(self) -> dict[str, Any]:
        return {"days": self.days, "since": _iso(self.since), "jobs": {"total": self.total, **self.jobs},
                "spend_usd": str(self.spend_usd), "credits": self.credits,
                "top_users": [_spender(s) for s in self.top_users],
                "top_places": [_spender(s) for s in self.top_places], "failures": dict(self.failures)}


@dataclass(frozen=True)
class Stats:
    """Today, the last ``window.days`` days, each of the last ``max(days, 14)`` days, the queue now."""

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
                           "spend_usd": str(day.spend_usd), "credits": day.credits} for day in self.daily]}


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
        today = (datetime.fromisoformat(self.credits.period(now)).replace(tzinfo=UTC)
                 + timedelta(hours=reset)).timestamp()
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
