"""Credits: reserved on accept, committed on delivery, refunded on failure, never double spent."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.catalog import BUILT_IN, Params
from bot.config import QuotaSettings
from bot.credits import Credits, OutOfCredits, cost_of
from bot.jobs import GenerationRequest, JobState, Rejected
from bot.store import open_store
from tests.backends import count_rows, ledger_entries
from tests.conftest import effect_request, user
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends


async def _ledger(engine, job_id):
    return await ledger_entries(engine.store, job_id)


async def test_credit_is_reserved_on_accept_and_committed_on_delivery(engine, courier):
    answer = await engine.accept(effect_request())
    assert answer.credits_left == 9
    assert (await engine.balance(user())).total == 9  # reserved before the job even starts
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)  # the commit follows the delivery
    assert (await engine.balance(user())).total == 9
    assert await _ledger(engine, answer.job.id) == ["reserve", "commit"]
    assert (await engine.store.job_row(answer.job.id))["settlement"] == "committed"


async def test_failed_job_refunds_and_says_so(engine, courier, simulator):
    simulator.plan_outcome("failed")
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id)
    assert kind == "failed"
    assert "Kling could not make this video" in reason and "Your 1 credit was refunded." in reason
    assert (await engine.balance(user())).total == 10
    assert await _ledger(engine, answer.job.id) == ["reserve", "refund"]
    assert (await engine.store.job(answer.job.id)).state == JobState.FAILED
    assert await engine.store.files.get(answer.job.id) == {}  # the photo is not kept


async def test_ten_second_clip_costs_twice_a_five_second_one(engine, courier):
    request = GenerationRequest(user(), "animate", image_bytes(), Params(prompt="go", duration=10))
    answer = await engine.accept(request)
    assert answer.job.cost == 2 and answer.credits_left == 8
    await courier.outcome(answer.job.id)


def test_costs_table_by_duration():
    master = next(m for m in BUILT_IN.models if m.key == "master")
    assert cost_of(master, 5, {"master": 4}) == 4
    assert cost_of(master, 10, {"master": 4}) == 8
    assert cost_of(master, 10, {"master": {5: 3, 10: 5}}) == 5
    avatar = next(m for m in BUILT_IN.models if m.key == "avatar")
    assert cost_of(avatar, 12.3, {"avatar": 1}) == 3  # per started 5 s of audio


async def test_fifty_parallel_requests_for_the_last_credit_spend_it_once(make_engine, settings, courier):
    engine = await make_engine(replace(settings, quota=QuotaSettings(daily_credits=1, max_jobs_per_user=100)))
    answers = await asyncio.gather(*[engine.accept(effect_request()) for _ in range(50)])
    accepted = [a for a in answers if not isinstance(a, Rejected)]
    refused = [a for a in answers if isinstance(a, Rejected)]
    assert len(accepted) == 1 and len(refused) == 49
    assert all("You're out of credits: this needs 1 and you have 0." in r.text for r in refused)
    assert await count_rows(engine.store, "jobs") == 1
    assert (await engine.balance(user())).total == 0
    await courier.outcome(accepted[0].job.id)


def test_fifty_threads_on_separate_connections_cannot_both_take_the_last_credit(database):
    asyncio.run(_close(open_store(database)))  # migrated before the race
    settings = QuotaSettings(daily_credits=1)
    barrier = threading.Barrier(50)
    results: list[str] = []

    async def spend() -> None:
        store = await open_store(database)  # its own connection, like another process
        quota = Credits(store, settings)
        barrier.wait()
        try:
            async with store.transaction():
                await quota.reserve(user(), 1)
            results.append("ok")
        except OutOfCredits:
            results.append("refused")
        finally:
            await store.close()

    threads = [threading.Thread(target=asyncio.run, args=(spend(),)) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("ok") == 1 and results.count("refused") == 49

    async def daily_left() -> int:
        store = await open_store(database)
        try:
            return (await store.user(user().key))["daily_left"]
        finally:
            await store.close()

    assert asyncio.run(daily_left()) == 0


async def _close(opening) -> None:
    await (await opening).close()


async def test_jobs_in_flight_per_user_are_limited(engine, courier):
    first = await engine.accept(effect_request())
    second = await engine.accept(effect_request())
    third = await engine.accept(effect_request())
    assert isinstance(third, Rejected)
    assert third.text == ("You already have 2 jobs queued or running. "
                          "Wait for one to finish (/jobs shows them).")
    assert (await engine.balance(user())).total == 8  # the refusal cost nothing
    other = await engine.accept(effect_request(who=user(2)))  # other users are not blocked
    assert not isinstance(other, Rejected)
    for answer in (first, second, other):
        await courier.outcome(answer.job.id)


async def test_daily_credits_reset_at_the_configured_hour(make_store):
    now = [datetime(2026, 11, 21, 5, 30, tzinfo=UTC).timestamp()]
    store = await make_store()
    quota = Credits(store, QuotaSettings(daily_credits=3, reset_hour_utc=6), clock=lambda: now[0])
    async with store.transaction():
        await quota.reserve(user(), 3)
    balance = await quota.balance(user())
    assert balance.total == 0
    assert balance.resets_at == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    assert "at 06:00 UTC (in 30 min)" in balance.text(datetime.fromtimestamp(now[0], UTC))
    now[0] += 31 * 60  # 06:01: a new period
    assert (await quota.balance(user())).total == 3


async def test_refund_after_the_reset_is_kept_as_bonus(make_engine, settings, courier, simulator):
    engine = await make_engine(start=False)
    now = [datetime(2026, 11, 21, 23, 59, tzinfo=UTC).timestamp()]
    engine.credits.clock = engine.pipeline.clock = engine.clock = lambda: now[0]
    answer = await engine.accept(effect_request())
    assert (await engine.balance(user())).total == 9
    now[0] += 120  # the job fails after midnight, when the daily credits are fresh again
    await engine.pipeline.fail(answer.job.id, "Kling could not make this video.")
    balance = await engine.balance(user())
    assert (balance.daily_left, balance.bonus) == (10, 1)
    assert "Your 1 credit was refunded." in courier.failures[answer.job.id]


async def test_refund_happens_once(engine, courier, simulator):
    simulator.plan_outcome("failed")
    answer = await engine.accept(effect_request())
    await courier.outcome(answer.job.id)
    job = await engine.store.job(answer.job.id)
    async with engine.store.transaction():
        assert await engine.credits.refund(job, "again") is False
    assert (await engine.balance(user())).total == 10


async def test_owner_cancels_a_queued_job_and_gets_the_credit_back(make_engine, courier, settings):
    engine = await make_engine(max_concurrent=1)
    running = await engine.accept(effect_request(who=user(1)))
    queued = await engine.accept(effect_request(who=user(2)))
    assert queued.position >= 1
    assert await engine.cancel(user(1), queued.job.id) == f"You have no job {queued.job.id}."
    text = await engine.cancel(user(2), queued.job.id)
    assert text == f"Job {queued.job.id} cancelled; 1 credit refunded."
    assert (await engine.balance(user(2))).total == 10
    assert (await engine.store.job(queued.job.id)).state == JobState.CANCELLED
    await courier.outcome(running.job.id)
    await settled(engine, running.job.id)  # the commit follows the delivery (PostgreSQL: a round trip later)
    assert "cannot" not in text
    again = await engine.cancel(user(1), running.job.id)
    assert again == f"Job {running.job.id} has already ended (done)."
    assert len(courier.delivered) == 1  # the cancelled job never ran


async def test_a_running_job_cannot_be_cancelled(engine, courier, simulator):
    simulator.job_seconds = 1.0
    answer = await engine.accept(effect_request())
    while (await engine.store.job(answer.job.id)).state != JobState.PROCESSING:
        await asyncio.sleep(0.02)
    text = await engine.cancel(user(), answer.job.id)
    assert "already being generated and can no longer be cancelled" in text
    assert (await courier.outcome(answer.job.id))[0] == "delivered"


async def test_admin_grant_and_set(engine):
    assert (await engine.credits.grant(user(), 5, by="admin")).total == 15
    balance = await engine.credits.set_credits(user(), 12, by="admin")
    assert (balance.daily_left, balance.bonus) == (10, 2)
    assert (await engine.credits.set_credits(user(), 3)).total == 3
    entries = await ledger_entries(engine.store)
    assert entries == ["grant", "set", "set"]


async def test_precheck_refuses_without_media_what_accept_would_refuse(make_engine, settings):
    engine = await make_engine(replace(settings, quota=QuotaSettings(daily_credits=1, max_jobs_per_user=5)))
    assert await engine.precheck(user(), "effect", None, Params(effect="hula")) is None
    assert (await engine.precheck(user(), "effect", None, Params(effect="hulla"))).text == \
        "Unknown effect 'hulla'. Did you mean 'hula'?"
    short = await engine.precheck(user(), "animate", "master", Params(prompt="go"))
    assert short.text.startswith("You're out of credits: this needs 4 and you have 1.")
