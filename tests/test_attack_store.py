"""Attacks on the shared store (issue #15): PostgreSQL outages, concurrent store objects,
hostile strings and notifications. Each test is a defect found and fixed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import asyncpg

from bot.catalog import Params
from bot.jobs import Accepted, JobState, Rejected
from bot.store import open_store
from tests.conftest import PLATFORM, effect_request, press, user
from tests.helpers import settled


def _on(settings, url: str, **storage):
    return replace(settings, storage=replace(settings.storage, url=url, **storage))


async def test_a_postgresql_restart_while_a_job_is_followed_does_not_refund_its_video(
        make_engine, settings, pg_url, pg_server, simulator, courier):
    simulator.job_seconds = 3.0
    engine = await make_engine(_on(settings, pg_url))
    answer = await engine.accept(effect_request())
    while (await engine.store.job(answer.job.id)).state != JobState.PROCESSING:
        await asyncio.sleep(0.05)
    await pg_server.stop()
    await asyncio.sleep(3)
    await pg_server.start()
    outcome = await courier.outcome(answer.job.id, timeout=30)
    assert outcome[0] == "delivered", outcome
    assert len(simulator.submissions) == 1


async def _cut_the_connection_of_the_next_write_to(pg_url: str, job_id: int, column: str = '"state"') -> None:
    """Hold the job's row from another connection until a write to it waits, then cut
    that waiting connection (as a restart, a failover or a dropped link would)."""
    admin = await asyncpg.connect(pg_url)
    try:
        async with admin.transaction():
            await admin.execute("select 1 from jobs where id = $1 for update", job_id)
            for _ in range(600):
                await admin.execute("select pg_stat_clear_snapshot()")  # else one snapshot per transaction
                waiting = await admin.fetch(
                    "select pid from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()"
                    " and query like $1", f"update jobs set %{column}%")
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting, "no write to the job came"
            await admin.execute("select pg_terminate_backend($1)", waiting[0]["pid"])
    finally:
        await admin.close()


async def test_a_connection_cut_during_a_jobs_write_does_not_refund_the_video_wavespeed_made(
        make_engine, settings, pg_url, simulator, courier):
    simulator.job_seconds = 1.0
    engine = await make_engine(_on(settings, pg_url))
    answer = await engine.accept(effect_request())
    while (await engine.store.job(answer.job.id)).state != JobState.PROCESSING:
        await asyncio.sleep(0.02)
    await _cut_the_connection_of_the_next_write_to(pg_url, answer.job.id)  # its "downloading"
    outcome = await courier.outcome(answer.job.id, timeout=30)
    assert outcome[0] == "delivered", outcome
    assert len(simulator.submissions) == 1
    assert (await settled(engine, answer.job.id)).state == JobState.DONE
    assert (await engine.balance(user())).total == 9


# --- text no database can hold, on both backends --------------------------------------

BROKEN = "\ud83d"  # half an emoji: a message cut in the middle of one (no UTF-8 spelling)
# Where it cannot be kept it becomes U+FFFD; a NUL is dropped where it cannot be kept.


async def test_a_prompt_and_a_name_with_half_an_emoji_are_accepted_on_both_backends(make_engine, settings, storage_url):
    engine = await make_engine(_on(settings, storage_url), start=False)
    who = replace(user(), name=f"Ann {BROKEN}")
    request = replace(effect_request(who=who), kind="animate", params=Params(prompt=f"a cat {BROKEN}"),
                      reply_to={"chat": 42, "title": f"group {BROKEN}"})
    answer = await engine.accept(request)
    assert isinstance(answer, Accepted), answer
    job = await engine.store.job(answer.job.id)
    assert job.inputs["prompt"] in (f"a cat {BROKEN}", "a cat \ufffd")  # SQLite's JSON keeps it escaped
    assert job.reply_to["title"] in (f"group {BROKEN}", "group \ufffd")
    assert (await engine.balance(who)).total == 9


async def test_forged_keys_and_broken_webhook_text_are_kept_or_refused_never_raised(make_engine, settings, storage_url):
    engine = await make_engine(_on(settings, storage_url), start=False)
    answer = await engine.accept(effect_request())
    # a result button whose data was forged, with a NUL in its effect: refused like any other
    refused = await engine.rerun(press(user()), answer.job.id, reply_to={}, effect="hu\x00la")
    assert isinstance(refused, Rejected)
    # questions and one-use marks under odd keys
    await engine.remember_ask(PLATFORM, "chat\x00", f"m{BROKEN}", {"asked": f"x{BROKEN}\x00"})
    assert await engine.pending_ask(PLATFORM, "chat\x00", f"m{BROKEN}") is not None
    assert await engine.claim_menu(PLATFORM, 1, f"menu\x00{BROKEN}") is True
    assert await engine.claim_menu(PLATFORM, 1, f"menu\x00{BROKEN}") is False
    # a signed webhook whose error text is cut mid-emoji is still kept for its job
    await engine.store.update_job(answer.job.id, state="processing")
    kept = await engine.store.record_result(answer.job.id, "task-1", {"id": "task-1", "status": "failed",
                                                                       "error": f"bad {BROKEN}"})
    assert kept is not None and kept.webhook_result["error"] in (f"bad {BROKEN}", "bad \ufffd")


# --- LISTEN/NOTIFY abuse ----------------------------------------------------------------


async def test_junk_notifications_from_another_database_user_are_ignored_quietly(pg_url, caplog):
    """Anyone who may connect can NOTIFY the bot's channel: a payload that names no job
    (junk, negative, a number of 7,000 digits, digits of another script) wakes nobody and
    logs no error, and a job queued after them is heard as before."""
    listening, writing = await open_store(pg_url), await open_store(pg_url)
    heard: list[int] = []
    listening.on_change(heard.append)
    admin = await asyncpg.connect(pg_url)
    try:
        for payload in ["junk", "-5", "9" * 7000, "\u0661\u0662", "", "99999999999999999999"]:
            await admin.execute("select pg_notify('kling_jobs', $1)", payload)
        await writing.add_user({"key": "test:1", "platform": "test", "name": "Ann", "period": "2024-01-01",
                                "daily_left": 1, "bonus": 0, "created_at": 0.0})
        job_id = await writing.insert_job({"user_key": "test:1", "platform": "test", "reply_to": {},
                                           "model_id": "m", "kind": "effect", "inputs": {}, "state": "queued",
                                           "created_at": 0.0})
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
        assert heard == [job_id]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await admin.close()
        await listening.close()
        await writing.close()


# --- lock order ---------------------------------------------------------------------------


async def test_one_users_cancels_and_grants_at_once_through_two_fronts_all_succeed(make_engine, settings, pg_url):
    """A cancel writes its job row twice (cancelled, then refunded), and PostgreSQL's
    second write checks the row's user (a key-share lock on it) before the cancel takes
    the user's lock; reading the user row to change it must not wait for that lock, or
    two refunds of one user deadlock and one of them fails."""
    roomy = _on(settings, pg_url, lease_seconds=30.0)
    roomy = replace(roomy, quota=replace(roomy.quota, daily_credits=30, max_jobs_per_user=100))
    fronts = [await make_engine(roomy, start=False) for _ in range(2)]
    for front in fronts:
        await front.start(drive=False)
    ids = [(await fronts[0].accept(effect_request())).job.id for _ in range(20)]
    answers = await asyncio.gather(*(fronts[n % 2].cancel(user(), job_id) for n, job_id in enumerate(ids)),
                                   *(fronts[n % 2].grant(user(), 1, by="admin") for n in range(6)),
                                   return_exceptions=True)
    assert not [a for a in answers if isinstance(a, BaseException)], answers
    assert [(await fronts[1].store.job(job_id)).state for job_id in ids] == [JobState.CANCELLED] * len(ids)
    assert (await fronts[1].balance(user())).total == 30 + 6
    ledger = await fronts[1].store.db.fetchrow(
        "select sum(daily_delta) as daily, sum(bonus_delta) as bonus from ledger where user_key = $1", user().key)
    row = await fronts[1].store.user(user().key)
    assert (30 + ledger["daily"], ledger["bonus"]) == (row["daily_left"], row["bonus"])
