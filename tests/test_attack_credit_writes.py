"""Attacks on the credit writes in few round trips (``Credits.reserve_job``,
``Store.insert_reserved_job``, ``Store.commit_job``) and on the passes over thousands of
jobs in flight (leases renewed in batches, queue places in pages), on both backends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from bot.catalog import Params
from bot.engine.scheduler import ROWS_PER_CALL
from bot.jobs import Accepted, GenerationRequest, JobState, Rejected
from bot.store import LeaseLost
from tests.backends import ledger_entries, on_postgres, raw_sql
from tests.conftest import PLATFORM, effect_request, user
from tests.helpers import image_bytes
from tests.test_many_in_flight import _queue_jobs

pytestmark = pytest.mark.both_backends


def _quota(settings, **quota):
    return replace(settings, quota=replace(settings.quota, **quota))


async def _credits_equal_the_ledger(store, key: str, daily_credits: int) -> dict:
    """Within one day: what the user has is the day's allowance plus every movement."""
    [row] = await raw_sql(store, "select daily_left, bonus from users where key = ?", [key])
    [moved] = await raw_sql(store, "select coalesce(sum(daily_delta), 0) as daily,"
                                   " coalesce(sum(bonus_delta), 0) as bonus from ledger where user_key = ?", [key])
    assert (row["daily_left"], row["bonus"]) == (daily_credits + moved["daily"], moved["bonus"])
    assert row["daily_left"] >= 0 and row["bonus"] >= 0
    return row


# --- two processes accepting for one user at once --------------------------------------


async def test_two_processes_accepting_a_new_users_requests_at_once_keep_the_job_limit(make_engine, settings):
    limited = _quota(settings, max_jobs_per_user=3)
    fronts = [await make_engine(limited, start=False) for _ in range(2)]
    answers = await asyncio.gather(*(fronts[n % 2].accept(effect_request()) for n in range(12)),
                                   return_exceptions=True)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    accepted = [a for a in answers if isinstance(a, Accepted)]
    assert len(accepted) == 3
    assert all(isinstance(a, Rejected) for a in answers if a not in accepted)
    assert sorted(a.credits_left for a in accepted) == [7, 8, 9]  # each told what it left
    store = fronts[1].store
    [users] = await raw_sql(store, "select count(*) as n from users")
    assert users["n"] == 1
    assert await store.count_active(user().key) == 3
    await _credits_equal_the_ledger(store, user().key, 10)


async def test_two_processes_accepting_at_once_never_spend_more_than_the_user_has(make_engine, settings):
    roomy = _quota(settings, max_jobs_per_user=100, daily_credits=4)
    fronts = [await make_engine(roomy, start=False) for _ in range(2)]
    await fronts[0].grant(user(), 2, by="admin")  # a day's 4 and 2 lasting: 6 jobs of 1
    answers = await asyncio.gather(*(fronts[n % 2].accept(effect_request()) for n in range(14)),
                                   return_exceptions=True)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    accepted = [a for a in answers if isinstance(a, Accepted)]
    assert len(accepted) == 6
    assert sorted(a.credits_left for a in accepted) == [0, 1, 2, 3, 4, 5]
    row = await _credits_equal_the_ledger(fronts[1].store, user().key, 4)
    assert (row["daily_left"], row["bonus"]) == (0, 0)
    paid = await raw_sql(fronts[1].store, "select sum(paid_daily) as daily, sum(paid_bonus) as bonus from jobs")
    assert (paid[0]["daily"], paid[0]["bonus"]) == (4, 2)


async def test_a_user_renamed_by_two_processes_at_once_keeps_one_row_named_as_one_of_them(make_engine, settings):
    fronts = [await make_engine(_quota(settings, max_jobs_per_user=10), start=False) for _ in range(2)]
    await fronts[0].accept(effect_request())
    names = [f"name {n}" for n in range(6)]
    answers = await asyncio.gather(*(fronts[n % 2].accept(effect_request(who=replace(user(), name=name)))
                                     for n, name in enumerate(names)))
    assert all(isinstance(a, Accepted) for a in answers), answers
    [row] = await raw_sql(fronts[1].store, "select name, daily_left from users")
    assert row["name"] in names and row["daily_left"] == 3


async def test_an_accept_on_a_new_day_rolls_the_users_row_over_and_keeps_their_lasting_credits(
        make_engine, settings):
    engine = await make_engine(settings, start=False)
    await engine.grant(user(), 3, by="admin")
    await engine.accept(effect_request())
    await raw_sql(engine.store, "update users set period = '2000-01-01', daily_left = 0")  # yesterday, all spent

    answer = await engine.accept(effect_request())

    assert isinstance(answer, Accepted) and answer.credits_left == 9 + 3
    [row] = await raw_sql(engine.store, "select period, daily_left, bonus from users")
    assert (row["period"], row["daily_left"], row["bonus"]) == (engine.credits.period(), 9, 3)
    [job] = await raw_sql(engine.store, "select paid_daily, paid_bonus, period from jobs where id = ?",
                          [answer.job.id])
    assert (job["paid_daily"], job["paid_bonus"], job["period"]) == (1, 0, engine.credits.period())


# --- text no database holds ---------------------------------------------------------------


async def test_a_name_and_a_prompt_with_nul_bytes_and_odd_unicode_are_accepted_and_settled(
        make_engine, settings):
    engine = await make_engine(replace(settings, storage=replace(settings.storage, keep_days=0)), start=False)
    odd = "A\x00n\u202en \ud83d \u0000\U0001f600 \ufeff"
    who = replace(user(), name=odd)
    request = replace(effect_request(who=who), kind="animate", params=Params(prompt=f"a cat {odd}"),
                      reply_to={"chat": 42, "title": odd})
    answer = await engine.accept(request)
    assert isinstance(answer, Accepted), answer
    renamed = await engine.accept(replace(request, user=replace(who, name=f"B\x00 {odd}")))
    assert isinstance(renamed, Accepted), renamed
    [row] = await raw_sql(engine.store, "select name from users")
    assert row["name"].startswith("B")
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None
    await engine.pipeline.settle_done(job)
    assert await ledger_entries(engine.store, job.id) == ["reserve", "commit"]
    await _credits_equal_the_ledger(engine.store, who.key, 10)


# --- a settle racing another process -------------------------------------------------------


async def test_a_settle_racing_a_take_over_commits_nothing_and_the_new_owner_settles_once(
        make_engine, settings):
    dropping = replace(settings, storage=replace(settings.storage, keep_days=0))
    first = await make_engine(dropping, start=False)
    other = await make_engine(dropping, start=False)
    answer = await first.accept(effect_request())
    job = await first.store.claims.claim_next(first.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None
    job = await first.store.update_job(job.id, owner=first.owner, state=JobState.DELIVERING)
    await raw_sql(first.store, "update jobs set lease_until = 1 where id = ?", [job.id])  # its lease ran out

    async def settle_first():
        with pytest.raises(LeaseLost):
            await first.pipeline.settle_done(job)

    async def take_over():
        [taken] = await other.store.claims.take_over(other.owner, [PLATFORM], time.time() + 60, time.time())
        return taken

    if on_postgres(first.store):  # the settle waits on the row while the take-over holds it
        async with other.store.transaction():
            taken = await take_over()
            settling = asyncio.ensure_future(settle_first())
            await asyncio.sleep(0.3)
            assert not settling.done()
        await settling
    else:
        taken = await take_over()
        await settle_first()
    row = await first.store.job_row(job.id)
    assert (row["state"], row["settlement"], row["owner"]) == ("delivering", "reserved", other.owner)
    assert set(await first.store.files.get(job.id)) == {"image"}
    await other.pipeline.settle_done(taken)
    await other.pipeline.settle_done(taken)
    assert await ledger_entries(other.store, answer.job.id) == ["reserve", "commit"]
    assert (await other.store.job_row(job.id))["settlement"] == "committed"
    await _credits_equal_the_ledger(other.store, user().key, 10)


async def test_a_settle_waiting_on_a_refund_in_progress_sees_it_and_commits_nothing(make_engine, settings):
    engine = await make_engine(settings, start=False)
    answer = await engine.accept(effect_request())
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None
    if on_postgres(engine.store):
        async with engine.store.transaction():
            assert await engine.credits.refund(job, "test") is True
            settling = asyncio.ensure_future(engine.credits.commit_delivered(
                job, engine.owner, drop_media=False, state=JobState.DONE))
            await asyncio.sleep(0.3)
            assert not settling.done()
        assert await settling is False
    else:
        async with engine.store.transaction():
            assert await engine.credits.refund(job, "test") is True
        assert await engine.credits.commit_delivered(job, engine.owner, drop_media=False,
                                                     state=JobState.DONE) is False
    assert await ledger_entries(engine.store, answer.job.id) == ["reserve", "refund"]
    assert (await engine.store.job_row(job.id))["settlement"] == "refunded"
    assert set(await engine.store.files.get(job.id)) == {"image"}  # kept: keep_days
    await _credits_equal_the_ledger(engine.store, user().key, 10)


async def test_a_settle_of_a_held_job_whose_settlement_is_unknown_ends_it_on_both_backends(make_engine, settings):
    """A job row with no settlement (a row copied in from an older database): the settle
    ends the job and moves no credit, as on SQLite; it is not taken for a lost lease (the
    job would stay "delivering", be driven again and its video posted twice)."""
    engine = await make_engine(settings, start=False)
    answer = await engine.accept(effect_request())
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None
    await raw_sql(engine.store, "update jobs set settlement = null where id = ?", [job.id])

    assert await engine.credits.commit_delivered(job, engine.owner, drop_media=False, state=JobState.DONE) is False

    assert (await engine.store.job(job.id)).state == JobState.DONE
    assert await ledger_entries(engine.store, answer.job.id) == ["reserve"]


# --- passes over thousands of jobs while they move ----------------------------------------


async def test_a_renewal_pass_while_jobs_end_and_are_taken_over_between_its_batches(make_engine, monkeypatch):
    engine = await make_engine(start=False)
    store = engine.store
    await _queue_jobs(store, engine.owner, 2 * ROWS_PER_CALL + 10, not_before=10**10)
    ids = [row["id"] for row in await raw_sql(store, "select id from jobs order by id")]
    await raw_sql(store, "update jobs set state = 'processing' where id in (?, ?, ?)",
                  [ids[3], ids[ROWS_PER_CALL + 5], ids[-1]])
    taken, ended, early = ids[ROWS_PER_CALL + 5], ids[ROWS_PER_CALL + 6], ids[3]
    renew = store.claims.renew
    calls = 0

    async def renew_while_jobs_move(owner, lease_until, **kw):
        nonlocal calls
        calls += 1
        if calls == 2:  # between the first batch and the second
            await raw_sql(store, "update jobs set owner = 'w2', lease_until = ? where id in (?, ?)",
                          [10**10, taken, early])
            await raw_sql(store, "update jobs set state = 'done' where id = ?", [ended])
        return await renew(owner, lease_until, **kw)

    monkeypatch.setattr(store.claims, "renew", renew_while_jobs_move)
    held = await engine.scheduler._renew_all()

    assert taken not in held and ended not in held
    assert held[ids[-1]] == JobState.PROCESSING
    rows = {row["id"]: row for row in await raw_sql(store, "select id, owner, lease_until from jobs")}
    assert rows[taken]["lease_until"] == 10**10 and rows[early]["lease_until"] == 10**10  # w2's, untouched
    ours = [job_id for job_id in ids if job_id not in (taken, ended, early)]
    assert all(rows[job_id]["lease_until"] > 1.0 for job_id in ours)
    assert set(ours) <= set(held)


async def test_a_renewal_waiting_on_a_row_another_process_takes_over_does_not_renew_it(make_store):
    """PostgreSQL: the batch is chosen, then a row in it is taken by another process while
    the renewal waits for it: the renewal must leave it (and not return it as held)."""
    store, other = await make_store(), await make_store()
    await _queue_jobs(store, "w1", 5)
    ids = [row["id"] for row in await raw_sql(store, "select id from jobs order by id")]
    if not on_postgres(store):
        pytest.skip("SQLite runs one statement at a time: nothing can move during one")
    async with other.transaction():
        await raw_sql(other, "update jobs set owner = 'w2', lease_until = 7777 where id = ?", [ids[2]])
        await raw_sql(other, "update jobs set state = 'done' where id = ?", [ids[3]])
        renewing = asyncio.ensure_future(store.claims.renew("w1", 500.0, after=0, limit=10))
        await asyncio.sleep(0.3)
        assert not renewing.done()
    held = await renewing
    assert set(held) == {ids[0], ids[1], ids[4]}
    rows = {row["id"]: row for row in await raw_sql(store, "select id, owner, lease_until from jobs")}
    assert (rows[ids[2]]["owner"], rows[ids[2]]["lease_until"]) == ("w2", 7777)


async def test_queue_places_told_while_jobs_are_claimed_between_pages_tell_each_once_in_order(
        make_engine, courier, monkeypatch):
    engine = await make_engine(start=False)
    store = engine.store
    await _queue_jobs(store, engine.owner, 2 * ROWS_PER_CALL + 7)
    ids = [row["id"] for row in await raw_sql(store, "select id from jobs order by id")]
    own_queued = store.claims.own_queued
    pages = 0

    async def claimed_between_pages(owner, **kw):
        nonlocal pages
        pages += 1
        if pages == 2:  # three of the first page and three of the next are claimed meanwhile
            await raw_sql(store, "update jobs set state = 'submitting' where id in (?, ?, ?, ?, ?, ?)",
                          [ids[0], ids[1], ids[2], ids[ROWS_PER_CALL], ids[ROWS_PER_CALL + 1], ids[-1]])
        return await own_queued(owner, **kw)

    monkeypatch.setattr(store.claims, "own_queued", claimed_between_pages)
    await engine.scheduler.announce_positions()

    told = [(job_id, update.position) for job_id, update in courier.progress_log if update.stage == "queued"]
    told_ids = [job_id for job_id, _ in told]
    assert len(told_ids) == len(set(told_ids))  # no one twice
    assert [place for _, place in told] == list(range(1, len(told) + 1))
    assert ids[ROWS_PER_CALL] not in told_ids and ids[-1] not in told_ids  # claimed before their page
    assert told_ids == sorted(told_ids)


async def test_a_job_with_two_photos_keeps_both_with_its_row_and_drops_both_when_settled(make_engine, settings):
    dropping = replace(settings, storage=replace(settings.storage, keep_days=0))
    engine = await make_engine(dropping, start=False)
    first, end = image_bytes(800, 600), image_bytes(640, 480, "PNG")
    answer = await engine.accept(GenerationRequest(user(), "animate", first, Params(prompt="zoom out"),
                                                   model="master", end_image=end))
    assert isinstance(answer, Accepted), answer
    kept = await engine.store.files.get(answer.job.id)
    assert set(kept) == {"image", "end_image"}
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    await engine.pipeline.settle_done(job)
    assert await engine.store.files.get(answer.job.id) == {}


async def test_accepts_cancels_and_grants_of_one_user_through_two_fronts_at_once_all_hold(make_engine, settings):
    roomy = _quota(replace(settings, storage=replace(settings.storage, lease_seconds=30.0)),
                   daily_credits=40, max_jobs_per_user=12)
    fronts = [await make_engine(roomy, start=False) for _ in range(2)]
    for front in fronts:
        await front.start(drive=False)
    ids = [(await fronts[0].accept(effect_request())).job.id for _ in range(8)]
    answers = await asyncio.gather(*(fronts[n % 2].cancel(user(), job_id) for n, job_id in enumerate(ids)),
                                   *(fronts[n % 2].accept(effect_request()) for n in range(10)),
                                   *(fronts[n % 2].grant(user(), 1, by="admin") for n in range(4)),
                                   return_exceptions=True)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    assert await fronts[1].store.count_active(user().key) <= 12
    accepted = [a for a in answers if isinstance(a, Accepted)]
    assert len(accepted) >= 4  # at most 12 active: the 8 first, less those cancelled first
    row = await fronts[1].store.user(user().key)
    [moved] = await raw_sql(fronts[1].store, "select sum(daily_delta) as daily, sum(bonus_delta) as bonus"
                                             " from ledger where user_key = ?", [user().key])
    assert (40 + moved["daily"], moved["bonus"]) == (row["daily_left"], row["bonus"])


async def test_two_machines_whose_clocks_straddle_the_reset_give_one_days_allowance_once(make_engine, settings):
    """Around the daily reset, a machine a second behind still says "yesterday": its accept
    must not take the row the other already rolled into today back to yesterday and hand
    out a fresh allowance again (each flip would give one more)."""
    small = _quota(settings, daily_credits=2, max_jobs_per_user=100)
    behind, ahead = await make_engine(small, start=False), await make_engine(small, start=False)
    midnight = 1_767_225_600.0  # 2026-01-01 00:00 UTC, the reset at hour 0
    behind.credits.clock = lambda: midnight - 0.5
    ahead.credits.clock = lambda: midnight + 0.5

    accepted = 0
    for front in (behind, behind, ahead, ahead, behind, behind, ahead, ahead):
        accepted += isinstance(await front.accept(effect_request()), Accepted)

    assert accepted == 4  # yesterday's 2 and today's 2
    [row] = await raw_sql(ahead.store, "select period, daily_left from users")
    assert (row["period"], row["daily_left"]) == ("2026-01-01", 0)


async def test_a_reserved_jobs_user_row_replaces_the_stored_one_but_keeps_when_the_user_came(make_store):
    """The store's part, the same on both backends: every column of the user's row as
    given, except when they first came (PostgreSQL's upsert never touched it)."""
    store = await make_store()
    base = {"key": "test:1", "platform": "test", "name": "Ann", "period": "2026-01-01",
            "daily_left": 5, "bonus": 1, "purchased": 2, "created_at": 100.0}
    await store.add_user(base)
    job = {"user_key": "test:1", "platform": "test", "reply_to": {}, "model_id": "m", "kind": "effect",
           "inputs": {}, "label": "a job", "cost": 1, "paid_daily": 1, "paid_bonus": 0, "period": "2026-01-02",
           "state": "queued", "created_at": 200.0, "updated_at": 200.0}
    entry = {"at": 200.0, "user_key": "test:1", "entry": "reserve", "daily_delta": -1, "bonus_delta": 0, "note": ""}
    await store.insert_reserved_job(job, entry=entry, user={**base, "name": "Bea", "period": "2026-01-02",
                                                            "daily_left": 9, "bonus": 0, "purchased": 3,
                                                            "created_at": 200.0})
    row = await store.user("test:1")
    assert {name: row[name] for name in base} == {"key": "test:1", "platform": "test", "name": "Bea",
                                                 "period": "2026-01-02", "daily_left": 9, "bonus": 0,
                                                 "purchased": 3, "created_at": 100.0}
