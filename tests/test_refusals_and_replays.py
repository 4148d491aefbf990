"""Review findings on issue #14: a video WaveSpeed put on a host the bot may not fetch from
fails at once, loudly and distinctly; a second delivery for a job does not replace the first;
a Discord file served larger than it said is refused with the "larger than" sentence.

Through the engine and the WaveSpeed simulator, and the real discord.py client against the
fake Discord server; each test failed before its fix.
"""

# The Discord fixtures come from tests/test_discord.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import replace

import pytest

from bot import messages
from bot.config import ConfigError, load_settings
from bot.webhooks import job_url
from tests.conftest import effect_request
from tests.fake_discord import APP_ID
from tests.helpers import image_bytes, settled
from tests.test_discord import dc_settings, effect_payload, fake_discord, feed, run_discord, until  # noqa: F401
from tests.test_listener_and_downloads import EFFECTS_SUBMIT, _other_clients_task, _post_event, hooked  # noqa: F401

CDN = "https://videos.cdn.example.net"  # where WaveSpeed puts the outputs: not in download_hosts


def _result_checks(simulator) -> int:
    return sum(1 for r in simulator.requests if r["method"] == "GET" and r["path"].endswith("/result"))


async def test_an_output_always_on_a_refused_host_fails_at_once_and_says_why(make_engine, settings, courier,
                                                                            simulator, caplog):
    caplog.set_level(logging.WARNING)
    simulator.output_origin = CDN  # every result names the video on the CDN
    engine = await make_engine(settings)
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while "downloading" not in courier.stages(answer.job.id):
            await asyncio.sleep(0.01)
    checks_before = _result_checks(simulator)  # the follow's checks, up to the completed one

    outcome, reason = await courier.outcome(answer.job.id, timeout=30)
    assert outcome == "failed"
    assert reason == messages.with_refund(messages.VIDEO_ON_REFUSED_HOST, 1)
    assert _result_checks(simulator) - checks_before <= 2  # not asked again and again
    assert (await engine.balance(effect_request().user)).total == 10  # refunded
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("videos.cdn.example.net" in e and "[wavespeed] download_hosts" in e for e in errors), errors
    assert not any("/outputs/" in r.getMessage() for r in caplog.records)  # the host, never the URL


async def test_a_second_delivery_for_a_job_does_not_replace_the_first(make_engine, hooked, courier, simulator):
    engine = await make_engine(hooked.with_wavespeed(request_timeout=3.0))
    simulator.fail_next("submit", kind="accept_hang", delay=5.0)  # the submit stays unanswered for 3 s
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):  # the job's own task ends and reports while its submit is unanswered
        while (job := await engine.store.job(answer.job.id)).webhook_result is None:
            await asyncio.sleep(0.01)
    assert job.prediction_id is None and job.submit_ended_at is None
    genuine = job.webhook_result
    image = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()
    other = await _other_clients_task(simulator, EFFECTS_SUBMIT, {"image": image, "effect_scene": "hula"})
    replayed = {**genuine, "id": other}  # signed, same model, made inside the submit's window
    assert await _post_event(simulator, job_url(hooked.wavespeed.webhook_url, answer.job.id), replayed) == 200
    assert (await engine.store.job(answer.job.id)).webhook_result == genuine

    outcome, video = await courier.outcome(answer.job.id, timeout=30)
    assert outcome == "delivered"
    own = await settled(engine, answer.job.id)
    assert own.prediction_id == genuine["id"]
    assert video == simulator.tasks[genuine["id"]].video


async def test_a_discord_photo_served_larger_than_it_said_is_refused_as_larger(run_discord, fake_discord,
                                                                               dc_settings, simulator):
    limited = replace(dc_settings, media=replace(dc_settings.media, max_download_mb=1.0))
    limit = limited.media.max_download_bytes
    _, adapter = await run_discord(limited)
    served = image_bytes(640, 480) + b"\x00" * (limit + 1)
    payload = effect_payload(fake_discord, image=fake_discord.attachment(served, size=1000, streamed=True))
    feed(adapter, payload)
    [refusal] = await until(lambda: [p["json"]["content"] for p in
                                     fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")
                                     if p["json"] and (p["json"].get("flags") or 0) & 64])
    assert refusal == messages.media_larger_than("photo", limit)
    assert simulator.submissions == []


@pytest.mark.parametrize(("webhook_url", "ok"), [
    ("http://127.0.0.2:8080", True),  # all of 127.0.0.0/8 is this computer, as `simulator --host` says
    ("http://[::1]:8080", True),
    ("http://LOCALHOST:8080", True),
    ("http://10.0.0.1:8080", False),
    ("http://bot.example.com", False),
])
def test_plain_http_webhooks_are_for_the_same_local_hosts_as_the_simulator(tmp_path, webhook_url, ok):
    path = tmp_path / "kling-bot.toml"
    path.write_text(f'[wavespeed]\nwebhook_url = "{webhook_url}"\n')
    if ok:
        assert load_settings(path, env={}).wavespeed.webhook_url == webhook_url
    else:
        with pytest.raises(ConfigError, match="webhook_url"):
            load_settings(path, env={})
