"""The operator's controls (``Engine`` inherits them): a pause of the whole bot, bans,
the daily allowance a Discord role or a Telegram chat gives, and an admin's look at a
user's credits.

A pause and the bans live in the store, so every process sharing it obeys them and a
restart keeps them. A process reads them again (two small reads) when what it read is
older than ``ACCESS_CACHE_SECONDS`` by its clock: another process's pause, resume, ban or
unban holds here within that much, and a request costs no extra round trip to the
database meanwhile (an accept stays one statement).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot import messages
from bot.config import Settings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.scheduler import Scheduler
from bot.jobs import Job, Rejected, UserRef
from bot.store import Store

log = logging.getLogger(__name__)

PAUSE_KEY = "pause"  # the ``bot_state`` row of a pause: {"reason", "by", "at"}
ACCESS_CACHE_SECONDS = 2.0
PAUSED_REFUND = messages.PAUSED_REFUND  # the job's error and its refund's ledger note


@dataclass(frozen=True)
class Pause:
    """The bot paused by an admin: why, who (a user key, or "cli"), since when."""

    reason: str
    by: str
    at: float


def daily_allowance(settings: Settings, user: UserRef) -> int:
    """A user's daily credits where they ask from: the highest ``[discord.roles]`` entry
    of their roles, their chat's ``[telegram.chats]`` entry, else ``[quota] daily_credits``."""
    if user.platform == "discord":
        given = [settings.discord.roles[role] for role in user.roles if role in settings.discord.roles]
        if given:
            return max(given)
    elif user.platform == "telegram" and user.chat in settings.telegram.chats:
        return settings.telegram.chats[user.chat]
    return settings.quota.daily_credits


class Controls:
    """Pause and resume, bans, and credit reports for admins."""

    settings: Settings
    store: Store
    credits: Credits
    couriers: Couriers
    scheduler: Scheduler
    clock: Callable[[], float]
    _access_seen: tuple[float, Pause | None, frozenset[str]] | None = None  # when read, the pause, the bans
    _access_changes = 0  # this process's own changes to them: a read begun before one is not kept

    async def _access(self) -> tuple[Pause | None, frozenset[str]]:
        """The pause and the banned user keys, as read at most ``ACCESS_CACHE_SECONDS`` ago."""
        seen = self._access_seen
        if seen is not None and 0 <= self.clock() - seen[0] < ACCESS_CACHE_SECONDS:
            return seen[1], seen[2]
        changes = self._access_changes
        value = await self.store.bot_state(PAUSE_KEY)
        pause = Pause(str(value.get("reason") or ""), str(value.get("by") or ""), float(value.get("at") or 0)) \
            if value is not None else None
        banned = frozenset(row["user_key"] for row in await self.store.bans())
        if changes == self._access_changes:
            self._access_seen = (self.clock(), pause, banned)
        return pause, banned

    def _access_changed(self) -> None:
        """This process paused, resumed, banned or unbanned: it holds here from the next request."""
        self._access_changes += 1
        self._access_seen = None

    # --- pause ------------------------------------------------------------------------

    async def paused(self) -> Pause | None:
        """The pause in force (as read at most ``ACCESS_CACHE_SECONDS`` ago), or None."""
        return (await self._access())[0]

    async def is_paused(self) -> bool:
        return await self.paused() is not None

    async def pause(self, reason: str, by: str, *, refund: bool = False) -> list[Job]:
        """Pause the bot for every process: new requests are refused with ``reason``,
        queued jobs wait (running ones finish); with ``refund``, every queued job not yet
        sent to WaveSpeed is cancelled and refunded, its owner told. The jobs refunded."""
        pause = Pause(reason.strip(), by, self.clock())
        await self.store.set_bot_state(PAUSE_KEY, {"reason": pause.reason, "by": by, "at": pause.at}, pause.at)
        self._access_changed()
        log.warning("paused by %s%s", by, f": {pause.reason}" if pause.reason else "")
        return await self._refund_queued(pause) if refund else []

    async def resume(self, by: str) -> bool:
        """Lift the pause; False when the bot was not paused."""
        was = await self.store.bot_state(PAUSE_KEY)
        await self.store.set_bot_state(PAUSE_KEY, None, self.clock())
        self._access_changed()
        self.scheduler.wake()
        if was is not None:
            log.warning("resumed by %s", by)
        return was is not None

    async def _refund_queued(self, pause: Pause) -> list[Job]:
        """Cancel and refund each queued job, one at a time, each only while still queued
        (a job a process claims meanwhile runs and is charged as any)."""
        refunded: list[Job] = []
        for job_id in await self.store.queued_job_ids():
            async with self.store.transaction():
                job = await self.store.cancel_queued(job_id, finished_at=self.clock(), error=PAUSED_REFUND,
                                                     failure="cancelled")
                if job is None:
                    continue
                await self.credits.refund(job, PAUSED_REFUND)
                await self.store.files.drop(job_id)
            log.info("job %s refunded: the bot was paused", job_id)
            refunded.append(job)
            await self.couriers.fail(job, messages.paused_refunded(job.cost, pause.reason))
        return refunded

    # --- bans -------------------------------------------------------------------------

    async def ban(self, user_key: str, by: str, reason: str = "") -> bool:
        """Ban a user (``platform:id``) on every process; False when already banned."""
        fresh = await self.store.ban(user_key, at=self.clock(), by=by, reason=reason.strip())
        self._access_changed()
        return fresh

    async def unban(self, user_key: str) -> bool:
        """Lift a ban; False when there was none."""
        was = await self.store.unban(user_key)
        self._access_changed()
        return was

    async def banned(self, user_key: str) -> bool:
        """Whether the user is banned, as the database says now."""
        return await self.store.ban_of(user_key) is not None

    async def bans(self) -> list[tuple[str, str, str]]:
        """Every ban: (user key, by, reason), oldest first."""
        return [(row["user_key"], row["by"] or "", row["reason"] or "") for row in await self.store.bans()]

    async def access_refusal(self, user: UserRef) -> Rejected | None:
        """Why nothing may start for this user now (banned; the bot paused), before any cost."""
        pause, banned = await self._access()
        if user.key in banned:
            return Rejected(messages.BANNED)
        if pause is not None:
            return Rejected(messages.paused(pause.reason))
        return None

    # --- credits, for admins ----------------------------------------------------------

    async def credits_report(self, user: UserRef, who: str) -> str:
        """/credits show: what ``user`` has (purchased credits besides), their daily allowance,
        whether they are banned."""
        balance = await self.credits.balance(user)
        daily = self.settings.quota.daily_credits if balance.allowance is None else balance.allowance
        return messages.credits_of(who, balance.total, balance.bonus, daily,
                                   await self.banned(user.key), purchased=balance.purchased)
