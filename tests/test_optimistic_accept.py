"""An accept for a user the process knows is one write that happens only if their row is
unchanged (``Credits.reserve_job`` -> ``Store.reserve_if_unchanged``): whatever wrote the
row since (another process's accept, a refund, a grant, a new day, any direct write),
the answer, the credits and the ledger are those of the locked path. On both backends;
the interleavings that need a server's concurrency on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import asyncpg
import pytest

from bot import messages
from bot.config import QuotaSettings
from bot.credits import Credits
from bot.jobs import Accepted, JobState, Rejected
from bot.store import open_store
from bot.store.copy import copy_between
from tests.backends import ledger_entries, on_postgres, raw_sql
from tests.conftest import PLATFORM, effect_request, user

pytestmark = pytest.mark.both_backends

DAY = 24 * 3600.0


def _with_quota(settings, **quota):
    return replace(settings, quota=replace(settings.quota, **quota))


async def _user_row(store) -> dict:
    [row] = await raw_sql(store, "select daily_left, bonus, version from users where key = ?", [user().key])
    return row


async def _credits_equal_the_ledger(store, start: int = 10) -> int:
    """Assert the user's credits are ``start`` plus every movement the ledger records,
    and never below zero; returns what they have."""
    row = await _user_row(store)
    [moved] = await raw_sql(store, "select coalesce(sum(daily_delta + bonus_delta), 0) as n from ledger"
                                   " where user_key = ?", [user().key])
    have = row["daily_left"] + row["bonus"]
    assert row["daily_left"] >= 0 and row["bonus"] >= 0
    assert have == start + moved["n"]
    return have


async def _active(store) -> int:
    return await store.count_active(user().key)


async def _deliver_queued(engine) -> int:
    """Every queued job claimed and settled as delivered, by this engine's real settle step."""
    delivered = 0
    while True:
        now = time.time()
        job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], now + 60, now, set(), adopt=True)
        if job is None:
            return delivered
        await engine.pipeline.settle_done(job)
        delivered += 1


# --- a known row that someone else changed ---------------------------------------------------

async def test_a_grant_by_another_process_counts_in_the_next_accept(make_engine):
    front = await make_engine(start=False)
    assert (await front.accept(effect_request())).credits_left == 9  # the front now knows the user's row
    admin = await make_engine(start=False)  # another process: an admin's console
    await admin.credits.grant(user(), 5, by="admin")

    answer = await front.accept(effect_request())

    assert isinstance(answer, Accepted) and answer.credits_left == 13
    assert await _credits_equal_the_ledger(front.store) == 13


async def test_a_known_row_that_says_out_of_credits_asks_the_stored_one(make_engine, settings):
    """The row a process knows may be out of date: out of credits by it is not an answer
    until the stored row agrees (another process granted credits meanwhile)."""
    front = await make_engine(_with_quota(settings, daily_credits=1), start=False)
    await front.accept(effect_request())
    refused = await front.accept(effect_request())
    assert isinstance(refused, Rejected) and refused.text == front.credits.shortfall(1, 0)
    admin = await make_engine(_with_quota(settings, daily_credits=1), start=False)
    await admin.credits.grant(user(), 2, by="admin")

    answer = await front.accept(effect_request())

    assert isinstance(answer, Accepted) and answer.credits_left == 1
    assert await _credits_equal_the_ledger(front.store, start=1) == 1


async def test_a_refund_by_another_process_is_not_lost_by_the_next_accept(make_engine):
    front = await make_engine(start=False)
    first = await front.accept(effect_request())
    other = await make_engine(start=False)
    assert await other.cancel(user(), first.job.id) == messages.job_cancelled(first.job.id, 1)  # refunded: 10

    answer = await front.accept(effect_request())

    assert isinstance(answer, Accepted) and answer.credits_left == 9
    assert await ledger_entries(front.store, first.job.id) == ["reserve", "refund"]
    assert await _credits_equal_the_ledger(front.store) == 9


async def test_another_processs_accept_is_counted_in_credits_and_in_the_job_limit(make_engine, settings):
    two_jobs = _with_quota(settings, max_jobs_per_user=2)
    front = await make_engine(two_jobs, start=False)
    other = await make_engine(two_jobs, start=False)
    assert (await front.accept(effect_request())).credits_left == 9
    assert (await other.accept(effect_request())).credits_left == 8  # the front's known row is old now

    refused = await front.accept(effect_request())

    assert isinstance(refused, Rejected) and refused.text == messages.too_many_jobs(2)
    assert await _active(front.store) == 2
    assert await _credits_equal_the_ledger(front.store) == 8
    for engine in (front, other):  # each delivers its own: the user's row is not written
        await _deliver_queued(engine)
    answer = await front.accept(effect_request())
    assert isinstance(answer, Accepted) and answer.credits_left == 7


async def test_a_new_day_begun_by_another_process_gives_todays_allowance_once(database, make_store):
    """Each process rolls the row into the new day from what it knows; the row one rolled
    (and spent from) is stale for the other, which then reads it: today's allowance is
    given once."""
    now = [1_700_000_000.0]
    quota = QuotaSettings(max_jobs_per_user=10)
    first = Credits(await make_store(), quota, clock=lambda: now[0])
    second = Credits(await make_store(), quota, clock=lambda: now[0])
    for _ in range(3):
        await first.reserve_job(user(), 1, _job_columns(now[0]))
    now[0] += DAY
    _, left = await second.reserve_job(user(), 1, _job_columns(now[0]))  # rolled into today: 10, less 1
    assert left == 9
    reserved, left = await first.reserve_job(user(), 1, _job_columns(now[0]))  # knows yesterday's row
    assert left == 8 and reserved.job.cost == 1
    now[0] += DAY
    _, left = await first.reserve_job(user(), 1, _job_columns(now[0]))  # this one rolls it itself
    assert left == 9
    row = await _user_row(first.store)
    assert (row["daily_left"], row["bonus"]) == (9, 0)
    assert [r["period"] for r in await raw_sql(first.store, "select period from jobs order by id")] == [
        first.period(now[0] - 2 * DAY)] * 3 + [first.period(now[0] - DAY)] * 2 + [first.period(now[0])]


def _job_columns(now: float) -> dict:
    return {"platform": PLATFORM, "reply_to": {}, "model_id": "effect", "kind": "effect",
            "inputs": {"effect_scene": "hula"}, "label": "hula", "state": JobState.QUEUED.value,
            "created_at": now, "updated_at": now}


async def test_any_write_to_a_user_row_moves_its_version(make_engine):
    """Even a write no code path of the bot makes (an operator's SQL) moves the version,
    and the process that knew the row before reads it again."""
    front = await make_engine(start=False)
    await front.accept(effect_request())
    before = (await _user_row(front.store))["version"]
    await raw_sql(front.store, "update users set bonus = bonus + 4 where key = ?", [user().key])
    assert (await _user_row(front.store))["version"] == before + 1
    await raw_sql(front.store, "update users set version = ? where key = ?", [before, user().key])
    assert (await _user_row(front.store))["version"] > before  # not back to the one it was

    answer = await front.accept(effect_request())

    assert isinstance(answer, Accepted) and answer.credits_left == 12  # 10 - 1 + 4 - 1


# --- the job limit and a count that is out of date ----------------------------------------------

async def test_the_job_limit_holds_for_a_known_row_and_counts_delivered_jobs_out(make_engine, settings):
    front = await make_engine(_with_quota(settings, max_jobs_per_user=2), start=False)
    await front.accept(effect_request())
    await front.accept(effect_request())

    refused = await front.accept(effect_request())  # the row is unchanged, but two jobs are active

    assert isinstance(refused, Rejected) and refused.text == messages.too_many_jobs(2)
    assert await _credits_equal_the_ledger(front.store) == 8
    assert await _deliver_queued(front) == 2
    answer = await front.accept(effect_request())
    assert isinstance(answer, Accepted) and answer.credits_left == 7
    assert await _active(front.store) == 1


# --- two processes at once ----------------------------------------------------------------------

async def test_two_processes_accepting_for_one_user_at_once_keep_the_limit_and_the_ledger(make_engine, settings):
    """Rounds of accepts from two engines on one database at the same moment, the jobs
    then delivered or cancelled: never more jobs than the limit, never a credit spent
    twice or below zero, and every credit the user had spent in the end."""
    quota = _with_quota(settings, max_jobs_per_user=3)
    engines = [await make_engine(quota, start=False) for _ in range(2)]
    await engines[0].credits.grant(user(), 20, by="admin")  # 30 credits in all (the grant is in the ledger)
    accepted = 0
    for round_ in range(16):
        answers = await asyncio.gather(*(engines[n % 2].accept(effect_request()) for n in range(5)))
        accepted += sum(isinstance(a, Accepted) for a in answers)
        assert await _active(engines[0].store) <= 3
        assert all(isinstance(a, Accepted) or a.text == messages.too_many_jobs(3) or "credit" in a.text
                   for a in answers), [a.text for a in answers if isinstance(a, Rejected)]
        for answer in answers:
            if isinstance(answer, Accepted):
                assert answer.credits_left >= 0
        if round_ % 3 == 2:  # a refund writes the row: the other engine's known row goes stale
            queued = [a for a in answers if isinstance(a, Accepted)]
            if queued:
                await engines[1].cancel(user(), queued[0].job.id)
                accepted -= 1
        for engine in engines:  # each delivers the jobs it accepted (it holds them)
            await _deliver_queued(engine)
        assert await _active(engines[0].store) == 0
        await _credits_equal_the_ledger(engines[1].store)
    assert accepted == 30
    assert await _credits_equal_the_ledger(engines[0].store) == 0
    [row] = await raw_sql(engines[0].store, "select count(*) as n from jobs where settlement = 'committed'")
    assert row["n"] == 30


async def test_an_optimistic_accept_and_a_locked_one_racing_keep_the_job_limit(database, make_engine, settings):
    """The race the optimistic statement's lock is for: it has written the user's row and
    waits (here: for an id another transaction holds) while another process's locked
    accept reads the user. That read must not see the new row without its job."""
    if not on_postgres(database):
        pytest.skip("needs a server's concurrency (SQLite's one write lock orders every accept)")
    two_jobs = _with_quota(settings, max_jobs_per_user=2)
    front = await make_engine(two_jobs, start=False)
    other = await make_engine(two_jobs, start=False)
    await front.accept(effect_request())  # one job; the front knows the row
    holder = await asyncpg.connect(database)
    try:
        tx = holder.transaction()
        await tx.start()
        last = await holder.fetchval("select last_value from jobs_id_seq")
        await holder.execute("insert into jobs (id, state) select n, 'done' from generate_series($1::bigint + 1,"
                             " $1::bigint + 3) as n", last)  # the next ids: the front's insert waits for them
        optimistic = asyncio.create_task(front.accept(effect_request()))
        await _until_waiting(holder, 1)
        locked = asyncio.create_task(other.accept(effect_request()))
        await _until_waiting(holder, 2)
        await tx.rollback()  # the ids are free: the front's statement goes on
        answers = await asyncio.gather(optimistic, locked)
    finally:
        await holder.close()
    assert sorted(type(a).__name__ for a in answers) == ["Accepted", "Rejected"], [
        getattr(a, "text", a) for a in answers]
    assert await _active(front.store) == 2
    assert await _credits_equal_the_ledger(front.store) == 8


async def _until_waiting(conn: asyncpg.Connection, backends: int) -> None:
    """Until ``backends`` other connections to this database wait for a lock."""
    for _ in range(400):
        await conn.execute("select pg_stat_clear_snapshot()")
        waiting = await conn.fetchval(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
            " and datname = current_database() and pid != pg_backend_pid()")
        if waiting >= backends:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {backends} connections came to wait")


async def test_a_copy_between_backends_carries_each_user_rows_version(tmp_path, pg_url):
    source = await open_store(str(tmp_path / "bot.sqlite"))
    try:
        credits = Credits(source, QuotaSettings())
        for _ in range(2):
            await credits.reserve_job(user(), 1, _job_columns(time.time()))
        await credits.grant(user(), 3)
        version = (await _user_row(source))["version"]
        assert version >= 2
    finally:
        await source.close()
    await copy_between(str(tmp_path / "bot.sqlite"), pg_url, force=False, now=time.time())
    await copy_between(pg_url, str(tmp_path / "back.sqlite"), force=False, now=time.time())
    for location in (pg_url, str(tmp_path / "back.sqlite")):
        copied = await open_store(location)
        try:
            assert await _user_row(copied) == {"daily_left": 8, "bonus": 3, "version": version}
        finally:
            await copied.close()
