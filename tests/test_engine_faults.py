"""The engine survives what WaveSpeed and chats throw at it, and never loses credits."""

from __future__ import annotations

import pytest
from aiohttp import web

from bot.engine.follow import PollPlan
from bot.jobs import JobState
from bot.wavespeed import WaveSpeedClient
from tests.conftest import API_KEY, effect_request, user

pytestmark = pytest.mark.both_backends


def _result_checks(simulator):
    return [r for r in simulator.requests if r["path"].endswith("/result")]


@pytest.mark.parametrize("status, code", [(429, 429), (500, 5000), (502, 502), (503, 5003), (504, 5004)])
async def test_errors_while_polling_are_survived(engine, courier, simulator, status, code):
    simulator.fail_next("result", status, code, times=3, retry_after=0.01 if status == 429 else None)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert len(simulator.submissions) == 1
    assert len(_result_checks(simulator)) >= 4
    assert (await engine.balance(user())).total == 9


async def test_result_checks_that_time_out_are_survived(make_engine, courier, simulator):
    engine = await make_engine(request_timeout=0.3)
    simulator.fail_next("result", 0, delay=1.0, times=2)  # answers too late to count
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert len(simulator.submissions) == 1
    assert len(_result_checks(simulator)) >= 3


async def test_rate_limited_submit_waits_and_submits_once(make_engine, courier, simulator):
    engine = await make_engine()
    simulator.fail_next("submit", 429, 429, retry_after=0.2, message="too many requests")
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    submits = [r for r in simulator.requests if r["path"] == "/api/v3/kwaivgi/kling-effects"]
    assert len(submits) == 2 and len(simulator.tasks) == 1
    assert (await engine.store.job_row(answer.job.id))["submit_attempts"] == 1


async def test_unconfirmed_submit_that_created_nothing_is_sent_again_once(engine, courier, simulator):
    simulator.fail_next("submit", 500, 5000, message="internal error")  # refused before any task
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    submits = [r for r in simulator.requests if r["path"] == "/api/v3/kwaivgi/kling-effects"]
    assert len(submits) == 2 and len(simulator.tasks) == 1  # the history showed no task first
    assert any(r["path"] == "/api/v3/predictions" for r in simulator.requests)
    assert (await engine.balance(user())).total == 9


async def test_refused_api_key_fails_clearly_without_showing_the_key(make_engine, settings, courier, caplog):
    engine = await make_engine(api_key="wrong-key-SECRET-123")
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id)
    assert reason.startswith("The bot's WaveSpeed account refused the job; the operator has been told.")
    assert "wrong-key-SECRET-123" not in reason and "wrong-key-SECRET-123" not in caplog.text
    assert "WAVESPEED_API_KEY" in caplog.text  # the operator's log says what to fix
    assert (await engine.balance(user())).total == 10


async def test_moderated_request_is_refused_and_refunded(engine, courier, simulator):
    simulator.plan_outcome("moderated")
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id)
    assert reason.startswith("Kling's content filter refused this photo or prompt.")
    assert (await engine.balance(user())).total == 10


async def test_stuck_job_times_out_and_is_refunded(make_engine, courier, simulator):
    engine = await make_engine(job_timeout=0.8)
    simulator.plan_outcome("stuck")
    answer = await engine.accept(effect_request())
    kind, reason = await courier.outcome(answer.job.id)
    assert kind == "failed"
    assert reason == "The video took longer than 0.8 s and was stopped. Your 1 credit was refunded."
    assert (await engine.store.job(answer.job.id)).state == JobState.FAILED
    assert (await engine.balance(user())).total == 10


async def test_video_download_errors_are_retried(engine, courier, simulator):
    simulator.fail_next("output", 503, times=2)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"


async def test_flaky_chat_delivery_is_retried_and_charged_once(engine, courier):
    courier.fail_deliveries = 1
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert courier.deliver_calls == 2
    assert (await engine.balance(user())).total == 9


async def test_nsfw_flag_reaches_the_courier(engine, courier, simulator):
    simulator.plan_outcome("nsfw")
    answer = await engine.accept(effect_request())
    await courier.outcome(answer.job.id)
    assert courier.delivered_videos[answer.job.id].nsfw is True


async def test_global_limit_on_jobs_at_wavespeed_and_queue_positions(make_engine, courier, simulator):
    engine = await make_engine(max_concurrent=1, start=False)
    answers = [await engine.accept(effect_request(who=user(n))) for n in range(3)]
    assert [a.position for a in answers] == [1, 2, 3]
    assert "position 3 in the queue" in answers[2].text
    await engine.start()
    for answer in answers:
        assert (await courier.outcome(answer.job.id))[0] == "delivered"
    # each submit arrived only after the previous task's video was fetched
    paths = [r["path"] for r in simulator.requests]
    submits = [i for i, p in enumerate(paths) if p == "/api/v3/kwaivgi/kling-effects"]
    outputs = [i for i, p in enumerate(paths) if p.startswith("/outputs/")]
    assert submits[1] > outputs[0] and submits[2] > outputs[1]
    last = answers[2].job.id
    positions = [p.position for j, p in courier.progress_log if j == last and p.stage == "queued"]
    assert positions == [2, 1]


def _checks(plan: PollPlan, until: float) -> list[float]:
    """When a task is checked, from submit until it ends at ``until``."""
    moments, now = [], 0.0
    while not moments or moments[-1] < until:
        now += plan.delay(now)
        moments.append(now)
    return moments


def test_poll_plan_is_sparse_early_dense_around_the_likely_end_and_never_above_the_cap():
    fresh = PollPlan(expected=90, spread=45, max_gap=15)  # the catalog's guess for effects
    checks = _checks(fresh, until=60)  # a 60 s job
    assert checks[:3] == [15, 30, 45] and len(checks) <= 12
    assert checks[-1] - 60 <= 3  # seen within 3 s of its end: never a whole poll_interval late
    learnt = PollPlan(expected=60, spread=1.2, max_gap=15)  # after earlier 60 s jobs
    checks = _checks(learnt, until=60)
    assert len(checks) <= 8 and checks[-1] - 60 <= 0.4
    assert all(fresh.delay(t) <= 15 for t in range(0, 600, 7))
    assert all(PollPlan(90, 45, 0.05).delay(t) <= 0.05 for t in range(0, 300, 7))
    assert fresh.delay(400) == 15 and learnt.delay(60.5) == 0.4  # late: back off, up to the cap


async def test_result_url_on_another_host_never_receives_the_key(simulator, aiohttp_server):
    seen = []

    async def elsewhere(request):
        seen.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", elsewhere)
    other = await aiohttp_server(app)
    client = WaveSpeedClient(simulator.base_url, API_KEY)
    try:
        submitted = await client.submit("kwaivgi/kling-effects", {
            "effect_scene": "hula", "image": "data:image/jpeg;base64," + _b64_photo()})
        result = await client.result(submitted.id, str(other.make_url("/steal")))
    finally:
        await client.close()
    assert result.id == submitted.id  # answered by the API's own result path
    assert seen == []


def _b64_photo() -> str:
    import base64

    from tests.helpers import image_bytes
    return base64.b64encode(image_bytes()).decode()
