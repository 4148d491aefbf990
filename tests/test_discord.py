"""The real discord.py client: REST to a fake Discord server, interactions as raw payloads."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import discord
import pytest

from adapters.discord import DiscordAdapter
from bot.config import QuotaSettings
from bot.jobs import UserRef
from tests.fake_discord import APP_ID, CHANNEL, GUILD, FakeDiscord
from tests.helpers import audio_bytes, checked, image_bytes, job_in_state, mp4_info

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
async def run_discord(dc_settings, adapter_runner):
    """Engine + Discord adapter logged in over REST (no gateway: tests feed interactions)."""
    original_base = discord.http.Route.BASE
    yield lambda custom=None: adapter_runner(custom or dc_settings, DiscordAdapter, launch="prepare")
    discord.http.Route.BASE = original_base


def feed(adapter, payload):
    adapter.client._connection.parse_interaction_create(payload)


async def until(check, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not (found := await checked(check())):
            await asyncio.sleep(0.02)
    return found


def effect_payload(fake, scene="hula", user=ALICE, image=None, **kw):
    attachment = image or fake.attachment(image_bytes(640, 480))
    return fake.slash("effect", [{"name": "scene", "type": 3, "value": scene},
                                 {"name": "image", "type": 11, "value": attachment["id"]}],
                      user=user, attachments=[attachment], **kw)


def callbacks(fake, token):
    return [c["json"] for c in fake.to("/interactions/") if token in c["path"]]


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
    assert (await engine.balance(UserRef("discord", str(ALICE)))).total == 9


async def test_commands_are_synced_to_the_configured_guild(run_discord, fake_discord):
    await run_discord()
    [sync] = fake_discord.to(f"/applications/{APP_ID}/guilds/{GUILD}/commands", "PUT")
    names = sorted(c["name"] for c in sync["json"])
    assert names == sorted(["effect", "animate", "avatar", "quota", "jobs", "cancel", "effects", "models",
                            "help", "history", "credits", "usage", "stats", "balance", "Animate with Kling",
                            "pause", "resume", "ban", "unban", "buy", "refund"])
    credits = next(c for c in sync["json"] if c["name"] == "credits")
    assert int(credits["default_member_permissions"]) == discord.Permissions(manage_guild=True).value


def _response_of(fake, token):
    return callbacks(fake, token)[0]


async def test_autocomplete_offers_best_matches_first(run_discord, fake_discord):
    _, adapter = await run_discord()
    payload = fake_discord.interaction(4, {"id": "1", "name": "effect", "type": 1, "options": [
        {"name": "scene", "type": 3, "value": "jel", "focused": True}]}, user=ALICE)
    feed(adapter, payload)
    answer = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer[0]["type"] == 8
    names = [c["value"] for c in answer[0]["data"]["choices"]]
    assert names[:4] == ["jelly_press", "jelly_slice", "jelly_squish", "jelly_jiggle"]


def _context_menu(fake, message, user=ALICE):
    return fake.interaction(2, {"id": "2", "name": "Animate with Kling", "type": 3,
                                "target_id": message["id"],
                                "resolved": {"messages": {message["id"]: message}}}, user=user)


async def _pick(fake, adapter, menu_payload, effect, user=ALICE):
    """Choose an effect in the ephemeral menu the context-menu command answered with."""
    response = await until(lambda: callbacks(fake, menu_payload["token"]))
    select = response[0]["data"]["components"][0]["components"][0]
    menu_message = fake.messages[fake.originals[menu_payload["token"]]]
    pick = fake.interaction(3, {"custom_id": select["custom_id"], "component_type": 3, "values": [effect]},
                            user=user, message=menu_message)
    feed(adapter, pick)
    return response[0], pick


async def test_context_menu_offers_effects_and_animates_the_attachment(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    photo = image_bytes(800, 600)
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(photo)])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    response, pick = await _pick(fake_discord, adapter, menu, "hula")
    assert response["type"] == 4 and response["data"]["flags"] & 64  # ephemeral
    options = response["data"]["components"][0]["components"][0]["options"]
    assert len(options) == 24 and options[0]["value"] == "emoji"
    upload = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{pick['token']}", "POST")
                                  if c["files"]])
    assert "kling-1.mp4" in upload[0]["files"]
    assert photo in [data for data, _ in simulator.uploads.values()]
    status = fake_discord.to(f"/webhooks/{APP_ID}/{pick['token']}", "POST")[0]["json"]
    assert status["content"] == "Checking the photo…" and not status.get("flags", 0) & 64  # public


async def test_context_menu_reads_an_embed_image(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    hosted = fake_discord.attachment(image_bytes(700, 500))
    target = fake_discord.user_message(BOB, embeds=[{"type": "image", "image": {
        "url": "https://example.invalid/cat.jpg", "proxy_url": hosted["url"], "width": 700, "height": 500}}])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    _, pick = await _pick(fake_discord, adapter, menu, "squish")
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{pick['token']}", "POST") if c["files"]])
    assert simulator.submissions[0]["body"]["effect_scene"] == "squish"


async def test_context_menu_on_a_message_without_image(run_discord, fake_discord):
    _, adapter = await run_discord()
    menu = _context_menu(fake_discord, fake_discord.user_message(BOB))
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    assert response["data"] == {"content": "That message has no image to animate.", "flags": 64} or \
        (response["data"]["content"] == "That message has no image to animate." and response["data"]["flags"] & 64)


@pytest.mark.parametrize("how", ["token expired by the clock", "Invalid Webhook Token"])
async def test_late_video_is_posted_in_the_channel_mentioning_the_user(run_discord, fake_discord, simulator, how):
    simulator.job_seconds = 1.0
    engine, adapter = await run_discord()
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    await until(lambda: job_in_state(engine, 1, "processing"))
    if how == "Invalid Webhook Token":
        fake_discord.webhook_tokens_expire(payload["token"])
    else:
        real_clock = adapter.courier.clock
        adapter.courier.clock = lambda: real_clock() + 16 * 60
    [post] = await until(lambda: [c for c in fake_discord.to(f"/channels/{CHANNEL}/messages", "POST")])
    assert post["json"]["content"].startswith(f"<@{ALICE}> effect hula")
    assert int(post["json"]["message_reference"]["message_id"]) == fake_discord.originals[payload["token"]]
    assert [int(u) for u in post["json"]["allowed_mentions"]["users"]] == [ALICE]
    assert "kling-1.mp4" in post["files"]


async def test_video_over_the_interactions_size_limit_is_a_link(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    payload = effect_payload(fake_discord, size_limit=1000)
    feed(adapter, payload)
    [post] = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")])
    assert post["files"] == {}
    assert "over this server's upload limit" in post["json"]["content"]
    assert f"{simulator.base_url}/outputs/" in post["json"]["content"]


@pytest.mark.parametrize("policy, nsfw_channel, expected", [
    ("spoiler", False, "SPOILER_kling-1.mp4"),
    ("block", True, None),
    ("nsfw_channels_only", False, None),
    ("nsfw_channels_only", True, "SPOILER_kling-1.mp4"),
])
async def test_nsfw_policies(run_discord, dc_settings, fake_discord, simulator, policy, nsfw_channel, expected):
    _, adapter = await run_discord(replace(dc_settings, discord=replace(dc_settings.discord, nsfw=policy)))
    simulator.plan_outcome("nsfw")
    payload = effect_payload(fake_discord, nsfw=nsfw_channel)
    feed(adapter, payload)
    [post] = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")])
    if expected:
        assert list(post["files"]) == [expected]
    else:
        assert post["files"] == {} and "flagged the video as NSFW" in post["json"]["content"]


@pytest.mark.parametrize("make, expected", [
    (lambda f: effect_payload(f, scene="hulla"), "Unknown effect 'hulla'. Did you mean 'hula'?"),
    (lambda f: effect_payload(f, image=f.attachment(b"hello", "notes.txt", "text/plain")),
     "The photo must be a photo (got text/plain)."),
    (lambda f: effect_payload(f, image=f.attachment(b"x", size=30 * 1024 * 1024)),
     "The photo is 30.0 MB; the bot accepts up to 20 MB."),
])
async def test_refusals_that_need_no_download_are_ephemeral_and_not_deferred(
        run_discord, fake_discord, simulator, make, expected):
    engine, adapter = await run_discord()
    payload = make(fake_discord)
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["type"] == 4 and response["data"]["flags"] & 64
    assert response["data"]["content"] == expected
    assert simulator.submissions == [] and (await engine.balance(UserRef("discord", str(ALICE)))).total == 10


async def test_out_of_credits_is_refused_ephemerally(run_discord, dc_settings, fake_discord):
    _, adapter = await run_discord(replace(dc_settings, quota=QuotaSettings(daily_credits=0)))
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["data"]["flags"] & 64
    assert response["data"]["content"].startswith("You're out of credits: this needs 1 and you have 0.")


async def test_bad_image_after_download_is_refused_privately(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    payload = effect_payload(fake_discord, image=fake_discord.attachment(image_bytes(200, 150)))
    feed(adapter, payload)
    followup = await until(lambda: fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST"))
    assert followup[0]["json"]["flags"] & 64
    assert followup[0]["json"]["content"].startswith("The photo is 200×150 px")
    assert fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}/messages/", "DELETE")  # public "thinking" removed
    assert (await engine.balance(UserRef("discord", str(ALICE)))).total == 10


async def test_failure_edits_the_message_and_refunds(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    simulator.plan_outcome("failed")
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    final = await until(lambda: [e for e in edits(fake_discord, payload["token"]) if "refunded" in e])
    assert final[0].startswith("Job 1: Kling could not make this video")
    assert (await engine.balance(UserRef("discord", str(ALICE)))).total == 10


async def test_animate_options_and_end_image(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    first, last = fake_discord.attachment(image_bytes(800, 600)), fake_discord.attachment(image_bytes(800, 600, "PNG"))
    feed(adapter, fake_discord.slash("animate", [
        {"name": "image", "type": 11, "value": first["id"]}, {"name": "prompt", "type": 3, "value": "a cat dances"},
        {"name": "model", "type": 3, "value": "master"}, {"name": "duration", "type": 4, "value": 10},
        {"name": "guidance", "type": 10, "value": 0.8}, {"name": "end_image", "type": 11, "value": last["id"]},
    ], user=ALICE, attachments=[first, last]))
    await until(lambda: simulator.submissions)
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v2.0-i2v-master"
    assert {k: submission["body"][k] for k in ("prompt", "duration", "guidance_scale")} == \
        {"prompt": "a cat dances", "duration": "10", "guidance_scale": 0.8}
    assert "end_image" in submission["body"]


async def test_avatar_with_audio_attachment(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    photo = fake_discord.attachment(image_bytes())
    voice = fake_discord.attachment(audio_bytes(2, "mp3", "libmp3lame", 22050), "voice.mp3", "audio/mpeg")
    payload = fake_discord.slash("avatar", [{"name": "image", "type": 11, "value": photo["id"]},
                                            {"name": "audio", "type": 11, "value": voice["id"]}],
                                 user=ALICE, attachments=[photo, voice])
    feed(adapter, payload)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST") if c["files"]])
    assert simulator.submissions[0]["model"] == "kwaivgi/kling-v1-ai-avatar-standard"


@pytest.mark.parametrize("permissions, admins, allowed", [
    ("0", [], False), (str(discord.Permissions(manage_guild=True).value), [], True), ("0", [ALICE], True)])
async def test_credit_admin_commands_check_permissions(run_discord, dc_settings, fake_discord,
                                                        permissions, admins, allowed):
    engine, adapter = await run_discord(replace(dc_settings, discord=replace(dc_settings.discord, admins=admins)))
    payload = fake_discord.slash("credits", [{"name": "member", "type": 6, "value": str(BOB)},
                                             {"name": "amount", "type": 4, "value": 5}],
                                 subcommand="grant", user=ALICE, permissions=permissions, users=[BOB])
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["data"]["flags"] & 64
    if allowed:
        assert response["data"]["content"] == f"<@{BOB}> now has 15 credits."
    else:
        assert response["data"]["content"] == "Only server managers and the bot's admins can do that."
    assert (await engine.balance(UserRef("discord", str(BOB)))).total == (15 if allowed else 10)


async def test_usage_counts_todays_jobs_in_the_server(run_discord, fake_discord):
    _, adapter = await run_discord()
    first = effect_payload(fake_discord)
    feed(adapter, first)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{first['token']}", "POST") if c["files"]])
    payload = fake_discord.slash("usage", [], user=ALICE, permissions=str(discord.Permissions(manage_guild=True).value))
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["data"]["content"] == "Today (UTC) in this server: 1 job, 1 credit spent."


async def test_quota_jobs_cancel_effects_help_are_ephemeral(run_discord, fake_discord):
    _, adapter = await run_discord()
    payloads = [fake_discord.slash(name, options, user=ALICE) for name, options in [
        ("quota", []), ("jobs", []), ("cancel", [{"name": "job", "type": 4, "value": 3}]),
        ("effects", []), ("help", [])]]
    for payload in payloads:
        feed(adapter, payload)
    answers = [(await until(lambda p=p: callbacks(fake_discord, p["token"])))[0]["data"] for p in payloads]
    assert all(a["flags"] & 64 for a in answers)
    assert answers[0]["content"].startswith("You have 10 credits.")
    assert answers[1]["content"] == "You have no jobs running."
    assert answers[2]["content"] == "You have no job 3."
    assert answers[3]["content"].startswith("77 effects. Type **/effect** and start typing")
    assert "Boyfriend" in answers[3]["content"] and "boylfriend" not in answers[3]["content"]
    assert answers[4]["content"].startswith("I turn a photo into a short Kling AI video.")


async def test_restart_mid_job_delivers_to_the_same_interaction(run_discord, fake_discord, simulator):
    simulator.job_seconds = 1.5
    engine, adapter = await run_discord()
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    await until(lambda: job_in_state(engine, 1, "processing"))
    await adapter.stop()
    await engine.close()

    await run_discord()
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST") if c["files"]])
    assert len(simulator.submissions) == 1


async def test_context_menu_other_effect_by_name(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    button = response["data"]["components"][1]["components"][0]
    assert button["label"] == "Another effect…"
    menu_message = fake_discord.messages[fake_discord.originals[menu["token"]]]
    press = fake_discord.interaction(3, {"custom_id": button["custom_id"], "component_type": 2},
                                     user=ALICE, message=menu_message)
    feed(adapter, press)
    [modal] = await until(lambda: callbacks(fake_discord, press["token"]))
    assert modal["type"] == 9
    text_input = modal["data"]["components"][0]["components"][0]
    submit = fake_discord.interaction(5, {"custom_id": modal["data"]["custom_id"], "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": text_input["custom_id"], "value": "santa hug"}]}]},
        user=ALICE, message=menu_message)
    feed(adapter, submit)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{submit['token']}", "POST") if c["files"]])
    assert simulator.submissions[0]["body"]["effect_scene"] == "santa_hug"


async def test_allowed_channels(run_discord, dc_settings, fake_discord, simulator):
    _, adapter = await run_discord(replace(dc_settings, discord=replace(dc_settings.discord, allowed_channels=[123])))
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["data"]["content"] == "I don't make videos in this channel." and response["data"]["flags"] & 64
    assert simulator.submissions == []


async def test_no_privileged_intents(run_discord):
    _, adapter = await run_discord()
    intents = adapter.client.intents
    assert not (intents.members or intents.presences or intents.message_content)


async def test_gateway_login_and_interactions_through_the_configured_gateway(
        adapter_runner, dc_settings, fake_discord):
    original = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE
    settings = replace(dc_settings, discord=replace(dc_settings.discord, gateway_url=fake_discord.gateway_url))
    try:
        _, adapter = await adapter_runner(settings, DiscordAdapter)  # start(): REST login + gateway
        identify = await until(lambda: fake_discord.identify)
        assert identify["token"] == TOKEN
        # no privileged intents: messages in DMs and mentions of the bot come with their content
        assert identify["intents"] == discord.Intents(guilds=True, dm_messages=True, guild_messages=True).value
        await until(lambda: adapter.client.is_ready())
        payload = fake_discord.slash("quota", [], user=ALICE)
        await fake_discord.dispatch("INTERACTION_CREATE", payload)
        [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
        assert answer["data"]["content"].startswith("You have 10 credits.")
    finally:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE = original


async def test_kling_bot_run_serves_discord_as_a_whole_process(tmp_path, fake_discord):
    import os
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "config.toml").write_text(
        f'[discord]\napi_base_url = "{fake_discord.api_base_url}"\ngateway_url = "{fake_discord.gateway_url}"\n'
        f'guild_ids = [{GUILD}]\nprogress_interval = 0\n[storage]\npath = "bot.sqlite"\n')
    env = {**os.environ, "PYTHONPATH": str(root), "DISCORD_BOT_TOKEN": TOKEN, "TELEGRAM_BOT_TOKEN": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--simulate", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        banner = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"kling-bot is running (DiscordAdapter)" in banner
        await until(lambda: fake_discord._sockets)
        payload = effect_payload(fake_discord)
        await fake_discord.dispatch("INTERACTION_CREATE", payload)
        upload = await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")
                                      if c["files"]], timeout=40)
        assert mp4_info(upload[0]["files"]["kling-1.mp4"])[0] == "h264"
    finally:
        process.terminate()
        _, stderr = await process.communicate()
    assert process.returncode == 0
    assert TOKEN.encode() not in stderr


async def test_every_command_and_option_has_a_real_description(run_discord, fake_discord):
    await run_discord()
    [sync] = fake_discord.to(f"/applications/{APP_ID}/guilds/{GUILD}/commands", "PUT")

    def undescribed(items, path=""):
        """Commands, subcommands and options whose description is empty or discord.py's "…"."""
        for item in items:
            where = f"{path}/{item['name']}"
            if item.get("description", "") in ("", "…"):
                yield where
            yield from undescribed(item.get("options", []), where)

    commands = [c for c in sync["json"] if c.get("type", 1) == 1]  # context menus have none
    assert list(undescribed(commands)) == []
    animate = next(c for c in commands if c["name"] == "animate")
    model = next(o for o in animate["options"] if o["name"] == "model")
    # The models change with WaveSpeed's listing: autocompleted (tests/test_live_models_discord.py), not fixed choices.
    assert model["autocomplete"] is True and "choices" not in model
