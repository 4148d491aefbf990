"""An admin's pause (#17): new requests refused with the reason, queued jobs waiting (or
refunded), running ones finishing; held in the store across restarts and processes."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs import Accepted, Rejected
from tests.backends import ledger_entries, process_config
from tests.conftest import effect_request, user
from tests.helpers import checked, job_in_state
from tests.test_cli import kling

pytestmark = pytest.mark.both_backends

PAUSED = "The bot is paused by its admins (db upgrade). No video can be started right now; please try again later."


async def until(check, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not (found := await checked(check())):
            await asyncio.sleep(0.05)
    return found


async def test_a_paused_bot_refuses_requests_with_the_reason_before_any_cost(make_engine, simulator):
    engine = await make_engine()
    await engine.pause("db upgrade", "telegram:1")
    answer = await engine.accept(effect_request())
    assert isinstance(answer, Rejected) and answer.text == PAUSED
    # The adapters' check before any download says the same.
    refusal = await engine.precheck(user(), "effect", None, effect_request().params)
    assert refusal is not None and refusal.text == PAUSED
    assert (await engine.balance(user())).total == 10
    assert simulator.submissions == [] and await engine.store.user_jobs(user().key, active_only=False) == []
    assert await engine.resume("telegram:1") is True
    assert isinstance(await engine.accept(effect_request()), Accepted)
    assert await engine.resume("telegram:1") is False  # nothing to lift


async def test_queued_jobs_wait_while_paused_and_running_ones_finish(make_engine, courier, simulator):
    engine = await make_engine(max_concurrent=1)
    first = await engine.accept(effect_request())
    second = await engine.accept(effect_request("jelly_press"))
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    await until(lambda: job_in_state(engine, first.job.id, "processing"))
    await engine.pause("", "discord:9")
    assert (await courier.outcome(first.job.id))[0] == "delivered"  # running: it finishes
    await asyncio.sleep(1.5)  # a slot is free, yet the queued job waits
    assert (await engine.store.job(second.job.id)).state.value == "queued"
    assert len(simulator.submissions) == 1
    await engine.resume("discord:9")
    assert (await courier.outcome(second.job.id))[0] == "delivered"
    assert len(simulator.submissions) == 2


async def test_pause_with_refund_cancels_and_refunds_queued_jobs_and_tells_their_owners(make_engine, courier,
                                                                                          simulator):
    engine = await make_engine(start=False)  # nothing drives them: they stay queued
    jobs = [await engine.accept(effect_request(who=user(n))) for n in (1, 2)]
    assert all(isinstance(a, Accepted) for a in jobs)
    assert (await engine.balance(user(1))).total == 9
    refunded = await engine.pause("budget", "cli", refund=True)
    assert sorted(job.id for job in refunded) == sorted(a.job.id for a in jobs)
    for n, accepted in zip((1, 2), jobs, strict=True):
        job = await engine.store.job(accepted.job.id)
        assert job.state.value == "cancelled" and job.failure == "cancelled" and job.charged_usd == 0
        assert (await engine.balance(user(n))).total == 10
        assert await ledger_entries(engine.store, accepted.job.id) == ["reserve", "refund"]
        assert courier.failures[accepted.job.id] == \
            "not started: the bot was paused by its admins (budget); 1 credit refunded."
    await engine.start()
    await asyncio.sleep(0.5)
    assert simulator.submissions == []


async def test_a_pause_holds_across_a_restart(make_engine, settings):
    first = await make_engine()
    await first.pause("db upgrade", "telegram:1")
    await first.close()
    again = await make_engine()  # a new process on the same database
    pause = await again.paused()
    assert pause is not None and (pause.reason, pause.by) == ("db upgrade", "telegram:1")
    assert (await again.accept(effect_request())).text == PAUSED


async def test_a_pause_from_the_command_line_holds_in_a_running_process(make_engine, courier, simulator,
                                                                         database, tmp_path):
    engine = await make_engine(start=False)
    accepted = await engine.accept(effect_request())
    assert isinstance(accepted, Accepted)
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("pause", "db upgrade", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Paused (db upgrade): new requests are refused. " \
                                  "Queued jobs wait for kling-bot resume; running ones finish."
    await until(lambda: engine.paused())  # within the 2 s a process trusts what it read
    assert (await engine.accept(effect_request(who=user(2)))).text == PAUSED
    await engine.start()
    await asyncio.sleep(1.5)
    assert (await engine.store.job(accepted.job.id)).state.value == "queued" and simulator.submissions == []
    done = kling("resume", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "Resumed: requests are accepted again and queued jobs start."
    assert (await courier.outcome(accepted.job.id))[0] == "delivered"


async def test_pause_refund_from_the_command_line(make_engine, simulator, database, tmp_path):
    engine = await make_engine(start=False)
    accepted = await engine.accept(effect_request())
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("pause", "--refund", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Paused: new requests are refused. 1 queued job refunded."
    assert (await engine.store.job(accepted.job.id)).state.value == "cancelled"
    assert (await engine.balance(user())).total == 10
