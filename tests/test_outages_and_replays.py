"""Defects a review found on PostgreSQL, where transactions of several processes
interleave and a database outage can outlast a lease: one task's webhook kept by two jobs,
and a video posted twice after an outage longer than a lease."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bot.config import load_settings
from bot.engine.reconcile import Reconciler
from bot.jobs import JobState
from bot.wavespeed import Prediction, iso_time
from tests.conftest import PLATFORM, effect_request
from tests.helpers import RecordingCourier
from tests.test_postgres_store import NOW, add_user, new_job

MODEL = "kwaivgi/kling-v2.1-i2v-standard"


@pytest.mark.both_backends
async def test_one_tasks_webhook_at_two_unconfirmed_jobs_urls_is_kept_by_one_of_them(make_store):
    """A replay of task T's delivery to job B's URL racing the real one to job A's: both
    used to find T unclaimed and both kept it; then neither could adopt it (each saw it
    claimed by the other), and a made, billed video was refunded or submitted again."""
    first, second = await make_store(), await make_store()
    wavespeed = load_settings(None, env={}).wavespeed
    await add_user(first)
    for trial in range(20):
        a = await new_job(first, state=JobState.SUBMITTING.value, submit_started_at=NOW, submit_ended_at=NOW + 1)
        b = await new_job(first, state=JobState.SUBMITTING.value, submit_started_at=NOW, submit_ended_at=NOW + 1)
        task = Prediction.from_data({"id": f"task-{trial}", "status": "completed", "model": MODEL,
                                     "outputs": ["https://x.wavespeed.ai/v.mp4"], "created_at": iso_time(NOW + 0.5)})
        await asyncio.gather(Reconciler(None, first, wavespeed, lambda: NOW + 2).keep_report(a, task),
                             Reconciler(None, second, wavespeed, lambda: NOW + 2).keep_report(b, task))
        kept = [(await first.job(job)).webhook_result is not None for job in (a, b)]
        assert kept.count(True) == 1, f"trial {trial}: {kept}"


class SlowUpload(RecordingCourier):
    """A chat whose upload takes seconds, naming who posted what."""

    def __init__(self, name: str, posts: list[tuple[str, int, str]]):
        super().__init__()
        self.name, self.posts = name, posts

    async def deliver(self, job, video) -> None:
        self.posts.append((self.name, job.id, "upload starts"))
        await asyncio.sleep(3.0)
        await super().deliver(job, video)
        self.posts.append((self.name, job.id, "posted"))


async def test_an_outage_longer_than_a_lease_does_not_post_a_video_twice(make_engine, settings, pg_url,
                                                                        pg_server, simulator):
    """Worker A uploads while PostgreSQL is down for longer than a lease: every lease
    looks lapsed when it is back. Worker B used to take the job over before A renewed
    and post the video again; now a worker takes nothing over until a lease after an
    outage, by when every live worker has renewed its own."""
    posts: list[tuple[str, int, str]] = []
    short = replace(settings, storage=replace(settings.storage, url=pg_url, lease_seconds=3.0))
    a = await make_engine(short, start=False)
    a.couriers.register(PLATFORM, SlowUpload("A", posts))
    await a.start()
    b = await make_engine(short, start=False)
    b.couriers.register(PLATFORM, SlowUpload("B", posts))
    answer = await a.accept(effect_request())
    while not posts:
        await asyncio.sleep(0.02)
    await b.start()  # another machine's idle worker
    await pg_server.stop()
    await asyncio.sleep(4.5)  # longer than the 3 s lease
    await pg_server.start()
    job = None
    for _ in range(300):
        job = await a.store.job(answer.job.id)
        if job.state.finished:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(4)  # a lease and more: B had its chance to take it
    assert [p for p in posts if p[2] == "posted"] == [("A", answer.job.id, "posted")]
    assert (await a.store.job(answer.job.id)).state == JobState.DONE


async def test_a_transaction_whose_connection_the_server_cuts_is_an_outage_not_a_crash(pg_url):
    """The server ends a transaction's connection (a restart, an admin): the statement or
    the commit must say StoreOffline, which the pipeline waits out, not the driver's
    InterfaceError ("the underlying connection is closed"), which made a delivered job
    "crash" and be driven again: its video was posted a second time."""
    import asyncpg

    from bot.store import StoreOffline
    from bot.store.postgres import PostgresStore

    store = await PostgresStore.open(pg_url, listen=False)
    admin = await asyncpg.connect(pg_url)
    try:
        with pytest.raises(StoreOffline):
            async with store.transaction():
                pid = await store.db.fetchval("select pg_backend_pid()")
                await admin.execute("select pg_terminate_backend($1)", pid)
                await store.db.fetchval("select 1")
        assert await store.db.fetchval("select 1") == 1  # the pool carries on
    finally:
        await admin.close()
        await store.close()
