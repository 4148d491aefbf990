"""Purchased credits (#18): a payment credited once by its key (also from two stores on
one database at once), kept through the daily reset, spent after the daily and the bonus
ones, given back by a job's refund, taken back by a payment's refund no further than zero;
and every user's buckets equal their ledger. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from bot.config import Pack, PaymentsSettings, QuotaSettings
from bot.credits import Credits
from bot.engine.couriers import Couriers
from bot.engine.payments import Payments
from bot.jobs import Job, UserRef
from bot.payments import Purchase, discord_key, telegram_key
from tests.backends import raw_sql
from tests.conftest import effect_request, user

pytestmark = pytest.mark.both_backends

DAY = 24 * 3600.0
START = 1_767_268_800.0  # 2026-01-01 12:00 UTC: the reset (hour 0) is 12 h away
BUYER = UserRef("telegram", "501", "Buyer")
PACKS = PaymentsSettings(packs=[Pack("Starter", 50, stars=100, discord_sku="1234567890")])


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now


class AdminsHear:
    """A courier that keeps what the admins were told."""

    def __init__(self):
        self.alerts: list[str] = []

    async def alert_admins(self, text: str) -> None:
        self.alerts.append(text)


class Shop(Payments):
    """The engine's Payments mixin over a store and its own clock (no WaveSpeed needed)."""

    def __init__(self, store, clock, *, daily: int = 10):
        from bot.config import Settings
        self.settings = Settings(quota=QuotaSettings(daily_credits=daily, max_jobs_per_user=10), payments=PACKS)
        self.store = store
        self.clock = clock
        self.credits = Credits(store, self.settings.quota, clock)
        self.couriers = Couriers()
        self.admins = AdminsHear()
        self.couriers.register("telegram", self.admins)


def bought(key: str = telegram_key("charge-1"), credits: int = 50, who: UserRef = BUYER) -> Purchase:
    return Purchase(key, who, "Starter", credits, stars=100, details={"payload": "kling1|50|100|Starter"})


async def _row(store, who: UserRef = BUYER) -> dict:
    [row] = await raw_sql(store, "select daily_left, bonus, purchased from users where key = ?", [who.key])
    return row


async def assert_buckets_equal_the_ledger(store, daily: int = 10) -> None:
    """For every user: each bucket is what the ledger's movements of it made it (daily from
    the day's allowance, as the reset leaves it), and none is below zero."""
    for row in await raw_sql(store, "select key, period, daily_left, bonus, purchased from users"):
        [moved] = await raw_sql(store, "select coalesce(sum(bonus_delta), 0) as bonus,"
                                       " coalesce(sum(purchased_delta), 0) as purchased from ledger"
                                       " where user_key = ?", [row["key"]])
        assert row["bonus"] == moved["bonus"] and row["purchased"] == moved["purchased"], row
        assert min(row["daily_left"], row["bonus"], row["purchased"]) >= 0, row
        assert row["daily_left"] <= daily


async def _accept(credits: Credits, who: UserRef, cost: int, now: float):
    job = {"platform": who.platform, "reply_to": {}, "model_id": "m", "kind": "effect", "inputs": {},
           "label": "a job", "state": "queued", "created_at": now, "updated_at": now}
    written, _left = await credits.reserve_job(who, cost, job)
    return written.job


async def _refund_job(store, credits: Credits, job: Job) -> None:
    async with store.transaction():
        assert await credits.refund(job, "failed")


# --- credited once ------------------------------------------------------------------------

async def test_a_payment_is_credited_once_for_the_same_key(make_store):
    store = await make_store()
    shop = Shop(store, Clock())
    first = await shop.credit_purchase(bought())
    again = await shop.credit_purchase(bought())
    assert first.new and not again.new
    assert first.balance.total == 60 and first.balance.purchased == 50
    assert "Starter added 50 credits: you now have 60 credits." in first.text
    assert again.balance.total == 60  # nothing added the second time
    assert (await _row(store))["purchased"] == 50
    [payment] = await raw_sql(store, "select * from payments")
    assert payment["key"] == "telegram:charge-1" and payment["credits"] == 50 and payment["stars"] == 100
    assert (await shop.payment(telegram_key("charge-1")))["details"] == {"payload": "kling1|50|100|Starter"}
    entries = await raw_sql(store, "select entry, purchased_delta, note from ledger order by id")
    assert entries == [{"entry": "purchase", "purchased_delta": 50, "note": "telegram:charge-1"}]
    await assert_buckets_equal_the_ledger(store)


async def test_two_stores_crediting_the_same_charges_at_once_credit_each_once(make_store):
    """Two processes (two stores, each its own connections) handed the same payments at
    the same moment: each charge credits once, whichever wins."""
    one, two = await make_store(), await make_store()
    clock = Clock()
    shops = [Shop(one, clock), Shop(two, clock)]
    keys = [telegram_key(f"charge-{n}") for n in range(5)] + [discord_key(900 + n) for n in range(5)]
    outcomes = await asyncio.gather(*(shop.credit_purchase(bought(key)) for key in keys for shop in shops))
    assert sum(outcome.new for outcome in outcomes) == len(keys)
    assert (await _row(one))["purchased"] == 50 * len(keys)
    [count] = await raw_sql(one, "select count(*) as n from payments")
    assert count["n"] == len(keys)
    await assert_buckets_equal_the_ledger(one)


# --- kept, spent last, given back ---------------------------------------------------------------

async def test_purchased_credits_survive_the_daily_reset_and_grants_and_sets(make_store):
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    await shop.credit_purchase(bought())
    await _accept(shop.credits, BUYER, 4, clock.now)  # daily ones only
    assert (await shop.credits.balance(BUYER)).total == 56
    clock.now += DAY  # the next day: daily back to 10, purchased untouched
    balance = await shop.credits.balance(BUYER)
    assert (balance.daily_left, balance.bonus, balance.purchased) == (10, 0, 50)
    assert "10 daily and 50 purchased" in balance.text() and "purchased credits never expire" in balance.text()
    await shop.credits.grant(BUYER, -5)  # takes bonus only (none): purchased stay
    after_set = await shop.credits.set_credits(BUYER, 3)
    assert (after_set.daily_left, after_set.bonus, after_set.purchased) == (3, 0, 50)
    await assert_buckets_equal_the_ledger(store)


async def test_a_job_spends_daily_then_bonus_then_purchased_and_its_refund_gives_each_back(make_store):
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    await shop.credit_purchase(bought())
    await shop.credits.grant(BUYER, 3)
    job = await _accept(shop.credits, BUYER, 20, clock.now)  # 10 daily + 3 bonus + 7 purchased
    assert await _row(store) == {"daily_left": 0, "bonus": 3 - 3, "purchased": 43}
    paid = await store.job_row(job.id)
    assert (paid["paid_daily"], paid["paid_bonus"], paid["paid_purchased"]) == (10, 3, 7)
    [reserve] = await raw_sql(store, "select daily_delta, bonus_delta, purchased_delta from ledger"
                                     " where entry = 'reserve'")
    assert reserve == {"daily_delta": -10, "bonus_delta": -3, "purchased_delta": -7}
    await _refund_job(store, shop.credits, job)
    assert await _row(store) == {"daily_left": 10, "bonus": 3, "purchased": 50}
    await assert_buckets_equal_the_ledger(store)


async def test_a_refund_after_the_reset_gives_purchased_ones_back_to_purchased(make_store):
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    await shop.credit_purchase(bought())
    job = await _accept(shop.credits, BUYER, 15, clock.now)  # 10 daily + 5 purchased
    clock.now += DAY
    await _refund_job(store, shop.credits, job)
    # the day's 10 are new; the old day's 10 come back as bonus; the 5 bought ones as purchased
    assert await _row(store) == {"daily_left": 10, "bonus": 10, "purchased": 50}
    await assert_buckets_equal_the_ledger(store)


async def test_an_accept_from_a_known_row_counts_purchased_credits(make_store):
    """The one-write accept (a row this process knows) takes purchased credits as the
    locked path does, and a purchase in another process since is seen."""
    one, two = await make_store(), await make_store()
    clock = Clock()
    front, other = Shop(one, clock), Shop(two, clock)
    await _accept(front.credits, BUYER, 10, clock.now)  # knows the row now: 0 daily left
    await other.credit_purchase(bought())  # elsewhere
    await _accept(front.credits, BUYER, 5, clock.now)
    assert await _row(one) == {"daily_left": 0, "bonus": 0, "purchased": 45}
    await _accept(front.credits, BUYER, 5, clock.now)  # from the known row, one write
    assert await _row(one) == {"daily_left": 0, "bonus": 0, "purchased": 40}
    await assert_buckets_equal_the_ledger(one)


async def test_the_engine_spends_purchased_credits_and_says_so(make_engine, settings):
    engine = await make_engine(replace(settings, quota=replace(settings.quota, daily_credits=1),
                                       payments=PACKS))
    buyer = user(7)
    await engine.credit_purchase(bought(discord_key(77), 5, buyer))
    first = await engine.accept(effect_request(who=buyer))
    second = await engine.accept(effect_request(who=buyer))
    assert first.credits_left == 5 and second.credits_left == 4  # daily first, then purchased
    assert (await engine.balance(buyer)).purchased == 4


# --- a payment's refund ------------------------------------------------------------------------

async def test_a_refund_takes_back_what_is_left_says_the_shortfall_and_happens_once(make_store):
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    key = telegram_key("charge-1")
    await shop.credit_purchase(bought(key))
    job = await _accept(shop.credits, BUYER, 30, clock.now)  # 10 daily + 20 of the 50 purchased
    async with store.transaction():
        assert await shop.credits.commit(job)  # delivered: spent (a job not ended only holds them)
    refund = await shop.refund_payment(key, by="42")
    assert (refund.outcome, refund.user_key, refund.removed, refund.short) == ("refunded", BUYER.key, 30, 20)
    assert "30 credits taken back" in refund.text and "20 credits of it had been spent already" in refund.text
    assert (await _row(store))["purchased"] == 0  # never below zero
    payment = await shop.payment(key)
    assert (payment["refunded_credits"], payment["refund_short"], payment["refunded_by"]) == (30, 20, "42")
    assert await shop.latest_payment(BUYER) is None  # refunded: no longer the latest to refund
    assert shop.admins.alerts == []  # an admin's refund: the answer is theirs
    again = await shop.refund_payment(key, by="42")
    assert (again.outcome, again.removed, again.short) == ("already", 0, 0)
    assert "refunded already" in again.text
    unknown = await shop.refund_payment(telegram_key("nope"), by="42")
    assert (unknown.outcome, unknown.user_key) == ("unknown", None) and "No payment" in unknown.text
    notes = await raw_sql(store, "select entry, purchased_delta, note from ledger where entry = 'purchase_refund'")
    assert notes == [{"entry": "purchase_refund", "purchased_delta": -30, "note": "telegram:charge-1 (short 20)"}]
    await assert_buckets_equal_the_ledger(store)


async def test_a_platform_refund_tells_the_admins_once(make_store):
    store = await make_store()
    shop = Shop(store, Clock())
    key = discord_key(555)
    await shop.credit_purchase(bought(key))
    await shop.mark_consumed(key)
    assert (await shop.payment(key))["consumed_at"] == START
    refund = await shop.refund_payment(key, by="discord")
    assert refund.outcome == "refunded" and refund.removed == 50 and refund.short == 0
    assert shop.admins.alerts == [refund.text] and "refunded by Discord: 50 credits taken back." in refund.text
    await shop.refund_payment(key, by="discord")  # the event again: applied once, told once
    assert shop.admins.alerts == [refund.text]
    await shop.refund_payment(discord_key(556), by="discord")  # one never credited: said
    assert len(shop.admins.alerts) == 2 and "never credited" in shop.admins.alerts[1]
    await assert_buckets_equal_the_ledger(store)


async def test_two_stores_refunding_one_payment_at_once_take_back_once(make_store):
    one, two = await make_store(), await make_store()
    clock = Clock()
    shops = [Shop(one, clock), Shop(two, clock)]
    key = telegram_key("charge-1")
    await shops[0].credit_purchase(bought(key))
    await shops[0].credit_purchase(bought(telegram_key("charge-2")))
    outcomes = await asyncio.gather(*(shop.refund_payment(key, by="42") for shop in shops))
    assert sorted(outcome.outcome for outcome in outcomes) == ["already", "refunded"]
    assert (await _row(one))["purchased"] == 50
    assert (await shops[1].latest_payment(BUYER))["key"] == "telegram:charge-2"
    await assert_buckets_equal_the_ledger(one)


def test_eight_threads_each_its_own_store_credit_and_refund_each_charge_once(database):
    """Eight processes' worth (each thread its own event loop and connections) handed the
    same three payments and the same refund at one moment: three credits, one refund."""
    from bot.store import open_store
    asyncio.run(_closed(open_store(database)))  # migrated before the race
    barrier = threading.Barrier(8)
    news: list[bool] = []
    refunds: list[str] = []
    keys = [telegram_key(f"charge-{n}") for n in range(3)]

    async def race() -> None:
        store = await open_store(database)
        try:
            shop = Shop(store, Clock())
            barrier.wait()
            for key in keys:
                news.append((await shop.credit_purchase(bought(key))).new)
            refunds.append((await shop.refund_payment(keys[0], by="42")).outcome)
        finally:
            await store.close()

    threads = [threading.Thread(target=asyncio.run, args=(race(),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert news.count(True) == 3 and len(news) == 24
    assert sorted(refunds) == ["already"] * 7 + ["refunded"]

    async def check() -> None:
        store = await open_store(database)
        try:
            assert (await _row(store))["purchased"] == 100
            await assert_buckets_equal_the_ledger(store)
        finally:
            await store.close()

    asyncio.run(check())


async def _closed(opening) -> None:
    await (await opening).close()
