"""Never pay WaveSpeed twice, never pay for a video nobody gets (in one process).

Each test scripts the simulator the way a flaky WaveSpeed behaves and asserts what
the money says: how many tasks WaveSpeed created (each one is billed), what the user
received, and what the user was charged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import aiohttp
import pytest

from bot.config import QuotaSettings
from bot.devtools.simulator import Simulator
from bot.jobs import JobState
from tests.conftest import API_KEY, PLATFORM, effect_request, user
from tests.helpers import image_bytes, settled

EFFECTS_SUBMIT = "/api/v3/kwaivgi/kling-effects"

pytestmark = pytest.mark.both_backends


def _submits(simulator: Simulator) -> int:
    return sum(1 for r in simulator.requests if r["path"] == EFFECTS_SUBMIT)


@pytest.mark.parametrize("kind", ["accept_drop", "malformed", "accept_hang"])
async def test_unconfirmed_submit_whose_task_exists_is_adopted_not_paid_twice(
        make_engine, courier, simulator, kind):
    engine = await make_engine(request_timeout=0.5)
    simulator.fail_next("submit", kind=kind, delay=3.0 if kind == "accept_hang" else 0.0)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert _submits(simulator) == 1 and len(simulator.tasks) == 1  # one paid task, followed
    job = await settled(engine, answer.job.id)
    assert job.prediction_id == next(iter(simulator.tasks))
    assert (await engine.balance(user())).total == 9


async def test_several_tasks_in_the_window_are_not_guessed_between(make_engine, courier, simulator, caplog):
    engine = await make_engine(request_timeout=1.0)
    simulator.fail_next("submit", kind="accept_hang", delay=3.0)
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while not simulator.tasks:  # ours exists, its answer hangs: another client submits too
            await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as session:
        body = {"image": "data:image/jpeg;base64," + __import__("base64").b64encode(image_bytes()).decode(),
                "effect_scene": "squish"}
        async with session.post(f"{simulator.base_url}{EFFECTS_SUBMIT}", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 200
    kind, reason = await courier.outcome(answer.job.id)
    assert kind == "failed" and reason.endswith("Your 1 credit was refunded.")
    assert len(simulator.tasks) == 2 and _submits(simulator) == 2  # ours and the other client's
    assert (await settled(engine, answer.job.id)).prediction_id is None  # neither adopted
    assert "not guessing" in caplog.text and all(task in caplog.text for task in simulator.tasks)
    assert (await engine.balance(user())).total == 10


async def test_completed_without_a_video_is_asked_again(engine, courier, simulator):
    simulator.fail_next("result", kind="no_outputs", times=2)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert len(simulator.tasks) == 1 and (await engine.balance(user())).total == 9


@pytest.mark.parametrize("status, times", [(404, 1), (404, 2), (500, 6)])
async def test_an_output_url_that_fails_is_asked_for_afresh(engine, courier, simulator, status, times):
    simulator.fail_next("output", status, times=times)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id, timeout=60))[0] == "delivered"
    assert len(simulator.tasks) == 1 and (await engine.balance(user())).total == 9


async def test_an_output_that_stays_gone_fails_after_a_few_tries(engine, courier, simulator):
    simulator.fail_next("output", 404, times=10)
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id, timeout=60)
    assert kind == "failed" and reason.startswith("The finished video could not be fetched from WaveSpeed.")
    outputs = [r for r in simulator.requests if r["path"].startswith("/outputs/")]
    assert len(outputs) == 5  # the URL, then asked for afresh four times: bounded
    assert (await engine.balance(user())).total == 10


async def test_a_stalled_download_is_given_up_and_tried_again(make_engine, courier, simulator):
    engine = await make_engine(request_timeout=0.5)
    simulator.fail_next("output", kind="stall", delay=5.0)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert ("output", "stall") in simulator.faults_served


async def test_submit_waits_as_long_as_retry_after_says(engine, courier, simulator):
    simulator.fail_next("submit", 429, 429, retry_after=5, message="too many requests")
    started = time.monotonic()
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id, timeout=30))[0] == "delivered"
    assert time.monotonic() - started >= 5.0  # the backoff alone would retry after 2-4 s
    assert _submits(simulator) == 2 and len(simulator.tasks) == 1


async def test_retry_after_past_the_job_timeout_refunds_at_once(engine, courier, simulator):
    simulator.fail_next("submit", 429, 429, retry_after=3600, message="too many requests")
    started = time.monotonic()
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id)
    assert kind == "failed" and reason == ("WaveSpeed is busy or unreachable right now. Please try "
                                           "again later. Your 1 credit was refunded.")
    assert time.monotonic() - started < 5 and _submits(simulator) == 1 and not simulator.tasks
    assert (await engine.balance(user())).total == 10


async def test_a_flaky_api_never_double_submits_nor_refunds_a_made_video(settings, courier, caplog):
    """30% of API calls fail in every transient way; 20 jobs all end, money intact."""
    caplog.set_level(logging.WARNING)
    flaky = Simulator(job_seconds=0.3, api_key=API_KEY, video_seconds=0.5, fault_rate=0.3, seed=20261122)
    flaky.slow_seconds = 1.0  # past the client's 0.5 s timeout
    await flaky.start()
    from bot.engine import Engine
    custom = replace(settings.with_wavespeed(base_url=flaky.base_url, request_timeout=0.5, job_timeout=90,
                                             max_concurrent=4),
                     quota=QuotaSettings(daily_credits=100, max_jobs_per_user=50))
    engine = await Engine.from_settings(custom)
    engine.register(PLATFORM, courier)
    await engine.start()
    try:
        answers = [await engine.accept(effect_request(who=user(n % 5))) for n in range(20)]
        outcomes = await asyncio.gather(*(courier.outcome(a.job.id, timeout=150) for a in answers))
        jobs = [await settled(engine, a.job.id) for a in answers]
    finally:
        await engine.close()
        await flaky.close()
    assert len(flaky.faults_served) >= 10  # the faults really happened
    held = [job.prediction_id for job in jobs if job.prediction_id]
    assert len(held) == len(set(held))  # no task followed by two jobs
    assert set(flaky.tasks) == set(held)  # every task WaveSpeed made (and billed) has its job ...
    assert all(job.state == JobState.DONE for job in jobs if job.prediction_id)  # ... and was delivered
    assert sum(kind == "delivered" for kind, _ in outcomes) == len(held) >= 15  # failures: no task made
    assert sum(1 for r in flaky.requests if r["path"] == EFFECTS_SUBMIT) <= 4 * len(jobs)  # bounded


async def test_a_single_refused_result_check_does_not_refund_a_made_video(engine, courier, simulator):
    simulator.fail_next("result", 404, 404, message="prediction not found")  # e.g. a proxy's blip
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert (await engine.balance(user())).total == 9


def test_odd_field_types_from_the_api_read_as_absent_not_as_a_crash():
    from bot.wavespeed import Prediction, Transient, _unwrap
    odd = Prediction.from_data({"id": 7, "status": None, "urls": "x", "outputs": ["a.mp4", 3, None],
                                "has_nsfw_contents": True, "timings": {"inference": {"ms": 1}},
                                "error": {"x": 1}, "created_at": 5})
    assert (odd.id, odd.status, odd.result_url, odd.outputs, odd.nsfw, odd.inference_ms, odd.error,
            odd.created_at) == ("7", "created", None, ["a.mp4"], [], None, "", None)
    with pytest.raises(Transient):  # an envelope whose code is not a number is unreadable
        _unwrap(200, {"code": None, "data": {"id": "x"}})


async def test_a_rival_submit_still_in_flight_in_another_process_is_waited_for(make_engine, courier, simulator):
    """Process A's submit has made its task but not answered yet; process B's submit of the
    same model made nothing. B must not take A's task for its own."""
    first = await make_engine(request_timeout=10.0)
    second = await make_engine(request_timeout=10.0)
    simulator.fail_next("submit", kind="accept_hang", delay=4.0)  # A: created, answer late
    simulator.fail_next("submit", 500, 5000)  # B: refused before any task
    a = await first.accept(effect_request(who=user(1)))
    async with asyncio.timeout(10):
        while not simulator.tasks:
            await asyncio.sleep(0.02)
    b = await second.accept(effect_request(who=user(2)))
    assert [(await courier.outcome(x.job.id, timeout=40))[0] for x in (a, b)] == ["delivered"] * 2
    jobs = [await settled(first, a.job.id), await settled(second, b.job.id)]
    assert jobs[0].prediction_id != jobs[1].prediction_id and len(simulator.tasks) == 2
    assert {j.prediction_id for j in jobs} == set(simulator.tasks)
