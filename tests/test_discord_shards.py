"""Discord shards: front processes split the gateway (``[discord] shard_count``, ``shard_ids``).

Two fronts share one store, each with the real discord.py ``AutoShardedClient`` running
one shard of two against the fake gateway, which sends a server's events only to the
session of its shard and direct messages to shard 0, as Discord does
(tests/specs/discord-gateway-sharding.md). Each command and button is answered by the
front whose shard its server is on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp
import discord
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from adapters.discord import DiscordAdapter
from bot.config import ConfigError, load_settings
from bot.jobs import UserRef
from tests import spec_check
from tests import test_discord as base
from tests.fake_discord import APP_ID, CHANNEL, GUILD, INVALID_SHARD, SHARDING_REQUIRED, shard_of
from tests.helpers import image_bytes
from tests.test_cli import kling

TOKEN, ALICE, BOB = base.TOKEN, base.ALICE, base.BOB
fake_discord, dc_settings, until, callbacks = base.fake_discord, base.dc_settings, base.until, base.callbacks
GUILD_ON_0, CHANNEL_ON_0 = GUILD + (1 << 22), CHANNEL + 1  # (GUILD_ON_0 >> 22) % 2 == 0
DM_CHANNEL = 700000000000000099
PLACES = ((GUILD_ON_0, CHANNEL_ON_0, 0), (GUILD, CHANNEL, 1))  # server, its channel, its shard of 2


def test_the_servers_are_on_different_shards():
    assert [shard_of(guild, 2) for guild, _, _ in PLACES] == [0, 1]


@pytest.fixture
async def fronts(adapter_runner, dc_settings, fake_discord):
    """Two fronts on one store, running shard 0 and shard 1 of 2; both ready."""
    for guild, channel, _ in PLACES:
        fake_discord.guild(guild, channel)
    original = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE

    def front(shard: int):
        return replace(dc_settings, discord=replace(
            dc_settings.discord, gateway_url=fake_discord.gateway_url, guild_ids=[GUILD_ON_0, GUILD],
            shard_count=2, shard_ids=[shard]))

    started = [(await adapter_runner(front(shard), DiscordAdapter))[1] for shard in (0, 1)]
    await until(lambda: all(adapter.client.is_ready() for adapter in started))
    yield started
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE = original


def receivers(fronts, payload):
    """For each front, a future that is done once its client dispatches this interaction."""
    return [asyncio.ensure_future(front.client.wait_for(
        "interaction", check=lambda interaction: interaction.id == int(payload["id"]))) for front in fronts]


async def handled_by(fronts, waiting) -> list[int]:
    """Which fronts received the interaction: the owner's future resolves; the other's stays open."""
    await asyncio.wait(waiting, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.sleep(0.2)  # time enough for a wrongly routed copy to arrive too
    done = [i for i, future in enumerate(waiting) if future.done()]
    for future in waiting:
        future.cancel()
    return done


async def test_each_front_identifies_its_shard_and_sees_only_its_servers(fronts, fake_discord):
    assert sorted(identify["shard"] for identify in fake_discord.identifies) == [[0, 2], [1, 2]]
    for front, shard in zip(fronts, (0, 1), strict=True):
        assert isinstance(front.client, discord.AutoShardedClient)
        assert front.client.shard_count == 2 and list(front.client.shards) == [shard]
        assert [guild.id for guild in front.client.guilds] == [PLACES[shard][0]]
    # Every front syncs the commands: the same list, to both servers, whichever shard it runs.
    syncs = [c["json"] for c in fake_discord.to(f"/applications/{APP_ID}/guilds/", "PUT")]
    assert len(syncs) == 4 and all(sync == syncs[0] for sync in syncs)


async def test_a_slash_command_is_answered_by_the_front_of_its_servers_shard(fronts, fake_discord):
    for guild, channel, shard in PLACES:
        payload = fake_discord.slash("quota", [], user=ALICE, guild=guild, channel=channel)
        waiting = receivers(fronts, payload)
        await fake_discord.dispatch("INTERACTION_CREATE", payload)
        [answer] = await until(lambda p=payload: callbacks(fake_discord, p["token"]))
        assert answer["data"]["content"].startswith("You have 10 credits.")
        assert await handled_by(fronts, waiting) == [shard]


async def test_a_direct_message_command_goes_to_the_front_of_shard_0(fronts, fake_discord):
    payload = fake_discord.slash("quota", [], user=BOB, dm=DM_CHANNEL)
    waiting = receivers(fronts, payload)
    await fake_discord.dispatch("INTERACTION_CREATE", payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"].startswith("You have 10 credits.")
    assert await handled_by(fronts, waiting) == [0]


async def video_message(fake, filename):
    return await until(lambda: next((m for m in fake.messages.values()
                                     if any(a["filename"] == filename for a in m["attachments"])), None))


async def test_videos_and_their_again_button_work_on_both_shards(fronts, fake_discord, simulator):
    job = 0
    for guild, channel, shard in PLACES:
        attachment = fake_discord.attachment(image_bytes(640, 480))
        made = fake_discord.slash("effect", [{"name": "scene", "type": 3, "value": "hula"},
                                             {"name": "image", "type": 11, "value": attachment["id"]}],
                                  user=ALICE, attachments=[attachment], guild=guild, channel=channel)
        waiting = receivers(fronts, made)
        await fake_discord.dispatch("INTERACTION_CREATE", made)
        job += 1
        video = await video_message(fake_discord, f"kling-{job}.mp4")
        assert await handled_by(fronts, waiting) == [shard]
        assert video["channel_id"] == str(channel)
        buttons = [c["custom_id"] for row in video["components"] for c in row["components"]]
        assert buttons == [f"kling:again:{job}", f"kling:fx:{job}", f"kling:prompt:{job}"]

        press = fake_discord.interaction(3, {"custom_id": f"kling:again:{job}", "component_type": 2},
                                         user=BOB, message=video, guild=guild)
        waiting = receivers(fronts, press)
        await fake_discord.dispatch("INTERACTION_CREATE", press)
        job += 1
        again = await video_message(fake_discord, f"kling-{job}.mp4")
        assert await handled_by(fronts, waiting) == [shard]
        assert callbacks(fake_discord, press["token"])[0]["type"] == 5  # deferred, then a new public message
        assert again["channel_id"] == str(channel) and again["content"].startswith(f"<@{BOB}> effect hula")
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["hula"] * 4
    engine = fronts[0].engine
    assert (await engine.balance(UserRef("discord", str(ALICE)))).total == 8  # two videos, one credit each
    assert (await engine.balance(UserRef("discord", str(BOB)))).total == 8  # two presses


# --- the fake gateway shards as Discord's does ----------------------------------------------

async def identify_with(fake, shard=None):
    """A raw gateway session: IDENTIFY (with ``shard``), then how the gateway answers or closes."""
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as socket:
        hello = await socket.receive_json()
        assert hello["op"] == 10
        identify = {"token": TOKEN, "intents": 0, "properties": {"os": "linux", "browser": "t", "device": "t"}}
        await socket.send_json({"op": 2, "d": {**identify, **({"shard": shard} if shard is not None else {})}})
        frame = await socket.receive(timeout=5)
        return socket.close_code if frame.type is aiohttp.WSMsgType.CLOSE else json.loads(frame.data)


async def test_the_fake_gateway_refuses_an_invalid_shard_and_an_unsharded_crowd(fake_discord):
    assert await identify_with(fake_discord, [2, 2]) == INVALID_SHARD
    assert await identify_with(fake_discord, [0, 0]) == INVALID_SHARD
    ready = await identify_with(fake_discord, [1, 2])
    assert ready["t"] == "READY" and ready["d"]["shard"] == [1, 2]
    for n in range(2501):
        fake_discord.guild(GUILD + (n << 22))
    assert await identify_with(fake_discord) == SHARDING_REQUIRED  # more than 2,500 servers on one session
    ready = await identify_with(fake_discord, [1, 2])  # 1,251 of them on this shard (GUILD's)
    assert len(ready["d"]["guilds"]) == 1251


async def test_the_fake_recommends_a_shard_count_as_get_gateway_bot_does(fake_discord):
    fake_discord.recommended_shards = 3
    client = discord.Client(intents=discord.Intents.none())
    original = discord.http.Route.BASE
    discord.http.Route.BASE = fake_discord.api_base_url
    try:
        await client.login(TOKEN)
        shards, url, limits = await client.http.get_bot_gateway()
    finally:
        await client.close()
        discord.http.Route.BASE = original
    assert (shards, url) == (3, fake_discord.gateway_url) and limits["max_concurrency"] == 1
    [call] = fake_discord.to("/gateway/bot")
    registry: Registry = Registry().with_resource(spec_check.DISCORD_DOC_URI, Resource.from_contents(
        spec_check.discord_spec(), default_specification=DRAFT202012))
    schema = Draft202012Validator({"$ref": f"{spec_check.DISCORD_DOC_URI}#/components/schemas/GatewayBotResponse"},
                                  registry=registry)
    schema.validate({"url": url, "shards": shards, "session_start_limit": limits})
    assert call["method"] == "GET"


# --- the settings ---------------------------------------------------------------------------

def _load(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, env={})


def test_shard_settings_load(tmp_path):
    settings = _load(tmp_path, "[discord]\nshard_count = 4\nshard_ids = [2, 3]\n")
    assert (settings.discord.shard_count, settings.discord.shard_ids) == (4, [2, 3])
    assert (load_settings(None, env={}).discord.shard_count, load_settings(None, env={}).discord.shard_ids) == (0, [])


@pytest.mark.parametrize(("text", "message"), [
    ("shard_ids = [0]", "[discord] shard_ids needs [discord] shard_count, the number of shards they are part of."),
    ("shard_count = 2\nshard_ids = [2]", "[discord] shard_ids must be 0 to 1 with shard_count = 2 (got [2])."),
    ("shard_count = 2\nshard_ids = [-1]", "[discord] shard_ids must be 0 to 1 with shard_count = 2 (got [-1])."),
    ("shard_count = 2\nshard_ids = [1, 1]", "[discord] shard_ids lists a shard twice."),
    ("shard_count = -1", "[discord] shard_count cannot be negative."),
    ("shard_count = 2\nshard_ids = 1", "[discord] shard_ids must be a list of int (got 1)."),
    ("shard_count = \"2\"", "[discord] shard_count must be a whole number (got '2')."),
])
def test_bad_shard_settings_are_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[discord]\n{text}\n")
    assert str(err.value) == f"{tmp_path / 'c.toml'}: {message}"


def test_kling_bot_run_refuses_bad_shards_with_one_line(tmp_path):
    (tmp_path / "config.toml").write_text("[discord]\nshard_count = 2\nshard_ids = [0, 2]\n")
    done = kling("run", cwd=tmp_path, env={"DISCORD_BOT_TOKEN": TOKEN, "TELEGRAM_BOT_TOKEN": ""})
    assert done.returncode == 2
    assert done.stderr.strip() == "kling-bot: config.toml: [discord] shard_ids must be 0 to 1 with shard_count = 2 " \
                                  "(got [0, 2])."
