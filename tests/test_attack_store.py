"""Attacks on the shared store (issue #15): PostgreSQL outages, concurrent store objects,
hostile strings and notifications. Each test is a defect found and fixed."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg

from bot.jobs import JobState
from tests.conftest import effect_request, user
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
