"""Claims and wake-ups across processes (issue #15, item 3): a front accepts, a worker
elsewhere drives; an idle worker starts a job another process accepted at once; work
spreads over workers; a webhook that reaches any process wakes the one following the job.

Each engine here has its own store connection (its own pool on PostgreSQL), as separate
machines would; the cross-process wake-ups need PostgreSQL's LISTEN/NOTIFY (SQLite's
processes see each other's jobs at the sparse safety poll, every third of a lease).
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

import pytest

from bot.jobs import JobState, Rejected
from tests.conftest import PLATFORM, effect_request, user
from tests.helpers import RecordingCourier, settled


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _on(settings, url: str):
    """Settings on a store (SQLite file or PostgreSQL database), with leases long enough
    that the sparse safety poll (a third of a lease) cannot pass for a wake-up."""
    return replace(settings, storage=replace(settings.storage, url=url, lease_seconds=30.0))


@pytest.fixture
def shared(settings, storage_url):
    return _on(settings, storage_url)


async def _engine(make_engine, settings, *, drive: bool = True, courier: RecordingCourier | None = None):
    engine = await make_engine(settings, start=False)
    if courier is not None:  # a second courier of its own: the fixture's is the first engine's
        engine.couriers.register(PLATFORM, courier)
    await engine.start(drive=drive)
    return engine


async def test_a_job_a_front_accepts_is_driven_and_delivered_by_a_worker(make_engine, shared, courier, simulator):
    front = await _engine(make_engine, shared, drive=False)
    worker_courier = RecordingCourier()
    worker = await _engine(make_engine, shared, courier=worker_courier)
    answer = await front.accept(effect_request())
    assert (await worker_courier.outcome(answer.job.id, timeout=30))[0] == "delivered"
    job = await settled(worker, answer.job.id)
    assert job.owner == worker.owner and job.state == JobState.DONE
    assert len(simulator.submissions) == 1 and (await front.balance(user())).total == 9
    assert courier.progress_log == [] and courier.delivered == {}  # the front showed nothing of it


async def test_a_front_alone_keeps_jobs_queued_for_a_worker_started_later(make_engine, shared, simulator):
    front = await _engine(make_engine, shared, drive=False)
    answer = await front.accept(effect_request())
    await asyncio.sleep(0.5)
    assert (await front.store.job(answer.job.id)).state == JobState.QUEUED and simulator.submissions == []
    worker_courier = RecordingCourier()
    await _engine(make_engine, shared, courier=worker_courier)
    assert (await worker_courier.outcome(answer.job.id, timeout=30))[0] == "delivered"


async def test_an_idle_worker_starts_a_job_another_process_queued_at_once(make_engine, settings, pg_url, simulator):
    """The store's wake-up (LISTEN/NOTIFY), not the poll: leases of 30 s poll every 10 s."""
    on_pg = _on(settings, pg_url)
    front = await _engine(make_engine, on_pg, drive=False)
    worker = await _engine(make_engine, on_pg, courier=RecordingCourier())
    await asyncio.sleep(0.3)  # the worker's first look found nothing: it now sleeps until woken
    answer = await front.accept(effect_request())
    accepted = time.monotonic()
    while (await worker.store.job(answer.job.id)).state == JobState.QUEUED:
        assert time.monotonic() - accepted < 3.0, "the worker was not woken by the queued job"
        await asyncio.sleep(0.01)
    assert (await worker.store.job(answer.job.id)).owner == worker.owner


async def test_queued_jobs_spread_over_idle_workers(make_engine, shared, simulator):
    """Each worker claims one job at a time up to its own slots: none hoards the queue."""
    one_slot = shared.with_wavespeed(max_concurrent=1)
    front = await _engine(make_engine, one_slot, drive=False)
    couriers = [RecordingCourier(), RecordingCourier()]
    workers = [await _engine(make_engine, one_slot, courier=c) for c in couriers]
    answers = [await front.accept(effect_request(who=user(n))) for n in range(4)]
    for answer in answers:
        await asyncio.wait_for(_delivered_by_one(couriers, answer.job.id), 30)
    owners = {(await settled(workers[0], a.job.id)).owner for a in answers}
    assert owners == {w.owner for w in workers}
    assert len(simulator.submissions) == 4


async def _delivered_by_one(couriers: list[RecordingCourier], job_id: int) -> None:
    while sum(job_id in c.delivered for c in couriers) != 1:
        await asyncio.sleep(0.02)


async def test_a_webhook_reaching_another_process_wakes_the_one_following_the_job(
        make_engine, settings, pg_url, simulator, monkeypatch):
    """WaveSpeed's webhook lands on a front (behind one URL for all processes); the worker
    that follows the job hears of it through the store at once, long before its safety
    poll would look (or its next progress report would read the job row)."""
    monkeypatch.setattr("bot.engine.follow.PROGRESS_TICK", 60.0)
    port = _free_port()
    hooked = _on(settings, pg_url).with_wavespeed(
        webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}",
        expected_run_seconds=60.0)  # the safety poll would wait for about a minute
    front = await _engine(make_engine, hooked, drive=False)  # runs the listener
    # A worker's own listener (its machine's port behind the same URL) receives nothing here.
    worker_hooked = hooked.with_wavespeed(webhook_listen=f"127.0.0.1:{_free_port()}")
    worker_courier = RecordingCourier()
    await _engine(make_engine, worker_hooked, courier=worker_courier)
    started = time.monotonic()
    answer = await front.accept(effect_request())
    assert (await worker_courier.outcome(answer.job.id, timeout=30))[0] == "delivered"
    assert time.monotonic() - started < 10, "delivered by a later look, not woken by the webhook"
    assert [w["status"] for w in simulator.webhooks_sent] == [200]
    assert not any(r["path"].endswith("/result") for r in simulator.requests)


async def test_200_parallel_requests_through_3_fronts_for_3_credits_accept_exactly_3(
        make_engine, shared, simulator):
    """Each front has its own connection (its own pool on PostgreSQL), as separate
    machines would: the user's credits are spent once, whichever front each request hits."""
    roomy = replace(shared, quota=replace(shared.quota, daily_credits=3, max_jobs_per_user=1000))
    fronts = [await _engine(make_engine, roomy, drive=False) for _ in range(3)]
    answers = await asyncio.gather(*(fronts[n % 3].accept(effect_request()) for n in range(200)))
    accepted = [a for a in answers if not isinstance(a, Rejected)]
    assert len(accepted) == 3 and len({a.job.id for a in accepted}) == 3
    assert all("credits" in a.text for a in answers if isinstance(a, Rejected))
    assert (await fronts[1].balance(user())).total == 0
    assert simulator.submissions == []  # fronts drive nothing
