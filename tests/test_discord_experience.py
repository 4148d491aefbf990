"""Issue #10 on Discord: prices before spending, progress in %, buttons on every video
(also after a restart), /history, one cancel message, readable effect names, a video
that fits the channel's upload limit, and a first photo answered.

The real discord.py client against the fake Discord server; assertions are on what the
fake recorded, i.e. what Discord (and so the user) saw.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import discord
import pytest

import tests.test_discord as base
from adapters.discord import DiscordAdapter
from bot import messages
from bot.config import QuotaSettings
from bot.jobs import UserRef
from tests.fake_discord import APP_ID, CHANNEL, GUILD
from tests.helpers import audio_bytes, image_bytes, job_in_state, mp4_info

ALICE, BOB = base.ALICE, base.BOB
fake_discord, dc_settings, run_discord = base.fake_discord, base.dc_settings, base.run_discord
feed, until, callbacks, edits, effect_payload = base.feed, base.until, base.callbacks, base.edits, base.effect_payload
MiB = 1024 * 1024
DM_CHANNEL = 700000000000000099


def who(user_id):
    return UserRef("discord", str(user_id))


def components(message):
    """A message's buttons and selects by custom id."""
    return {c["custom_id"]: c for row in message.get("components", []) for c in row.get("components", [])}


def posts(fake, token):
    return fake.to(f"/webhooks/{APP_ID}/{token}", "POST")


async def video_message(fake, filename):
    """The message (as the fake stores it) that carries a video file."""
    return await until(lambda: next((m for m in fake.messages.values()
                                     if any(a["filename"] == filename for a in m["attachments"])), None))


async def delivered(fake, adapter, **kw):
    """Alice makes a video with /effect hula; the message that carries it."""
    payload = effect_payload(fake, **kw)
    feed(adapter, payload)
    return payload, await video_message(fake, "kling-1.mp4")


def press(fake, adapter, message, custom_id, *, user=ALICE, values=None, **kw):
    data = {"custom_id": custom_id, "component_type": 3 if values else 2, **({"values": values} if values else {})}
    payload = fake.interaction(3, data, user=user, message=message, **kw)
    feed(adapter, payload)
    return payload


def submit_modal(fake, adapter, modal, text, *, user=ALICE, message=None):
    field = modal["data"]["components"][0]["components"][0]
    payload = fake.interaction(5, {"custom_id": modal["data"]["custom_id"], "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": field["custom_id"], "value": text}]}]},
        user=user, message=message)
    feed(adapter, payload)
    return payload


# --- prices before spending ------------------------------------------------------------

async def test_help_shows_prices_and_the_users_credits(run_discord, fake_discord):
    engine, adapter = await run_discord()
    payload = fake_discord.slash("help", [], user=ALICE)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    text = answer["data"]["content"]
    assert engine.price_text() in text and "Prices:" in text and "master" in text
    assert "You have 10 credits." in text and "/history" in text


async def test_effect_picker_shows_costs_and_readable_names(run_discord, fake_discord):
    _, adapter = await run_discord()
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = base._context_menu(fake_discord, target)
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    assert response["data"]["content"] == "Pick an effect: each costs 1 credit; you have 10."
    options = response["data"]["components"][0]["components"][0]["options"]
    assert options[0] == {"label": "Emoji", "value": "emoji", "description": "1 credit", "default": False}
    assert {"label": "Let's ride", "value": "let's_ride"}.items() <= options[1].items()


async def test_animate_without_enough_credits_is_refused_first_and_downloads_nothing(
        run_discord, dc_settings, fake_discord, simulator):
    _, adapter = await run_discord(replace(dc_settings, quota=QuotaSettings(daily_credits=3)))
    photo = fake_discord.attachment(image_bytes(800, 600))
    payload = fake_discord.slash("animate", [
        {"name": "image", "type": 11, "value": photo["id"]}, {"name": "prompt", "type": 3, "value": "a cat dances"},
        {"name": "model", "type": 3, "value": "master"}], user=ALICE, attachments=[photo])
    feed(adapter, payload)
    [first, *_] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert first["type"] == 4 and first["data"]["flags"] & 64  # the answer itself, not a deferral
    assert first["data"]["content"].startswith("You're out of credits: this needs 4 and you have 3.")
    assert fake_discord.to("/attachments/") == [] and simulator.submissions == []


async def test_avatar_without_credits_is_refused_first_and_downloads_nothing(
        run_discord, dc_settings, fake_discord, simulator):
    engine, adapter = await run_discord(replace(dc_settings, quota=QuotaSettings(daily_credits=0)))
    photo = fake_discord.attachment(image_bytes())
    voice = fake_discord.attachment(audio_bytes(2, "mp3", "libmp3lame", 22050), "voice.mp3", "audio/mpeg")
    payload = fake_discord.slash("avatar", [{"name": "image", "type": 11, "value": photo["id"]},
                                            {"name": "audio", "type": 11, "value": voice["id"]}],
                                 user=ALICE, attachments=[photo, voice])
    feed(adapter, payload)
    [first] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert first["type"] == 4 and first["data"]["flags"] & 64
    assert first["data"]["content"] == messages.avatar_unaffordable(1, 0)  # the price, before any download
    assert fake_discord.to("/attachments/") == [] and simulator.submissions == []


# --- progress ----------------------------------------------------------------------------

async def test_progress_edit_shows_a_percentage_and_time_left(run_discord, fake_discord, simulator):
    simulator.job_seconds = 2.0
    _, adapter = await run_discord()
    payload = effect_payload(fake_discord)
    feed(adapter, payload)
    generating = await until(lambda: [e for e in edits(fake_discord, payload["token"]) if "%" in e])
    assert generating[0].startswith("Job 1 (effect hula): Generating… ")
    assert "left" in generating[0] or "longer than usual" in generating[0]


# --- buttons on every video ----------------------------------------------------------------

async def test_every_video_carries_again_effect_and_prompt_buttons(run_discord, fake_discord):
    _, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    buttons = components(message)
    assert list(buttons) == ["kling:again:1", "kling:fx:1", "kling:prompt:1"]
    assert [b["label"] for b in buttons.values()] == ["🔁 Again", "✨ Another effect", "✍️ Animate with a prompt"]


async def test_no_buttons_when_photos_are_not_kept(run_discord, dc_settings, fake_discord):
    """``[storage] keep_days = 0``: the buttons could only refuse, so the video has none."""
    _, adapter = await run_discord(replace(dc_settings, storage=replace(dc_settings.storage, keep_days=0)))
    _, message = await delivered(fake_discord, adapter)
    assert components(message) == {}


async def test_again_starts_a_new_job_charged_to_whoever_presses(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    press_ = press(fake_discord, adapter, message, "kling:again:1", user=BOB)
    video = await video_message(fake_discord, "kling-2.mp4")
    assert callbacks(fake_discord, press_["token"])[0]["type"] == 5  # deferred: a new public message follows
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["hula", "hula"]
    assert video["content"] == f"<@{BOB}> effect hula · Kling Effects"
    assert list(components(video)) == ["kling:again:2", "kling:fx:2", "kling:prompt:2"]
    assert (await engine.balance(who(BOB))).total == 9 and (await engine.balance(who(ALICE))).total == 9
    status = await until(lambda: [e for e in edits(fake_discord, press_["token"]) if e.endswith("done.")])
    assert status == ["Job 2 (effect hula): done."]


async def test_another_effect_offers_a_priced_menu_and_runs_the_pick(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    opened = press(fake_discord, adapter, message, "kling:fx:1")
    [menu] = await until(lambda: callbacks(fake_discord, opened["token"]))
    assert menu["type"] == 4 and menu["data"]["flags"] & 64
    assert menu["data"]["content"] == "Pick an effect: each costs 1 credit; you have 9."
    items = components({"components": menu["data"]["components"]})
    select = items["kling:fxpick:1"]
    splash = {"label": "Splash", "value": "splashsplash", "description": "1 credit", "default": False}
    assert splash in select["options"]
    assert "kling:fxname:1" in items
    menu_message = fake_discord.messages[fake_discord.originals[opened["token"]]]
    pick = press(fake_discord, adapter, menu_message, "kling:fxpick:1", values=["santa_hug"])
    await video_message(fake_discord, "kling-2.mp4")
    [chosen] = callbacks(fake_discord, pick["token"])
    assert chosen["type"] == 7 and chosen["data"]["content"] == "Effect Santa hug chosen."
    assert simulator.submissions[1]["body"]["effect_scene"] == "santa_hug"
    assert posts(fake_discord, pick["token"])[0]["json"]["content"] == "Checking the photo…"


async def test_another_effect_typed_by_name(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    opened = press(fake_discord, adapter, message, "kling:fx:1")
    await until(lambda: callbacks(fake_discord, opened["token"]))
    menu_message = fake_discord.messages[fake_discord.originals[opened["token"]]]
    typing = press(fake_discord, adapter, menu_message, "kling:fxname:1")
    [modal] = await until(lambda: callbacks(fake_discord, typing["token"]))
    assert modal["type"] == 9
    submit_modal(fake_discord, adapter, modal, "jelly press", message=menu_message)
    await video_message(fake_discord, "kling-2.mp4")
    assert simulator.submissions[1]["body"]["effect_scene"] == "jelly_press"


async def test_prompt_button_opens_a_modal_and_animates_the_same_photo(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    opened = press(fake_discord, adapter, message, "kling:prompt:1", user=BOB)
    [modal] = await until(lambda: callbacks(fake_discord, opened["token"]))
    assert modal["type"] == 9 and modal["data"]["title"] == "✍️ Animate with a prompt"
    field = modal["data"]["components"][0]["components"][0]
    assert field["label"] == "What should happen in the video" and field["style"] == 2
    submit = submit_modal(fake_discord, adapter, modal, "she waves and smiles", user=BOB, message=message)
    await video_message(fake_discord, "kling-2.mp4")
    assert callbacks(fake_discord, submit["token"])[0]["type"] == 5
    second = simulator.submissions[1]
    assert second["model"] == "kwaivgi/kling-v2.1-i2v-standard" and second["body"]["prompt"] == "she waves and smiles"
    assert simulator.uploads  # the kept photo went to WaveSpeed again, without a new upload by the user
    assert (await engine.balance(who(BOB))).total == 9 and (await engine.balance(who(ALICE))).total == 9


@pytest.mark.parametrize("why", ["no credits", "photo gone", "channel not allowed"])
async def test_button_refusals_are_private(run_discord, dc_settings, fake_discord, simulator, why):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    expected = {"no credits": "You're out of credits: this needs 1 and you have 0.",
                "photo gone": "The photo of that video is no longer kept",
                "channel not allowed": "I don't make videos in this channel."}[why]
    if why == "no credits":
        await engine.set_credits(who(BOB), 0)
    elif why == "photo gone":
        await engine.store.files.drop(1)
    else:
        adapter.settings = replace(adapter.settings, allowed_channels=[123])
    press_ = press(fake_discord, adapter, message, "kling:again:1", user=BOB)
    refusal = await until(lambda: [p["json"] for p in posts(fake_discord, press_["token"]) if p["json"]["flags"] & 64]
                          or [c["data"] for c in callbacks(fake_discord, press_["token"]) if c["type"] == 4])
    assert refusal[0]["content"].startswith(expected) and refusal[0]["flags"] & 64
    assert len(simulator.submissions) == 1
    public = [m for m in fake_discord.messages.values() if m["content"] == "Checking the photo…"]
    assert public == []  # a status message opened for the press is gone again
    assert (await engine.balance(who(BOB))).total == (0 if why == "no credits" else 10)


@pytest.mark.parametrize("why", ["no credits", "photo gone"])
@pytest.mark.parametrize("button", ["kling:fx:1", "kling:prompt:1"])
async def test_no_menu_or_form_opens_when_the_press_cannot_make_a_video(run_discord, fake_discord, button, why):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    if why == "no credits":
        await engine.set_credits(who(BOB), 0)
    else:
        await engine.store.files.drop(1)  # as [storage] keep_days does
    press_ = press(fake_discord, adapter, message, button, user=BOB)
    [answer] = await until(lambda: callbacks(fake_discord, press_["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64 and "components" not in answer["data"]
    assert answer["data"]["content"].startswith({
        "no credits": "You're out of credits: this needs 1 and you have 0.",
        "photo gone": "The photo of that video is no longer kept"}[why])


async def test_buttons_start_a_job_after_a_restart(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    await until(lambda: job_in_state(engine, 1, "done"))
    await adapter.stop()
    await engine.close()

    engine, adapter = await run_discord()  # a new process on the same database
    press_ = press(fake_discord, adapter, message, "kling:again:1", user=BOB)
    video = await video_message(fake_discord, "kling-2.mp4")
    assert [c["type"] for c in callbacks(fake_discord, press_["token"])] == [5]
    assert len(simulator.submissions) == 2 and "kling:again:2" in components(video)


# --- /history ----------------------------------------------------------------------------

async def test_history_lists_autocompletes_and_reposts_a_video_with_buttons(run_discord, dc_settings, fake_discord):
    engine, adapter = await run_discord()
    await delivered(fake_discord, adapter)
    await until(lambda: job_in_state(engine, 1, "done"))

    listing = fake_discord.slash("history", [], user=ALICE)
    feed(adapter, listing)
    [answer] = await until(lambda: callbacks(fake_discord, listing["token"]))
    assert answer["data"]["flags"] & 64 and "Job 1 (effect hula): done" in answer["data"]["content"]

    ask = fake_discord.interaction(4, {"id": "1", "name": "history", "type": 1, "options": [
        {"name": "job", "type": 4, "value": "", "focused": True}]}, user=ALICE)
    feed(adapter, ask)
    [choices] = await until(lambda: callbacks(fake_discord, ask["token"]))
    assert choices["type"] == 8 and choices["data"]["choices"] == [{"name": "Job 1: effect hula", "value": 1}]

    again = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=ALICE)
    feed(adapter, again)
    upload = await until(lambda: [p for p in posts(fake_discord, again["token"]) if p["files"]])
    assert list(upload[0]["files"]) == ["kling-1.mp4"] and mp4_info(upload[0]["files"]["kling-1.mp4"])[0] == "h264"
    assert list(components(upload[0]["json"])) == ["kling:again:1", "kling:fx:1", "kling:prompt:1"]
    await until(lambda: fake_discord.to(f"/webhooks/{APP_ID}/{again['token']}/messages/", "DELETE"))
    videos = Path(dc_settings.storage.videos_dir)
    assert [p.name for p in videos.iterdir() if p.name.startswith("again-")] == []  # the fetched file is gone


async def test_history_of_someone_elses_job_is_refused(run_discord, fake_discord):
    engine, adapter = await run_discord()
    await delivered(fake_discord, adapter)
    await until(lambda: job_in_state(engine, 1, "done"))
    payload = fake_discord.slash("history", [{"name": "job", "type": 4, "value": 1}], user=BOB)
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"] == {"content": "You have no job 1.", "flags": 64} or \
        (answer["data"]["content"] == "You have no job 1." and answer["data"]["flags"] & 64)


# --- one cancel message ---------------------------------------------------------------------

async def test_cancel_answers_once_and_edits_the_status_message(run_discord, dc_settings, fake_discord, simulator):
    simulator.job_seconds = 3.0
    engine, adapter = await run_discord(dc_settings.with_wavespeed(max_concurrent=1))
    first = effect_payload(fake_discord)
    feed(adapter, first)
    await until(lambda: job_in_state(engine, 1, "processing"))
    second = effect_payload(fake_discord, scene="squish", user=BOB)
    feed(adapter, second)
    await until(lambda: [e for e in edits(fake_discord, second["token"]) if e.startswith("Job 2 queued")])
    cancel = fake_discord.slash("cancel", [{"name": "job", "type": 4, "value": 2}], user=BOB)
    feed(adapter, cancel)
    [answer] = await until(lambda: callbacks(fake_discord, cancel["token"]))
    assert answer["data"]["content"] == "Job 2 cancelled; 1 credit refunded." and answer["data"]["flags"] & 64
    final = await until(lambda: [e for e in edits(fake_discord, second["token"]) if "cancelled" in e])
    assert final == ["Job 2 (effect squish): cancelled; 1 credit refunded."]
    await video_message(fake_discord, "kling-1.mp4")  # the other job goes on
    assert posts(fake_discord, second["token"]) == [] and posts(fake_discord, cancel["token"]) == []
    assert fake_discord.to(f"/channels/{CHANNEL}/messages", "POST") == []
    assert (await engine.balance(who(BOB))).total == 10


# --- readable effect names ---------------------------------------------------------------------

async def test_effect_autocomplete_shows_titles_and_sends_api_spellings(run_discord, fake_discord, simulator):
    _, adapter = await run_discord()
    ask = fake_discord.interaction(4, {"id": "1", "name": "effect", "type": 1, "options": [
        {"name": "scene", "type": 3, "value": "boyfr", "focused": True}]}, user=ALICE)
    feed(adapter, ask)
    [answer] = await until(lambda: callbacks(fake_discord, ask["token"]))
    assert {"name": "Boyfriend", "value": "boylfriend"} in answer["data"]["choices"]
    payload = effect_payload(fake_discord, scene="boylfriend")
    feed(adapter, payload)
    await until(lambda: simulator.submissions)
    assert simulator.submissions[0]["body"]["effect_scene"] == "boylfriend"


# --- a video that fits -----------------------------------------------------------------------------

async def test_a_14_mb_video_reaches_a_10_mib_channel_as_a_playable_mp4(run_discord, fake_discord, simulator):
    simulator.video_bytes, simulator.video_seconds = 14 * 1000 * 1000, 5.0
    _, adapter = await run_discord()
    payload = effect_payload(fake_discord, size_limit=10 * MiB)
    feed(adapter, payload)
    [post] = await until(lambda: posts(fake_discord, payload["token"]), timeout=90)
    assert fake_discord.to(f"/channels/{CHANNEL}/messages", "POST") == []  # no link message anywhere
    [task] = simulator.tasks.values()
    assert len(task.video) > 13 * 1000 * 1000  # what WaveSpeed served: over the limit
    [(name, data)] = post["files"].items()
    assert name == "kling-1.mp4" and len(data) < 10 * MiB
    codec, *_ = mp4_info(data)
    assert codec == "h264"
    assert "http" not in post["json"]["content"] and "over this server's upload limit" not in post["json"]["content"]
    assert list(components(await video_message(fake_discord, "kling-1.mp4"))) == [
        "kling:again:1", "kling:fx:1", "kling:prompt:1"]


# --- first contact ------------------------------------------------------------------------------------

@pytest.fixture
async def gateway_discord(adapter_runner, dc_settings, fake_discord):
    """The adapter started in full: REST login and the gateway (MESSAGE_CREATE reaches it)."""
    original = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE
    settings = replace(dc_settings, discord=replace(dc_settings.discord, gateway_url=fake_discord.gateway_url))
    engine, adapter = await adapter_runner(settings, DiscordAdapter)
    await until(lambda: adapter.client.is_ready())
    yield engine, adapter
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE = original


def replies_in(fake, channel):
    return [c["json"] for c in fake.to(f"/channels/{channel}/messages", "POST")]


async def test_a_photo_sent_in_a_dm_gets_the_effect_menu_and_works(gateway_discord, fake_discord, simulator):
    engine, adapter = gateway_discord
    photo = fake_discord.user_message(ALICE, [fake_discord.attachment(image_bytes(800, 600))],
                                      channel_id=str(DM_CHANNEL))
    await fake_discord.dispatch("MESSAGE_CREATE", photo)
    [reply] = await until(lambda: replies_in(fake_discord, DM_CHANNEL))
    assert reply["content"].startswith("Pick an effect for this photo (1 credit each; you have 10).")
    assert "/animate" in reply["content"] and "/avatar" in reply["content"]
    assert int(reply["message_reference"]["message_id"]) == int(photo["id"])
    menu = components(reply)
    select = menu[f"kling:pick:{DM_CHANNEL}:{photo['id']}"]
    assert select["options"][0] == {"label": "Emoji", "value": "emoji", "description": "1 credit", "default": False}
    assert f"kling:pickname:{DM_CHANNEL}:{photo['id']}" in menu

    menu_message = next(m for m in fake_discord.messages.values() if m["components"] == reply["components"])
    pick = press(fake_discord, adapter, menu_message, f"kling:pick:{DM_CHANNEL}:{photo['id']}",
                 values=["hula"], dm=DM_CHANNEL)
    upload = await until(lambda: [p for p in posts(fake_discord, pick["token"]) if p["files"]])
    assert "kling-1.mp4" in upload[0]["files"] and simulator.submissions[0]["body"]["effect_scene"] == "hula"
    assert (await engine.balance(who(ALICE))).total == 9


async def test_a_photo_mentioning_the_bot_in_a_server_gets_the_menu(gateway_discord, fake_discord, simulator):
    engine, adapter = gateway_discord
    attachment = [fake_discord.attachment(image_bytes())]
    quiet = fake_discord.user_message(BOB, attachment, guild_id=str(GUILD))
    await fake_discord.dispatch("MESSAGE_CREATE", quiet)
    addressed = fake_discord.user_message(BOB, attachment, guild_id=str(GUILD), mentions_bot=True)
    await fake_discord.dispatch("MESSAGE_CREATE", addressed)
    [reply] = await until(lambda: replies_in(fake_discord, CHANNEL))
    assert int(reply["message_reference"]["message_id"]) == int(addressed["id"])  # not the quiet one
    assert f"kling:pick:{CHANNEL}:{addressed['id']}" in components(reply)
    menu = next(m for m in fake_discord.messages.values() if m["components"] == reply["components"])
    pick = press(fake_discord, adapter, menu, f"kling:pick:{CHANNEL}:{addressed['id']}", user=ALICE, values=["hula"])
    [refusal] = await until(lambda: [p["json"] for p in posts(fake_discord, pick["token"])])
    assert refusal["content"] == messages.DISCORD_MENU_NOT_YOURS and refusal["flags"] & 64  # Bob's photo
    assert simulator.submissions == [] and (await engine.balance(who(ALICE))).total == 10


async def test_plain_text_in_a_dm_gets_a_pointer_to_help(gateway_discord, fake_discord):
    hello = fake_discord.user_message(ALICE, content="hi", channel_id=str(DM_CHANNEL))
    await fake_discord.dispatch("MESSAGE_CREATE", hello)
    [reply] = await until(lambda: replies_in(fake_discord, DM_CHANNEL))
    assert reply["content"] == "Send me a photo to animate it. /help shows what I can do."


async def test_the_photo_menu_works_after_a_restart(gateway_discord, run_discord, fake_discord, simulator):
    engine, adapter = gateway_discord
    photo = fake_discord.user_message(ALICE, [fake_discord.attachment(image_bytes())], channel_id=str(DM_CHANNEL))
    await fake_discord.dispatch("MESSAGE_CREATE", photo)
    [reply] = await until(lambda: replies_in(fake_discord, DM_CHANNEL))
    await adapter.stop()
    await engine.close()

    _, adapter = await run_discord()
    menu_message = next(m for m in fake_discord.messages.values() if m["components"] == reply["components"])
    pick = press(fake_discord, adapter, menu_message, f"kling:pick:{DM_CHANNEL}:{photo['id']}",
                 values=["squish"], dm=DM_CHANNEL)
    await until(lambda: [p for p in posts(fake_discord, pick["token"]) if p["files"]])
    assert simulator.submissions[0]["body"]["effect_scene"] == "squish"
