"""A delivered job's settle is one write (``Store.commit_job``): the job done, its credit
committed, its ledger row and its photo dropped, all or nothing, on both backends."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.jobs import JobState
from bot.store import LeaseLost
from tests.backends import ledger_entries, raw_sql
from tests.conftest import PLATFORM, effect_request, user

pytestmark = pytest.mark.both_backends


@pytest.fixture
def dropping_settings(settings):
    """Nothing kept for the result buttons: a settle drops the job's photo."""
    return replace(settings, storage=replace(settings.storage, keep_days=0))


async def _credits_equal_the_ledger(store, daily_credits: int) -> None:
    [row] = await raw_sql(store, "select daily_left + bonus as have from users where key = ?", [user().key])
    moved = await raw_sql(store, "select coalesce(sum(daily_delta + bonus_delta), 0) as n from ledger"
                                 " where user_key = ?", [user().key])
    assert row["have"] == daily_credits + moved[0]["n"]


async def test_a_settle_after_the_lease_was_taken_over_changes_nothing(make_engine, dropping_settings):
    first = await make_engine(dropping_settings, start=False)
    answer = await first.accept(effect_request())
    later = time.time() + 10_000  # the first process's lease has long run out
    other = await make_engine(dropping_settings, start=False)
    taken = await other.store.claims.claim_next(other.owner, [PLATFORM], later + 60, later, set(), adopt=True)
    assert taken is not None and taken.id == answer.job.id

    with pytest.raises(LeaseLost):
        await first.pipeline.settle_done(answer.job)

    row = await first.store.job_row(answer.job.id)
    assert (row["state"], row["settlement"], row["owner"]) == ("submitting", "reserved", other.owner)
    assert await ledger_entries(first.store, answer.job.id) == ["reserve"]  # no credit committed
    assert set(await first.store.files.get(answer.job.id)) == {"image"}  # the photo kept for its driver
    assert (await first.balance(user())).total == 9
    await _credits_equal_the_ledger(first.store, 10)

    await other.pipeline.settle_done(taken)  # its holder settles it
    row = await other.store.job_row(answer.job.id)
    assert (row["state"], row["settlement"]) == (JobState.DONE.value, "committed")
    assert await ledger_entries(other.store, answer.job.id) == ["reserve", "commit"]
    assert await other.store.files.get(answer.job.id) == {}


async def test_settling_twice_commits_once(make_engine, dropping_settings):
    engine = await make_engine(dropping_settings, start=False)
    answer = await engine.accept(effect_request())
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None

    await engine.pipeline.settle_done(job)
    await engine.pipeline.settle_done(job)  # e.g. a write repeated because its answer was lost

    assert await ledger_entries(engine.store, answer.job.id) == ["reserve", "commit"]
    assert (await engine.store.job_row(answer.job.id))["settlement"] == "committed"
    assert await engine.credits.commit(job) is False  # settled already: nothing more to commit
    assert (await engine.balance(user())).total == 9
    await _credits_equal_the_ledger(engine.store, 10)


async def test_a_refunded_job_is_not_committed_by_a_late_settle(make_engine, dropping_settings):
    """A settle that comes after the job was refunded (by its own holder) ends it as done,
    but moves no credit: the refund stands, one ledger row each."""
    engine = await make_engine(dropping_settings, start=False)
    answer = await engine.accept(effect_request())
    job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], time.time() + 60, time.time(), set())
    assert job is not None
    async with engine.store.transaction():
        assert await engine.credits.refund(job, "test") is True

    await engine.pipeline.settle_done(job)

    assert await ledger_entries(engine.store, answer.job.id) == ["reserve", "refund"]
    assert (await engine.store.job_row(answer.job.id))["settlement"] == "refunded"
    assert (await engine.balance(user())).total == 10
    await _credits_equal_the_ledger(engine.store, 10)


async def test_an_accept_writes_a_new_users_row_with_the_job(make_engine):
    """A user the store has never seen: their row (today's allowance less the cost), the
    job, its ledger row and its photo come in one write."""
    engine = await make_engine(start=False)
    answer = await engine.accept(effect_request())
    assert answer.credits_left == 9
    [row] = await raw_sql(engine.store, "select name, daily_left, bonus from users where key = ?", [user().key])
    assert (row["name"], row["daily_left"], row["bonus"]) == ("user1", 9, 0)
    assert await ledger_entries(engine.store, answer.job.id) == ["reserve"]
    assert set(await engine.store.files.get(answer.job.id)) == {"image"}
    await _credits_equal_the_ledger(engine.store, 10)
