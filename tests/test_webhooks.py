"""Webhook completion end to end: the simulator signs and sends, the engine listens."""

from __future__ import annotations

import asyncio
import base64
import socket

import aiohttp
import pytest

from bot.config import ConfigError, load_settings
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import image_bytes, settled

EFFECTS_SUBMIT = "/api/v3/kwaivgi/kling-effects"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hooked(settings):
    """Settings with webhooks on: the listener on a free loopback port, no secret given
    (the engine fetches it from WaveSpeed, here the simulator)."""
    port = _free_port()
    return settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}")


def _result_gets(simulator) -> int:
    return sum(1 for r in simulator.requests if r["path"].endswith("/result"))


async def test_the_webhook_finishes_the_job_without_result_polling(make_engine, hooked, courier, simulator):
    engine = await make_engine(hooked)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    [submit] = [r for r in simulator.requests if r["path"].startswith(EFFECTS_SUBMIT)]
    assert f"/wavespeed/jobs/{answer.job.id}" in submit["path"]  # the URL names the job
    assert [w["status"] for w in simulator.webhooks_sent] == [200]  # verified and accepted
    assert _result_gets(simulator) == 0
    assert (await engine.balance(user())).total == 9


async def _learn_run_time(engine, courier) -> None:
    """One job first, so the engine knows how long these take (the safety poll's timing)."""
    first = await engine.accept(effect_request(who=user(99)))
    assert (await courier.outcome(first.job.id))[0] == "delivered"
    await settled(engine, first.job.id)


@pytest.mark.parametrize("fault", ["drop", "bad_signature", "stale"])
async def test_a_lost_or_forged_webhook_is_covered_by_the_safety_poll(make_engine, hooked, courier, simulator,
                                                                      fault):
    engine = await make_engine(hooked)
    await _learn_run_time(engine, courier)
    simulator.fail_next("webhook", kind=fault)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    if fault != "drop":
        assert simulator.webhooks_sent[-1]["status"] == 401  # refused, not believed
    assert 1 <= _result_gets(simulator) <= 2
    assert len(simulator.tasks) == 2 and (await engine.balance(user())).total == 9


async def test_a_duplicate_webhook_delivers_once(make_engine, hooked, courier, simulator):
    engine = await make_engine(hooked)
    simulator.fail_next("webhook", kind="duplicate")
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    await asyncio.sleep(0.3)
    assert [w["status"] for w in simulator.webhooks_sent] == [200, 200]
    assert courier.deliver_calls == 1 and (await engine.balance(user())).total == 9


async def test_the_webhook_settles_an_unconfirmed_submit_among_several_tasks(make_engine, hooked, courier,
                                                                            simulator):
    engine = await make_engine(hooked.with_wavespeed(request_timeout=1.0))
    simulator.fail_next("submit", kind="accept_hang", delay=3.0)
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while not simulator.tasks:
            await asyncio.sleep(0.02)
    ours = next(iter(simulator.tasks))
    async with aiohttp.ClientSession() as session:  # another client's task in the same window
        body = {"image": "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode(),
                "effect_scene": "squish"}
        async with session.post(f"{simulator.base_url}{EFFECTS_SUBMIT}", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
            assert resp.status == 200
    assert (await courier.outcome(answer.job.id))[0] == "delivered"  # history alone could not tell
    assert (await settled(engine, answer.job.id)).prediction_id == ours
    assert len(simulator.tasks) == 2 and (await engine.balance(user())).total == 9


@pytest.mark.parametrize("url, ok", [("https://bot.example.com/hooks", True), ("http://127.0.0.1:8080", True),
                                     ("http://bot.example.com", False), ("ftp://x", False)])
def test_webhook_url_must_be_https_but_for_loopback(tmp_path, url, ok):
    config = tmp_path / "config.toml"
    config.write_text(f'[wavespeed]\nwebhook_url = "{url}"\n')
    if ok:
        assert load_settings(config, env={}).wavespeed.webhook_url == url
    else:
        with pytest.raises(ConfigError, match="webhook_url must be an https:// URL"):
            load_settings(config, env={})


async def test_a_completed_webhook_without_a_video_prompts_a_check_not_a_refund(make_engine, hooked, courier,
                                                                               simulator):
    import json
    import time
    engine = await make_engine(hooked)
    simulator.fail_next("webhook", kind="drop")  # the real one is lost; a bare one arrives
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while not (job := await engine.store.job(answer.job.id)).prediction_id:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)  # the task is done at WaveSpeed by now
    body = json.dumps({"id": job.prediction_id, "status": "completed", "outputs": []}).encode()
    stamp = int(time.time())
    async with aiohttp.ClientSession() as session, session.post(
            f"{hooked.wavespeed.webhook_url}/wavespeed/jobs/{answer.job.id}", data=body, headers={
                "webhook-id": "msg_x", "webhook-timestamp": str(stamp),
                "webhook-signature": simulator.sign("msg_x", stamp, body)}) as resp:
        assert resp.status == 200
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert _result_gets(simulator) >= 1 and (await engine.balance(user())).total == 9
