"""The real discord.py client: REST to a fake Discord server, interactions as raw payloads."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import discord
import pytest

from adapters.discord_bot import DiscordAdapter
from bot.config import QuotaSettings
from bot.jobs import UserRef
from bot.service import Engine
from tests.conftest import API_KEY
from tests.fake_discord import APP_ID, CHANNEL, GUILD, FakeDiscord
from tests.helpers import audio_bytes, image_bytes, mp4_info

TOKEN = "MTIz.discord-bot-token.SECRET"
ALICE, BOB = 600000000000000001, 600000000000000002


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def dc_settings(settings, fake_discord):
    return replace(settings, discord=replace(settings.discord, token=TOKEN, guild_ids=[GUILD],
                                             api_base_url=fake_discord.api_base_url,
                                             progress_interval=0.0, admins=[]))


@pytest.fixture
async def run_discord(dc_settings):
    original_base = discord.http.Route.BASE
    running = []

    async def start(custom=None):
        chosen = custom or dc_settings
        engine = Engine.from_settings(chosen)
        adapter = DiscordAdapter(chosen, engine)
        await engine.start()
        await adapter.prepare()
        running.append((engine, adapter))
        return engine, adapter

    yield start
    for engine, adapter in running:
        await adapter.stop()
        await engine.close()
    discord.http.Route.BASE = original_base


def feed(adapter, payload):
    adapter.client._connection.parse_interaction_create(payload)


async def until(check, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not (found := check()):
            await asyncio.sleep(0.02)
    return found


def effect_payload(fake, scene="hula", user=ALICE, image=None, **kw):
    attachment = image or fake.attachment(image_bytes(640, 480))
    return fake.slash("effect", [{"name": "scene", "type": 3, "value": scene},
                                 {"name": "image", "type": 11, "value": attachment["id"]}],
                      user=user, attachments=[attachment], **kw)


def callbacks(fake, token):
    return [c["json"] for c in fake.to(f"/interactions/") if token in c["path"]]


def edits(fake, token):
    return [c["json"]["content"] for c in fake.to(f"/webhooks/{APP_ID}/{token}/messages/", "PATCH")]


async def test_effect_defers_at_once_shows_progress_and_posts_the_mp4(run_discord, fake_discord, simulator, caplog):
    caplog.set_level("DEBUG")
    engine, adapter = await run_discord()
    payload = effect_payload(fake_discord)
    token = payload["token"]
    feed(adapter, payload)

    upload = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{token}", "POST") if c["files"]])
    calls_for_token = [c for c in fake_discord.calls if token in c["path"]]
    assert calls_for_token[0]["path"].endswith("/callback") and calls_for_token[0]["json"]["type"] == 5
    [(name, video)] = upload[0]["files"].items()
    assert name == "kling-1.mp4" and mp4_info(video)[0] == "h264"
    assert upload[0]["json"]["content"] == f"<@{ALICE}> effect hula · Kling Effects"
    progress = await until(lambda: (e := edits(fake_discord, token)) and e[-1].endswith("done.") and e)
    assert progress[0].startswith("Job 1 queued (effect hula)")
    assert any("Generating…" in t for t in progress)
    # the bot token went to Discord only, as the Authorization header
    assert all(c["headers"].get("Authorization") in (None, f"Bot {TOKEN}") for c in fake_discord.calls)
    assert any(c["headers"].get("Authorization") == f"Bot {TOKEN}" for c in fake_discord.calls)
    assert TOKEN not in str(simulator.requests) + str(simulator.submissions)
    assert TOKEN not in caplog.text
    assert engine.balance(UserRef("discord", str(ALICE))).total == 9


async def test_commands_are_synced_to_the_configured_guild(run_discord, fake_discord):
    await run_discord()
    [sync] = fake_discord.to(f"/applications/{APP_ID}/guilds/{GUILD}/commands", "PUT")
    names = sorted(c["name"] for c in sync["json"])
    assert names == sorted(["effect", "animate", "avatar", "quota", "jobs", "cancel", "effects",
                            "help", "credits", "usage", "Animate with Kling"])
    credits = next(c for c in sync["json"] if c["name"] == "credits")
    assert int(credits["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
