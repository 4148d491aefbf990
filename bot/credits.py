"""Credit policy: a daily allowance, granted bonus credits and purchased credits, reserved per job.

A user has three buckets: ``daily_left`` (refilled to ``[quota] daily_credits`` at the
reset hour), ``bonus`` (granted by admins, never expires) and ``purchased`` (bought with
Telegram Stars or in Discord's store, #18: never expires, never touched by the reset, a
grant or a set). A job reserves its cost when accepted, daily credits first, then bonus,
then purchased (paid credits last: they are what a payment's refund can take back); the
reservation is committed when the video is delivered, or refunded to the buckets it came
from. A refund that arrives after the day rolled over gives its daily part to the bonus
bucket, so a user never loses a refunded credit; its purchased part always goes back to
purchased. A payment credits once by its key (``Credits.purchase``); its refund takes back
the purchased credits still there, never more (``Credits.take_back``).
Every movement is a ledger row. The rules live here; the SQL lives in ``bot.store``.
Movements expect to run inside ``Store.transaction()``; reading a user locks them there
(``Store.lock_user``), so two processes never both spend the same credit. An accept
from a user row the process saw before writes only if no one wrote that row since
(``Credits.reserve_job``, ``Store.reserve_if_unchanged``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import messages
from bot.catalog import Model
from bot.config import QuotaSettings
from bot.jobs import Balance, Job, UserRef
from bot.payments import PaymentRefund, Purchase
from bot.store import MediaItem, ReservedJob, Store

__all__ = ["Balance", "Credits", "KnownUsers", "OutOfCredits", "Reservation", "TooManyJobs", "cost_of"]

KNOWN_USERS = 4096  # user rows a process keeps for its accepts (a few hundred bytes each)


class OutOfCredits(Exception):
    """Not enough credits; str() is user-facing."""


class TooManyJobs(Exception):
    """The user has as many jobs queued or running as they may; str() is user-facing."""


@dataclass(frozen=True)
class Reservation:
    """Credits taken for a job: the user's row as it is after, and where they came from."""

    user: dict[str, Any]
    daily: int
    bonus: int
    period: str
    purchased: int = 0


def cost_of(model: Model, seconds: float, costs: Mapping[str, Any]) -> int:
    """Credits for a clip: ``[costs]`` holds credits per 5 s, or a table by duration.

    A model missing from ``costs`` costs its catalog default.
    """
    rate = costs.get(model.key, model.cost)
    if isinstance(rate, dict):
        seconds_key = int(seconds)
        if seconds_key in rate:
            return int(rate[seconds_key])
        rate = max(rate.values())  # a length the table does not name: its top rate per 5 s
    return int(rate) * max(1, math.ceil(seconds / 5))


class KnownUsers:
    """The user rows this process last read or wrote (each with its ``version``), the
    ``size`` most recently used: an accept from one of them is a single write."""

    def __init__(self, size: int = KNOWN_USERS):
        self.size = size
        self._rows: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._rows.get(key)
        if row is not None:
            self._rows.move_to_end(key)
        return row

    def remember(self, row: dict[str, Any]) -> None:
        """Keep ``row`` (as committed, ``version`` included) as the user's."""
        self._rows[row["key"]] = row
        self._rows.move_to_end(row["key"])
        if len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def forget(self, key: str) -> None:
        self._rows.pop(key, None)


def credits_of(row: dict[str, Any]) -> int:
    """What a user's row holds in all: daily, bonus and purchased credits."""
    return int(row["daily_left"]) + int(row["bonus"]) + int(row.get("purchased") or 0)


class PurchasedCredits:
    """A payment credited once (``purchase``) and taken back once (``take_back``), each in
    one transaction with the user's row and the ledger, under the user's lock."""

    store: Store
    clock: Callable[[], float]
    known: KnownUsers

    async def _user_row(self, user: UserRef) -> dict[str, Any]:
        raise NotImplementedError

    def balance_of(self, row: dict[str, Any]) -> Balance:
        raise NotImplementedError

    def entry(self, user_key: str, entry: str, daily: int, bonus: int, job_id: int | None = None,
              note: str = "", purchased: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    async def purchase(self, purchase: Purchase) -> tuple[bool, Balance]:
        """Credit a paid pack once by its key: (False, the balance) when the key was
        credited before (by any process: nothing written now), else (True, the balance after).
        ValueError for a purchase of fewer than 1 credit: it would take credits away."""
        if purchase.credits < 1:
            raise ValueError(f"a purchase credits 1 or more, not {purchase.credits}")
        user = purchase.user
        self.known.forget(user.key)
        async with self.store.transaction():
            row = await self._user_row(user)  # the user's lock first, as every credit write takes it
            written = await self.store.insert_payment({
                "key": purchase.key, "platform": user.platform, "user_key": user.key, "pack": purchase.pack,
                "credits": purchase.credits, "stars": purchase.stars, "sku_id": purchase.sku_id,
                "details": purchase.details, "at": self.clock()})
            if not written:
                return False, self.balance_of(row)
            row["purchased"] = int(row.get("purchased") or 0) + purchase.credits
            await self.store.update_user(user.key, purchased=row["purchased"])
            await self.store.add_ledger(**self.entry(user.key, "purchase", 0, 0, note=purchase.key,
                                                     purchased=purchase.credits))
        return True, self.balance_of(row)

    async def take_back(self, key: str, *, by: str, user: UserRef | None = None) -> PaymentRefund:
        """Refund payment ``key`` once: take back its credits that are still purchased
        credits of the user's (``removed``), never more (``short``: the rest, already
        spent). The text is left for the caller to write. ``user``: the buyer as the
        platform names them; a key not credited yet is then kept as refunded (0 credits),
        so its payment arriving later credits nothing."""
        async with self.store.transaction():
            if user is not None:
                await self.store.lock_user(user.key)  # as a credit of the key does: one goes first
            payment = await self.store.payment(key)
            if payment is None:
                if user is not None:
                    await self.store.insert_payment({
                        "key": key, "platform": user.platform, "user_key": user.key, "pack": "", "credits": 0,
                        "details": {"refunded_before_credited": True}, "at": self.clock()})
                    await self.store.mark_refunded(key, at=self.clock(), by=by, credits=0, short=0)
                return PaymentRefund("unknown", key, None, 0, 0, "")
            platform, user_id = str(payment["user_key"]).split(":", 1)
            self.known.forget(payment["user_key"])
            row = await self._user_row(UserRef(platform, user_id))  # locked: what they hold stays put
            removed = min(int(payment["credits"]), int(row.get("purchased") or 0))
            short = int(payment["credits"]) - removed
            if not await self.store.mark_refunded(key, at=self.clock(), by=by, credits=removed, short=short):
                return PaymentRefund("already", key, payment["user_key"], 0, 0, "")
            await self.store.update_user(payment["user_key"], purchased=int(row.get("purchased") or 0) - removed)
            note = f"{key} (short {short})" if short else key
            await self.store.add_ledger(**self.entry(payment["user_key"], "purchase_refund", 0, 0, note=note,
                                                     purchased=-removed))
        # Read after the commit: a job's refund locks its job row before the user (no deadlock)
        held = min(short, await self._held_by_jobs(payment["user_key"])) if short else 0
        return PaymentRefund("refunded", key, payment["user_key"], removed, short, "", held)

    async def _held_by_jobs(self, user_key: str) -> int:
        """Purchased credits the user's jobs not yet ended hold (reserved, not yet spent)."""
        held = 0
        for job in await self.store.user_jobs(user_key, active_only=True, limit=1000):
            row = await self.store.job_row(job.id)
            if row.get("settlement") == "reserved":
                held += int(row.get("paid_purchased") or 0)
        return held

    async def make_up_shortfalls(self, user_key: str, credits: int, *, reserved_at: float, job_id: int) -> int:
        """A job reserved at ``reserved_at`` gives back ``credits`` purchased credits: those
        a payment refunded since could not take back (its ``refund_short``: they were held
        by this job, not spent) go to that refund now, oldest refund first, each with its
        ledger row. Returns how many went so; the rest is the buyer's. Under the user's lock."""
        made_up = 0
        owing = [payment for payment in await self.store.payments_since(0, user_key)
                 if payment["refunded_at"] is not None and payment["refunded_at"] >= reserved_at
                 and int(payment["refund_short"] or 0) > 0]
        for payment in sorted(owing, key=lambda payment: payment["refunded_at"]):
            share = min(credits - made_up, int(payment["refund_short"]))
            if share <= 0:
                break
            if await self.store.make_up_refund(payment["key"], share):
                made_up += share
                await self.store.add_ledger(**self.entry(user_key, "purchase_refund", 0, 0, job_id,
                                                         f"{payment['key']} (made up {share})", -share))
        return made_up


class Credits(PurchasedCredits):
    """Reserve, commit, refund, grant and set credits, by the rules above."""

    def __init__(self, store: Store, settings: QuotaSettings,
                 clock: Callable[[], float] = time.time, allowance: Callable[[UserRef], int] | None = None):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.known = KnownUsers()
        # A user's daily credits where they ask from (a Discord role, a Telegram chat).
        self.allowance_of = allowance or (lambda _user: settings.daily_credits)

    # --- periods ----------------------------------------------------------------

    def period(self, now: float | None = None) -> str:
        """Label of the credit period a moment falls in: the date it started on."""
        moment = datetime.fromtimestamp(self.clock() if now is None else now, UTC)
        return (moment - timedelta(hours=self.settings.reset_hour_utc)).date().isoformat()

    def resets_at(self, now: float | None = None) -> datetime:
        start = datetime.fromisoformat(self.period(now)).replace(tzinfo=UTC)
        return start + timedelta(days=1, hours=self.settings.reset_hour_utc)

    # --- reading ----------------------------------------------------------------

    async def balance(self, user: UserRef) -> Balance:
        async with self.store.transaction():
            row = await self._user_row(user)
        return self.balance_of(row)

    def balance_of(self, row: dict[str, Any]) -> Balance:
        """A user's credits as their (current) row holds them."""
        daily = self.daily_of(row)
        return Balance(row["daily_left"], row["bonus"], self.resets_at(),
                       allowance=None if daily == self.settings.daily_credits else daily,
                       purchased=int(row.get("purchased") or 0))

    def daily_of(self, row: dict[str, Any]) -> int:
        """The daily allowance a user's row holds for its period (NULL: ``[quota] daily_credits``)."""
        allowance = row.get("allowance")
        return self.settings.daily_credits if allowance is None else int(allowance)

    def _stored(self, allowance: int) -> int | None:
        return None if allowance == self.settings.daily_credits else allowance

    async def _user_row(self, user: UserRef) -> dict[str, Any]:
        """The user's row, created or rolled into the current period as needed."""
        await self.store.lock_user(user.key)
        found = await self.store.user(user.key)
        row = self.current_row(user, found)
        if found is None:
            await self.store.add_user(row)
        elif changes := {name: value for name, value in row.items() if found.get(name) != value}:
            await self.store.update_user(user.key, **changes)
        return row

    def current_row(self, user: UserRef, found: dict[str, Any] | None) -> dict[str, Any]:
        """What the user's row must be now, given the row as stored (None: a new user,
        with today's allowance): rolled forward into the current period, named as the chat names them."""
        period = self.period()
        allowance = self.allowance_of(user)
        if found is None:
            return {"key": user.key, "platform": user.platform, "name": user.name,
                    "period": period, "daily_left": allowance, "allowance": self._stored(allowance),
                    "bonus": 0, "purchased": 0, "created_at": self.clock()}
        row = dict(found)
        # Forward only (periods are ISO dates): a machine whose clock is a little behind
        # another's at the reset must not take the row back a day for a second allowance.
        if row["period"] < period:
            row.update(period=period, daily_left=allowance, allowance=self._stored(allowance))
        elif allowance > (had := self.daily_of(row)):
            # A higher allowance mid-period (a new role, a chat that gives more): the
            # difference now, once; a lower one takes nothing away before the reset.
            row.update(daily_left=row["daily_left"] + allowance - had, allowance=allowance)
        if user.name and user.name != row["name"]:
            row["name"] = user.name
        return row

    # --- movements --------------------------------------------------------------

    async def reserve(self, user: UserRef, cost: int) -> tuple[int, int, str]:
        """Take ``cost`` credits (daily, then bonus, then purchased); returns (from_daily,
        from_bonus, period): what purchased credits gave is the rest of ``cost``."""
        taken = self.reservation(user, await self._user_row(user), cost)
        await self.store.update_user(user.key, daily_left=taken.user["daily_left"], bonus=taken.user["bonus"],
                                     purchased=taken.user["purchased"])
        return taken.daily, taken.bonus, taken.period

    def reservation(self, user: UserRef, found: dict[str, Any] | None, cost: int) -> Reservation:
        """What taking ``cost`` credits (daily, then bonus, then purchased) from a user whose
        row is ``found`` leaves; OutOfCredits when they do not have them. Writes nothing."""
        row = self.current_row(user, found)
        row["purchased"] = purchased = int(row.get("purchased") or 0)
        if (have := credits_of(row)) < cost:
            raise OutOfCredits(self.shortfall(cost, have, self.daily_of(row)))
        from_daily = min(cost, row["daily_left"])
        from_bonus = min(cost - from_daily, row["bonus"])
        from_purchased = cost - from_daily - from_bonus
        after = {**row, "daily_left": row["daily_left"] - from_daily, "bonus": row["bonus"] - from_bonus,
                 "purchased": purchased - from_purchased}
        return Reservation(after, from_daily, from_bonus, row["period"], from_purchased)

    async def reserve_job(self, user: UserRef, cost: int, job: dict[str, Any],
                          media: Sequence[MediaItem] = ()) -> tuple[ReservedJob, int]:
        """Accept a job: within the user's job limit, take its ``cost`` and write it (the
        job's other columns in ``job``) with its ledger row and its ``media``, all or
        nothing. Returns the job as written (with its queue place) and the credits the user
        has left; raises TooManyJobs or OutOfCredits (nothing written).

        From a user row this process knows (``known``), one write that happens only if no
        one wrote the row since (``Store.reserve_if_unchanged``; PostgreSQL: one
        statement). Else, or when that write did not happen, or the known row would refuse
        (it may be out of date: a grant elsewhere), the authoritative way: the user's
        lock, their row and jobs read, one write."""
        # Inside a caller's transaction a write may yet be undone: remember nothing from it.
        remember = not self.store.in_transaction()
        known = self.known.get(user.key) if remember else None
        if known is not None and (reserved := await self._reserve_from(known, user, cost, job, media)):
            return reserved
        async with self.store.transaction():
            await self.store.lock_user(user.key)  # one accept per user at a time, on any machine
            found, active = await self.store.user_and_active_jobs(user.key)
            if found is not None and remember:
                self.known.remember(found)  # committed by someone: nothing here can undo it
            if active >= self.settings.max_jobs_per_user:
                raise TooManyJobs(messages.too_many_jobs(self.settings.max_jobs_per_user))
            taken = self.reservation(user, found, cost)
            written = await self.store.insert_reserved_job(
                self._job_row(user, cost, job, taken), user=taken.user,
                entry=self._reserve_entry(user, taken), media=media)
        if remember:  # committed now
            self.known.remember({**taken.user, "version": written.user_version})
        return written, credits_of(taken.user)

    async def _reserve_from(self, known: dict[str, Any], user: UserRef, cost: int, job: dict[str, Any],
                            media: Sequence[MediaItem]) -> tuple[ReservedJob, int] | None:
        """``reserve_job`` from the user's row as this process last saw it, if that row is
        still the stored one and the user is under their job limit; else None (nothing
        written) and the row forgotten."""
        try:
            taken = self.reservation(user, known, cost)
        except OutOfCredits:
            return None  # perhaps granted credits since: only the stored row can say
        written = await self.store.reserve_if_unchanged(
            self._job_row(user, cost, job, taken), user=taken.user, version=known["version"],
            active_below=self.settings.max_jobs_per_user,
            entry=self._reserve_entry(user, taken), media=media)
        if written is None:
            self.known.forget(user.key)
            return None
        self.known.remember({**taken.user, "version": written.user_version})
        return written, credits_of(taken.user)

    def _reserve_entry(self, user: UserRef, taken: Reservation) -> dict[str, Any]:
        return self.entry(user.key, "reserve", -taken.daily, -taken.bonus, purchased=-taken.purchased)

    @staticmethod
    def _job_row(user: UserRef, cost: int, job: dict[str, Any], taken: Reservation) -> dict[str, Any]:
        return {**job, "user_key": user.key, "cost": cost, "paid_daily": taken.daily,
                "paid_bonus": taken.bonus, "paid_purchased": taken.purchased, "period": taken.period}

    def shortfall(self, cost: int, have: int, daily: int | None = None) -> str:
        """What a user is told when ``have`` credits do not cover ``cost`` (``daily``: their
        allowance, by default ``[quota] daily_credits``)."""
        return messages.out_of_credits(cost, have, self.settings.daily_credits if daily is None else daily,
                                       self.resets_at())

    def entry(self, user_key: str, entry: str, daily: int, bonus: int,
              job_id: int | None = None, note: str = "", purchased: int = 0) -> dict[str, Any]:
        """A ledger row: a movement of ``daily``, ``bonus`` and ``purchased`` credits, now."""
        return {"at": self.clock(), "user_key": user_key, "job_id": job_id, "entry": entry,
                "daily_delta": daily, "bonus_delta": bonus, "purchased_delta": purchased, "note": note}

    async def record(self, user_key: str, entry: str, daily: int, bonus: int,
               job_id: int | None = None, note: str = "", purchased: int = 0) -> None:
        await self.store.add_ledger(**self.entry(user_key, entry, daily, bonus, job_id, note, purchased))

    async def commit(self, job: Job) -> bool:
        """Make a job's reservation final. False if it was already settled."""
        if not await self.store.settle(job.id, "committed"):
            return False
        await self.store.add_ledger(**self.commit_entry(job))
        return True

    def commit_entry(self, job: Job) -> dict[str, Any]:
        """The ledger row that makes a job's reservation final (it moves no credit)."""
        return self.entry(job.user_key, "commit", 0, 0, job.id)

    async def commit_delivered(self, job: Job, owner: str, *, drop_media: bool, **changes: Any) -> bool:
        """End a delivered job (``changes`` to its row, while ``owner`` holds it: else
        LeaseLost and nothing written) and make its reservation final, in one write
        (``Store.commit_job``). False if it was already settled."""
        return await self.store.commit_job(job.id, owner=owner, entry=self.commit_entry(job),
                                           drop_media=drop_media, **changes)

    async def refund(self, job: Job, why: str) -> bool:
        """Return a job's credits. False if it was already settled (no double refund)."""
        if not await self.store.settle(job.id, "refunded"):
            return False
        self.known.forget(job.user_key)  # its row changes: an accept from the old one would only miss
        row = await self.store.job_row(job.id)
        daily, bonus, purchased = row["paid_daily"], row["paid_bonus"], int(row.get("paid_purchased") or 0)
        platform, user_id = job.user_key.split(":", 1)
        user = await self._user_row(UserRef(platform, user_id))  # rolled into today first
        if user["period"] != row["period"]:
            # The day it was reserved in is over: give it back as lasting credit (purchased
            # ones stay purchased: they never expired).
            daily, bonus = 0, daily + bonus
        await self.record(job.user_key, "refund", daily, bonus, job.id, why, purchased)
        if purchased:  # a payment refunded while this job held its credits takes them now
            purchased -= await self.make_up_shortfalls(job.user_key, purchased, reserved_at=row["created_at"],
                                                       job_id=job.id)
        await self.store.update_user(job.user_key, daily_left=user["daily_left"] + daily,
                                     bonus=user["bonus"] + bonus,
                                     purchased=int(user.get("purchased") or 0) + purchased)
        return True

    async def grant(self, user: UserRef, credits: int, by: str = "") -> Balance:
        """Add lasting bonus credits (negative takes them away, not below zero)."""
        self.known.forget(user.key)
        async with self.store.transaction():
            row = await self._user_row(user)
            bonus = max(0, row["bonus"] + credits)
            await self.store.update_user(user.key, bonus=bonus)
            await self.record(user.key, "grant", 0, bonus - row["bonus"], note=by)
        return await self.balance(user)

    async def set_credits(self, user: UserRef, credits: int, by: str = "") -> Balance:
        """Set what a user has right now: today's allowance, the rest as bonus."""
        self.known.forget(user.key)
        async with self.store.transaction():
            row = await self._user_row(user)
            daily = min(max(0, credits), self.daily_of(row))
            bonus = max(0, credits - daily)
            await self.store.update_user(user.key, daily_left=daily, bonus=bonus)
            await self.record(user.key, "set", daily - row["daily_left"], bonus - row["bonus"], note=by)
        return await self.balance(user)
