"""Attacks on the payments' money rules (#18): charges credited twice, buckets that drift
from the ledger, a refund of a payment whose credits a queued job holds, purchases racing
accepts from a cached user row, huge values. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest

from bot.jobs import UserRef
from bot.payments import Purchase, telegram_key
from tests.backends import raw_sql
from tests.test_purchased_credits import (
    BUYER,
    DAY,
    Clock,
    Shop,
    _accept,
    _refund_job,
    _row,
    assert_buckets_equal_the_ledger,
    bought,
)

pytestmark = pytest.mark.both_backends


# --- a refund while a queued job holds the payment's credits ---------------------------------

async def test_a_payment_refunded_while_a_queued_job_holds_its_credits_gets_them_when_the_job_is_refunded(
        make_store):
    """The payment's 50 credits are held by a queued job when the payment is refunded: none
    are in the bucket to take back (short 50). The job then fails: its 50 purchased
    credits must go to the refunded payment, not back to the buyer, who has their Stars."""
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    key = telegram_key("charge-1")
    await shop.credit_purchase(bought(key))
    job = await _accept(shop.credits, BUYER, 60, clock.now)  # 10 daily + all 50 purchased
    refund = await shop.refund_payment(key, by="42")
    assert (refund.removed, refund.short) == (0, 50)
    # the admin is told they are held by a job, not spent: they follow the job's fate
    assert "50 credits of it are held by jobs not yet ended" in refund.text
    await _refund_job(store, shop.credits, job)
    assert await _row(store) == {"daily_left": 10, "bonus": 0, "purchased": 0}
    payment = await shop.payment(key)
    assert (payment["refunded_credits"], payment["refund_short"]) == (50, 0)
    await assert_buckets_equal_the_ledger(store)


async def test_a_payment_refund_racing_the_refund_of_the_job_holding_its_credits_leaves_none(make_store):
    """The admin's refund in one process, the failed job's refund in another, at once, for
    many buyers: whichever goes first, no buyer keeps the refunded payment's credits."""
    one, two = await make_store(), await make_store()
    clock = Clock()
    admin, worker = Shop(one, clock), Shop(two, clock)
    buyers = [UserRef("telegram", str(600 + n), "B") for n in range(8)]
    jobs = []
    for n, who in enumerate(buyers):
        await admin.credit_purchase(bought(telegram_key(f"held-{n}"), 50, who))
        jobs.append(await _accept(admin.credits, who, 60, clock.now))
    await asyncio.gather(*(step for n, job in enumerate(jobs) for step in (
        admin.refund_payment(telegram_key(f"held-{n}"), by="42"), _refund_job(two, worker.credits, job))))
    for n, who in enumerate(buyers):
        assert await _row(one, who) == {"daily_left": 10, "bonus": 0, "purchased": 0}
        payment = await admin.payment(telegram_key(f"held-{n}"))
        assert (payment["refunded_credits"], payment["refund_short"]) == (50, 0)
    await assert_buckets_equal_the_ledger(one)


async def test_a_job_reserved_after_a_refund_gives_its_credits_back_to_the_buyer(make_store):
    """A shortfall truly spent (a delivered job) is not made up from credits bought later:
    a later job's refund gives its purchased credits back to the buyer."""
    store = await make_store()
    clock = Clock()
    shop = Shop(store, clock)
    first, second = telegram_key("charge-1"), telegram_key("charge-2")
    await shop.credit_purchase(bought(first))
    spent = await _accept(shop.credits, BUYER, 60, clock.now)
    async with store.transaction():
        assert await shop.credits.commit(spent)  # delivered: the 50 are spent
    clock.now += 1
    spent_refund = await shop.refund_payment(first, by="42")
    assert spent_refund.short == 50 and "held by jobs" not in spent_refund.text
    clock.now += 1
    await shop.credit_purchase(bought(second))
    later = await _accept(shop.credits, BUYER, 50, clock.now)
    await _refund_job(store, shop.credits, later)
    assert (await _row(store))["purchased"] == 50
    assert (await shop.payment(first))["refund_short"] == 50
    await assert_buckets_equal_the_ledger(store)


# --- credited once -------------------------------------------------------------------------------

async def test_a_charge_credited_after_its_refund_credits_nothing(make_store):
    store = await make_store()
    shop = Shop(store, Clock())
    key = telegram_key("charge-1")
    await shop.credit_purchase(bought(key))
    assert (await shop.refund_payment(key, by="42")).removed == 50
    again = await shop.credit_purchase(bought(key))  # the update delivered again, after the refund
    assert not again.new and (await _row(store))["purchased"] == 0
    await assert_buckets_equal_the_ledger(store)


async def test_a_credit_racing_a_refund_of_the_same_key_in_two_stores_ends_consistent(make_store):
    """Credit in one process, refund in another, at once, many times over: each charge
    ends credited and either refunded (purchased back to 0) or unknown to the refund."""
    one, two = await make_store(), await make_store()
    clock = Clock()
    credit_shop, refund_shop = Shop(one, clock), Shop(two, clock)
    keys = [telegram_key(f"race-{n}") for n in range(12)]
    outcomes = await asyncio.gather(*(step for key in keys for step in (
        credit_shop.credit_purchase(bought(key)), refund_shop.refund_payment(key, by="42"))))
    refunded = sum(outcome.outcome == "refunded" for outcome in outcomes[1::2])
    assert all(credited.new for credited in outcomes[0::2])
    assert (await _row(one))["purchased"] == 50 * (len(keys) - refunded)
    await assert_buckets_equal_the_ledger(one)


async def test_a_platform_refund_handled_before_its_payment_makes_the_late_payment_credit_nothing(make_store):
    """Two fronts: one takes Telegram's refunded_payment before the other has credited the
    successful_payment (or that one failed and came again). The admins hear of a refund of
    a payment never credited; the payment arriving after must not credit its pack."""
    store = await make_store()
    shop = Shop(store, Clock())
    key = telegram_key("charge-late")
    refund = await shop.refund_payment(key, by="telegram", user=BUYER)
    assert refund.outcome == "unknown" and "never credited" in shop.admins.alerts[0]
    late = await shop.credit_purchase(bought(key))
    assert not late.new and (await _row(store))["purchased"] == 0
    assert (await shop.payment(key))["refunded_by"] == "telegram"
    assert await shop.latest_payment(BUYER) is None
    again = await shop.refund_payment(key, by="telegram", user=BUYER)  # the refund's update again
    assert again.outcome == "already" and len(shop.admins.alerts) == 1
    await assert_buckets_equal_the_ledger(store)


# --- mixes of everything -------------------------------------------------------------------------

async def test_a_random_mix_of_purchases_jobs_refunds_grants_sets_and_resets_keeps_the_ledger(make_store):
    one, two = await make_store(), await make_store()
    clock = Clock()
    shops = [Shop(one, clock), Shop(two, clock)]
    buyers = [BUYER, UserRef("discord", "77", "Other")]
    dice = random.Random(18)
    jobs: list = []
    paid: list[str] = []
    for step in range(160):
        shop, who = dice.choice(shops), dice.choice(buyers)
        move = dice.choice(["buy", "buy", "job", "job", "job", "settle", "settle", "refund", "grant", "set",
                            "day"])
        if move == "buy":
            key = telegram_key(f"c{step}")
            paid.append(key)
            await shop.credit_purchase(bought(key, dice.choice([5, 50, 1_000_000]), who))
        elif move == "job":
            try:
                jobs.append((shop, await _accept(shop.credits, who, dice.randint(1, 80), clock.now)))
            except Exception as err:  # out of credits, too many jobs
                assert type(err).__name__ in ("OutOfCredits", "TooManyJobs")
        elif move == "settle" and jobs:
            job_shop, job = jobs.pop(dice.randrange(len(jobs)))
            if dice.random() < 0.5:
                await _refund_job(job_shop.store, job_shop.credits, job)
            else:
                async with job_shop.store.transaction():
                    await job_shop.credits.commit(job)
        elif move == "refund" and paid:
            await shop.refund_payment(dice.choice(paid), by="42")
        elif move == "grant":
            await shop.credits.grant(who, dice.randint(-20, 20))
        elif move == "set":
            await shop.credits.set_credits(who, dice.randint(0, 30))
        elif move == "day":
            clock.now += DAY
        clock.now += 1
        await assert_buckets_equal_the_ledger(one)
    for job_shop, job in jobs:
        await _refund_job(job_shop.store, job_shop.credits, job)
    await assert_buckets_equal_the_ledger(one)
    # what every buyer holds bought is what they bought less what refunds took back and
    # what their delivered jobs spent: never more than they paid for and still hold
    for who in buyers:
        [bought_in] = await raw_sql(one, "select coalesce(sum(credits), 0) as n from payments where user_key = ?",
                                    [who.key])
        assert (await _row(one, who))["purchased"] <= bought_in["n"]


async def test_purchases_in_one_process_racing_accepts_from_a_cached_row_in_another_lose_none(make_store):
    """The accepting process knows the buyer's row (one-write accepts); another process
    credits purchases meanwhile: no purchase is overwritten by the cached row."""
    front, payer = await make_store(), await make_store()
    clock = Clock()
    accepting, buying = Shop(front, clock), Shop(payer, clock)
    accepting.credits.settings = replace(accepting.credits.settings, max_jobs_per_user=1000)
    await buying.credit_purchase(bought(telegram_key("seed"), 1_000_000))
    await _accept(accepting.credits, BUYER, 1, clock.now)  # the row is known now

    async def accepts() -> int:
        spent = 0
        for _ in range(30):
            await _accept(accepting.credits, BUYER, 7, clock.now)
            spent += 7
        return spent

    async def purchases() -> None:
        for n in range(30):
            await buying.credit_purchase(bought(telegram_key(f"p{n}"), 50))

    spent, _ = await asyncio.gather(accepts(), purchases())
    row = await _row(front)
    assert row["daily_left"] + row["purchased"] == 10 + 1_000_000 + 30 * 50 - 1 - spent
    await assert_buckets_equal_the_ledger(front)


# --- odd values ----------------------------------------------------------------------------------

async def test_huge_purchases_add_up_beyond_32_bits(make_store):
    store = await make_store()
    shop = Shop(store, Clock())
    for n in range(3):  # a payload's credits are at most 9 digits
        await shop.credit_purchase(bought(telegram_key(f"big-{n}"), 999_999_999))
    assert (await _row(store))["purchased"] == 2_999_999_997
    assert (await shop.credits.balance(BUYER)).total == 3_000_000_007
    await assert_buckets_equal_the_ledger(store)


async def test_a_purchase_of_no_or_negative_credits_is_refused_by_the_engine(make_store):
    """The engine, not the adapter, keeps the buckets from going below zero: a purchase of
    0 or fewer credits credits nothing (and raises), whatever an adapter hands it."""
    store = await make_store()
    shop = Shop(store, Clock())
    for credits in (0, -5):
        with pytest.raises(ValueError):
            await shop.credit_purchase(Purchase(telegram_key(f"odd{credits}"), BUYER, "Starter", credits, stars=-1))
    assert await raw_sql(store, "select key from payments") == []
    assert (await shop.credits.balance(BUYER)).purchased == 0


# --- a database outage when a payment arrives ------------------------------------------------

async def test_a_payment_arriving_while_postgresql_is_down_is_credited_once_it_is_back(pg_url, pg_server):
    """Telegram sends a successful_payment once: a credit that fails because PostgreSQL is
    restarting was lost for good (the Stars taken, no credits). The engine tries again
    while the database is offline (the credit is keyed: a repeat writes nothing)."""
    from bot.store import open_store
    store = await open_store(pg_url)
    try:
        shop = Shop(store, Clock())
        await pg_server.stop()
        credit = asyncio.create_task(shop.credit_purchase(bought()))
        await asyncio.sleep(1.5)
        assert not credit.done()  # waiting for the database, not failed
        await pg_server.start()
        credited = await asyncio.wait_for(credit, 60)
        assert credited.new and credited.balance.purchased == 50
        assert (await _row(store))["purchased"] == 50
        assert not (await shop.credit_purchase(bought())).new
        await assert_buckets_equal_the_ledger(store)
    finally:
        await store.close()
