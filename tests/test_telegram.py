"""The real python-telegram-bot Application against a fake Bot API server and the simulator."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import replace

import pytest
from PIL import Image

from adapters.telegram_bot import TelegramAdapter
from bot.config import QuotaSettings
from bot.service import Engine
from tests.fake_telegram import FakeTelegram
from tests.helpers import audio_bytes, image_bytes, mp4_info

TOKEN = "123456:TEST-telegram-token-SECRET"
ALICE, BOB = 1001, 1002
GROUP = -100500


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def tg_settings(settings, telegram):
    return replace(settings, telegram=replace(
        settings.telegram, token=TOKEN, base_url=telegram.base_url,
        base_file_url=telegram.base_file_url, progress_interval=0.0, admins=[ALICE]))


@pytest.fixture
async def run_bot(tg_settings):
    """Start engine + Telegram adapter (optionally with other settings); stopped after."""
    running = []

    async def start(custom=None):
        chosen = custom or tg_settings
        engine = Engine.from_settings(chosen)
        adapter = TelegramAdapter(chosen, engine)
        await engine.start()
        await adapter.start()
        running.append((engine, adapter))
        return engine, adapter

    yield start
    for engine, adapter in running:
        await adapter.stop()
        await engine.close()


def _texts(telegram, method="editMessageText"):
    return [c["params"]["text"] for c in telegram.calls_to(method)]


def _sent_to_wavespeed(simulator) -> str:
    return json.dumps([r["path"] for r in simulator.requests] + [r["headers"] for r in simulator.requests]
                      + simulator.submissions) + repr([u for u in simulator.uploads.values()])


async def test_photo_with_effect_caption_gets_a_video_reply(run_bot, telegram, simulator, caplog):
    caplog.set_level("DEBUG")
    engine, _ = await run_bot()
    photo = image_bytes(800, 600)
    sent = telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=photo)

    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))

    assert video["params"]["reply_parameters"]["message_id"] == sent["message_id"]
    assert video["params"]["caption"] == "effect hula · Kling Effects"
    assert mp4_info(video["files"]["video"])[0] == "h264"
    first_reply = telegram.calls_to("sendMessage")[0]["params"]
    assert first_reply["text"] == "Checking the photo…"
    edits = _texts(telegram)
    assert edits[0].startswith("Job 1 queued (effect hula), next in line. It costs 1 credit; 9 left.")
    assert any("Generating…" in t for t in edits)
    await telegram.wait_for(lambda: _texts(telegram)[-1] == "Job 1 (effect hula): done.")
    # the photo reached WaveSpeed as bytes, never as a Telegram URL holding the token
    assert photo in [data for data, _ in simulator.uploads.values()]
    assert TOKEN not in _sent_to_wavespeed(simulator) and "/file/bot" not in _sent_to_wavespeed(simulator)
    assert TOKEN not in caplog.text
    assert engine.balance(engine_user(ALICE)).total == 9


def engine_user(user_id):
    from bot.jobs import UserRef
    return UserRef("telegram", str(user_id))


async def test_commands_are_registered_at_start(run_bot, telegram):
    await run_bot()
    [call] = telegram.calls_to("setMyCommands")
    names = [c["command"] for c in call["params"]["commands"]]
    assert names == ["effect", "animate", "avatar", "effects", "quota", "jobs", "cancel", "help"]
