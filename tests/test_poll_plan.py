"""The poll plan as WaveSpeed sees it: how many result checks a task gets, and how soon
after its end one comes; with webhooks, how soon a lost webhook's task is checked."""

from __future__ import annotations

import itertools
import random
import socket
import statistics
import time

import aiohttp
import pytest

from bot.devtools.simulator import Simulator
from bot.engine import follow
from bot.engine.follow import PollPlan
from bot.wavespeed import data_uri
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import image_bytes, settled

SDK_MEDIAN_WAIT = 0.5  # the official SDK checks every second: half a second late, typically


@pytest.fixture
def hooked(settings):
    """Settings with webhooks on, the listener on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}")


def _checks(plan: PollPlan, ends_at: float, *, webhooks: bool = False) -> list[float]:
    """The moments (since submit) a task ending at ``ends_at`` is checked, the last one seeing it done."""
    moments, now = [], 0.0
    while not moments or moments[-1] < ends_at:
        now += plan.safety_delay(now) if webhooks else plan.delay(now)
        moments.append(now)
    return moments


def _spread_runs(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [60 + rng.uniform(-7, 7) for _ in range(count)]


def test_a_warm_plan_checks_a_60s_task_at_most_12_times_and_sees_it_about_as_soon_as_the_sdk():
    checks_per_task, median_waits, latest_waits = [], [], []
    for history in range(30):  # what 10 earlier jobs taught, 30 times over
        plan = PollPlan.learnt(_spread_runs(10, seed=history), max_gap=15)
        ends = _spread_runs(100, seed=1000 + history)  # tasks like the learnt ones
        checks = [_checks(plan, end) for end in ends]
        waits = [moments[-1] - end for moments, end in zip(checks, ends, strict=True)]
        checks_per_task.append(statistics.fmean(len(moments) for moments in checks))
        median_waits.append(statistics.median(waits))
        latest_waits.append(max(waits))
        assert all(b - a <= 15 for moments in checks for a, b in itertools.pairwise([0, *moments]))
    assert statistics.fmean(checks_per_task) <= 12
    assert statistics.fmean(median_waits) <= SDK_MEDIAN_WAIT + 0.05
    assert max(latest_waits) < 4  # even a task past the latest likely end is seen within seconds


def test_the_checks_follow_where_learnt_runs_cluster():
    runs = [50.0] * 8 + [58.0, 62.0, 70.0]  # most end at 50 s, a few much later
    checks = PollPlan.learnt(runs, max_gap=15).checks
    assert any(50 <= moment <= 50.5 for moment in checks)  # where most end, one is seen at once
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert gaps[0] < statistics.fmean(gaps) and checks[-1] >= 70  # dense there, up to the latest


def test_one_run_gives_a_window_around_it_and_a_later_end_is_still_seen_soon():
    plan = PollPlan.learnt([60.0], max_gap=15)  # one earlier job: the next may end seconds off
    assert plan.checks[0] < 59 and plan.checks[-1] > 61
    checks = _checks(plan, 66)  # well past the window
    assert len(checks) <= 20 and checks[-1] - 66 < 3


@pytest.mark.parametrize("plan", [PollPlan(90, 45, 15), PollPlan(90, 45, 0.05), PollPlan.learnt([0.3], 15),
                                  PollPlan.learnt(_spread_runs(20, seed=3), 15), PollPlan(5, 1, 15)],
                         ids=["fresh", "fast-config", "tiny-runs", "learnt", "expected-run"])
def test_a_task_is_never_left_unchecked(plan):
    for elapsed in [0, 0.1, 1, 4.99, 30, 59.5, 60, 61, 200, 900]:
        assert 0 < plan.delay(elapsed) <= plan.max_gap
        assert 0 < plan.safety_delay(elapsed) <= follow.WEBHOOK_SAFETY_GAP


@pytest.mark.parametrize("ends_at", [0.3, 5, 12, 60, 90, 134, 300])
def test_with_webhooks_a_fresh_bot_checks_within_30s_of_any_end(ends_at):
    fresh = PollPlan(90, 45, 15)  # the catalog's guess for effects: the task's length is unknown
    assert _checks(fresh, ends_at, webhooks=True)[-1] - ends_at < 30


def test_with_webhooks_a_warm_60s_task_gets_at_most_2_checks_before_its_end():
    plan = PollPlan.learnt(_spread_runs(10, seed=4), max_gap=15)
    for end in _spread_runs(50, seed=5):
        checks = _checks(plan, end, webhooks=True)
        assert len(checks) - 1 <= 2  # those before the end: the webhook comes then
        assert checks[-1] - end < 30  # were it lost, a check comes soon after


def _result_gets(simulator: Simulator, task_id: str) -> int:
    return sum(1 for r in simulator.requests if r["method"] == "GET" and r["path"].endswith(f"/{task_id}/result"))


async def test_a_lost_webhook_on_a_fresh_bot_is_seen_on_the_safety_cadence_not_after_the_guess(
        make_engine, hooked, courier, simulator, monkeypatch):
    # The cadence is 25 s; a shorter one keeps the test quick. Without it, the catalog's
    # 90 s guess (+ half) passes before the first check.
    monkeypatch.setattr(follow, "WEBHOOK_SAFETY_GAP", 2.0, raising=False)
    engine = await make_engine(hooked)
    simulator.fail_next("webhook", kind="drop")
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id, timeout=15))[0] == "delivered"
    [task] = simulator.tasks.values()
    assert time.monotonic() - task.ends_at(simulator.job_seconds) < 2.0 + 3.0  # the gap, plus ample slack
    assert _result_gets(simulator, task.id) == 1
    assert simulator.webhooks_sent == [] and (await engine.balance(user())).total == 9


async def test_a_warm_bot_checks_tasks_whose_runs_vary_a_few_times_each(make_engine, courier):
    sim = Simulator(job_seconds=3.0, api_key=API_KEY, video_seconds=1.0, run_spread=0.4, seed=15)
    await sim.start()
    try:
        engine = await make_engine(base_url=sim.base_url, poll_interval=15.0, max_concurrent=8)
        learnt = [await engine.accept(effect_request(who=user(f"warm{n}"))) for n in range(5)]
        for answer in learnt:
            assert (await courier.outcome(answer.job.id))[0] == "delivered"
            await settled(engine, answer.job.id)
        before = {task.id for task in sim.tasks.values()}
        measured = [await engine.accept(effect_request(who=user(f"job{n}"))) for n in range(3)]
        for answer in measured:
            assert (await courier.outcome(answer.job.id))[0] == "delivered"
        for task in (t for t in sim.tasks.values() if t.id not in before):
            assert 1 <= _result_gets(sim, task.id) <= 12
    finally:
        await sim.close()


async def test_the_simulator_varies_run_times_and_reports_inference_without_the_queue():
    sim = Simulator(job_seconds=10.0, run_spread=2.0, seed=1)
    base = await sim.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session:
            for _ in range(3):
                async with session.post(f"{base}/api/v3/kwaivgi/kling-effects", json={
                        "image": data_uri(image_bytes(), "image/jpeg"), "effect_scene": "hula"}) as resp:
                    assert resp.status == 200
        tasks = list(sim.tasks.values())
        ends = {round(task.run_seconds(sim.job_seconds), 3) for task in tasks}
        assert len(ends) == 3 and all(8 <= end <= 12 for end in ends)  # each task its own run
        for task in tasks:
            task.created -= 20  # ended long ago
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer k"}) as session, \
                    session.get(f"{base}/api/v3/predictions/{task.id}/result") as resp:
                data = (await resp.json())["data"]
            assert data["status"] == "completed"
            # WaveSpeed's inference time is the model's: shorter than the task's time since created_at
            assert 0 < data["timings"]["inference"] < task.run_seconds(sim.job_seconds) * 1000
    finally:
        await sim.close()
