"""What the bot spends at WaveSpeed, and the rules before any spending.

* ``place_key_of``: the Discord server or Telegram chat a job's spend counts to.
* ``PromptRules``: ``[moderation]`` blocked words and patterns, checked before any cost.
* ``SpendCaps``: ``[spend]`` caps in USD (whole bot per day and per month, each place per
  day). A job counts from its accept (its quote), then what WaveSpeed charged
  (``Store.spend_usd`` says how); a request that would cross a cap is refused. The
  authoritative check runs inside the accept's write, under the store's spend lock, so
  parallel accepts in any number of processes never overshoot. Admins hear once per cap,
  period and level when 80% and 100% of a cap is used (``Store.claim_alert``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import regex

from bot import messages
from bot.config import ModerationSettings, QuotaSettings, SpendSettings
from bot.store import Store

if TYPE_CHECKING:
    from bot.engine.prices import Price

log = logging.getLogger(__name__)

CLAIMED_KEPT = 4096  # alert keys a process remembers as claimed
ALERT_LEVELS = (80, 100)  # percent of a cap at which the admins are told, once each
ALERT_SECONDS = 30.0  # an admin alert that hangs (a chat that never answers) is given up
SETTLE_SECONDS = 5.0  # a stop waits this long for alerts under way: well inside a lease
# A prompt is checked against every rule within this: a pattern that backtracks without end
# on the text a user chose stops here (and the prompt is refused) instead of freezing the bot.
RULES_SECONDS = 0.5
LATIN_END = 0x250  # past Latin Extended-B: letters whose marks a blocked word ignores
T = TypeVar("T")


def place_key_of(platform: str, reply_to: Mapping[str, Any]) -> str:
    """The place a job's spend counts to: ``discord:guild:<id>`` (a DM: ``discord:dm:<user
    id>``), ``telegram:chat:<id>``; "" for the console and the command line (no place)."""
    if platform == "discord":
        if reply_to.get("guild_id"):
            return f"discord:guild:{reply_to['guild_id']}"
        user = reply_to.get("user_id") or reply_to.get("dm_user_id")
        return f"discord:dm:{user}" if user else ""
    if platform == "telegram" and reply_to.get("chat_id") is not None:
        return f"telegram:chat:{reply_to['chat_id']}"
    return ""


def plain_text(text: str) -> str:
    """A prompt as a reader sees it: compatibility forms folded (full-width "ｎａｋｅｄ" is
    "naked"), invisible format characters (zero-width spaces and joiners, soft hyphens)
    dropped, and marks on Latin letters too (struck-through "n̶a̶k̶e̶d̶", "nakéd"), so a
    blocked word cannot hide behind them. (Marks of other scripts stay: there they make
    the word.)"""
    kept: list[str] = []
    for char in unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text)):
        kind = unicodedata.category(char)
        if kind == "Cf" or (kind == "Mn" and kept and ord(kept[-1]) < LATIN_END):
            continue
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


class PromptRules:
    """``[moderation]``: whether a prompt uses a blocked word or matches a blocked pattern.

    The operator's patterns run on text a user chose, so they run with the ``regex`` engine
    (same syntax as ``re``): off the event loop, the GIL released, and within
    ``RULES_SECONDS``; a check that takes longer refuses the prompt."""

    def __init__(self, settings: ModerationSettings):
        words = [re.escape(plain_text(word.strip()).casefold()) for word in settings.blocked_words if word.strip()]
        # Whole words: "ass" blocks "ass" and "ASS!", not "class".
        self._words = regex.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)", regex.IGNORECASE | regex.V0) \
            if words else None
        self._patterns = [regex.compile(pattern, regex.IGNORECASE | regex.V0) for pattern in settings.blocked_patterns]

    async def blocked(self, texts: Iterable[str | None]) -> bool:
        """Whether any of the texts (a prompt, a negative prompt) breaks a rule."""
        chosen = [text for text in texts if text]
        if not chosen or (self._words is None and not self._patterns):
            return False
        return await asyncio.to_thread(self._blocked, chosen)

    def _blocked(self, texts: list[str]) -> bool:
        deadline = time.monotonic() + RULES_SECONDS
        try:
            for text in texts:
                plain = plain_text(text)
                # Patterns see the text as typed too: an operator's own "pornô" matches "pornô".
                seen_by_patterns = (plain,) if plain == text else (plain, text)
                for rule, seen in ((self._words, plain.casefold()),
                                   *((p, seen) for p in self._patterns for seen in seen_by_patterns)):
                    if rule is not None and rule.search(seen, concurrent=True,
                                                        timeout=max(0.001, deadline - time.monotonic())):
                        return True
        except TimeoutError:
            log.warning("a prompt took over %ss to check against [moderation]: refused", RULES_SECONDS)
            return True
        return False


class SpendCapReached(Exception):
    """A request would cross a ``[spend]`` cap; str() is user-facing."""


@dataclass(frozen=True)
class Cap:
    """One cap as it applies now: its kind, limit, period and (per place) its place."""

    kind: str  # "daily", "daily_place" or "monthly" (``messages.SPEND_CAP_LABELS``)
    limit: Decimal
    since: datetime
    resets_at: datetime
    place_key: str | None = None  # None: the whole bot

    @property
    def period(self) -> str:
        return self.since.strftime("%Y-%m-%dT%H")


class SpendCaps:
    """The ``[spend]`` caps: checked at accept, alerts sent after."""

    def __init__(self, settings: SpendSettings, quota: QuotaSettings, store: Store,
                 alert: Callable[[str], Awaitable[None]], clock: Callable[[], float]):
        self.settings = settings
        self.quota = quota
        self.store = store
        self.alert = alert  # tells every admin (each courier's ``alert_admins``)
        self.clock = clock
        self._alerting: set[asyncio.Task[None]] = set()
        # Alert keys this process has seen claimed (by itself or another): a flood of refused
        # requests must not make a database write each to learn the alert was already sent.
        self._claimed: set[str] = set()

    @property
    def configured(self) -> bool:
        s = self.settings
        return any(cap is not None for cap in (s.daily_usd, s.daily_usd_per_place, s.monthly_usd))

    def counted(self, price: Price) -> Decimal:
        """What a job of this price counts to the caps: its quote, else its credits' worth."""
        return price.usd if price.usd is not None else self.quota.credit_usd * price.credits

    def caps(self, place_key: str, at: float | None = None) -> list[Cap]:
        """The caps that apply to a job of this place made ``at`` (default: now)."""
        now = datetime.fromtimestamp(self.clock() if at is None else at, UTC)
        day = (now - timedelta(hours=self.quota.reset_hour_utc)).replace(hour=0, minute=0, second=0, microsecond=0)
        day += timedelta(hours=self.quota.reset_hour_utc)
        month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        next_month = (month + timedelta(days=32)).replace(day=1)
        s, found = self.settings, []
        if s.daily_usd is not None:
            found.append(Cap("daily", s.daily_usd, day, day + timedelta(days=1)))
        if s.daily_usd_per_place is not None and place_key:
            found.append(Cap("daily_place", s.daily_usd_per_place, day, day + timedelta(days=1), place_key))
        if s.monthly_usd is not None:
            found.append(Cap("monthly", s.monthly_usd, month, next_month))
        return found

    async def spent(self, cap: Cap) -> Decimal:
        return await self.store.spend_usd(cap.since.timestamp(), cap.place_key, credit_usd=self.quota.credit_usd)

    async def check(self, place_key: str, usd: Decimal, at: float | None = None) -> list[tuple[Cap, Decimal]]:
        """Raise SpendCapReached when a job of ``usd`` made ``at`` (default: now) would cross
        a cap of its place; else each cap with what was spent against it before this job."""
        standing = []
        for cap in self.caps(place_key, at):
            spent = await self.spent(cap)
            if spent + usd > cap.limit:
                log.warning("spend cap %s%s reached: %s spent of %s; a request of %s refused", cap.kind,
                            f" of {cap.place_key}" if cap.place_key else "", spent, cap.limit, usd)
                self.alert_later(cap, 100, spent)  # reached for this request: the admins hear it
                raise SpendCapReached(messages.spend_cap_reached(cap.kind, cap.limit - spent, cap.resets_at))
            standing.append((cap, spent))
        return standing

    async def within(self, place_key: str, usd: Decimal, reserve: Callable[[], Awaitable[T]],
                     at: float | None = None) -> T:
        """``reserve()`` (the accept's write of a job created ``at``) only if a job of ``usd``
        crosses no cap: read and write in one transaction under the spend lock, so no other
        accept, in any process, reads the spend in between. The caps are those of the
        period the job counts to (its ``created_at``), however long it waited for the lock:
        one made before a reset and written after it still counts to the day it was made.
        Without caps, ``reserve()`` as it is. Once written, the admins hear of each mark
        (80%, 100%) this job took a cap to."""
        if not self.configured:
            return await reserve()
        async with self.store.transaction():
            await self.store.lock_spend()
            standing = await self.check(place_key, usd, at)
            reserved = await reserve()
        for cap, spent in standing:  # committed now
            for level in self.levels_told(cap, spent, spent + usd):
                self.alert_later(cap, level, spent + usd)
        return reserved

    @staticmethod
    def levels_told(cap: Cap, before: Decimal, after: Decimal) -> list[int]:
        """The marks a job taking ``cap`` from ``before`` to ``after`` tells the admins of:
        each one it crossed, and the highest one reached (a cap set above what was already
        spent). Not a lower mark crossed by an earlier job: that job's alert says it, with
        the amount of its own moment, even when this one's claim would come first."""
        reached = [level for level in ALERT_LEVELS if after * 100 >= cap.limit * level]
        crossed = [level for level in reached if before * 100 < cap.limit * level]
        return sorted(set(crossed) | set(reached[-1:]))

    def alert_later(self, cap: Cap, level: int, spent: Decimal) -> None:
        self._in_background(self._alert(cap, level, spent))

    async def _alert(self, cap: Cap, level: int, spent: Decimal) -> None:
        """Tell the admins that ``cap`` is ``level``% used, unless someone (any process) did."""
        key = f"spend:{cap.kind}:{cap.place_key or '*'}:{cap.period}:{level}"
        if key in self._claimed:
            return
        async with self.store.transaction():
            first = await self.store.claim_alert(key, self.clock())
        if len(self._claimed) >= CLAIMED_KEPT:
            self._claimed.clear()  # past periods' keys: at worst one more claim each, which the store refuses
        self._claimed.add(key)
        if not first:
            return
        text = messages.spend_alert(cap.kind, level, spent, cap.limit, cap.resets_at, cap.place_key or "")
        log.warning("%s", text)
        async with asyncio.timeout(ALERT_SECONDS):
            await self.alert(text)

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(self._quietly(work))
        self._alerting.add(task)
        task.add_done_callback(self._alerting.discard)

    @staticmethod
    async def _quietly(work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as err:  # an alert is never worth a failed request
            log.warning("spend alert not sent (%s: %s)", type(err).__name__, err)

    async def settle(self, within: float = SETTLE_SECONDS) -> None:
        """Let the alerts under way finish (a clean stop), for ``within`` seconds at most:
        a stop must end inside ``[storage] lease_seconds`` whatever a chat does."""
        if not self._alerting:
            return
        _, late = await asyncio.wait(set(self._alerting), timeout=within)
        for task in late:
            log.warning("spend alert not sent: the bot is stopping")
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
