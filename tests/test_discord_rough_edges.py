"""Rough edges a second review of the Discord chat found, through the real discord.py client
against the fake Discord server, each failing before its fix: forms (modals) that died with
a restart, typed names echoed past Discord's 2000 characters, menus replaced before their
checks, refusals after a public "thinking…", avatar audio priced only after the download."""

# The fixtures come from tests/test_discord.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from dataclasses import replace

from bot import messages
from bot.config import QuotaSettings
from tests.helpers import audio_bytes, image_bytes, job_in_state
from tests.test_discord import ALICE, BOB, callbacks, dc_settings, fake_discord, feed, run_discord, until  # noqa: F401
from tests.test_discord_experience import delivered, posts, press, submit_modal, video_message, who


async def test_a_prompt_form_submitted_after_a_restart_gets_an_answer(run_discord, fake_discord, simulator):
    """Telegram's prompt question survives a restart (pending_asks); Discord's form does not:
    the submit reaches a client that has no handler for it and nothing answers (Discord shows
    "This interaction failed")."""
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    await until(lambda: job_in_state(engine, 1, "done"))
    opened = press(fake_discord, adapter, message, "kling:prompt:1", user=BOB)
    [modal] = await until(lambda: callbacks(fake_discord, opened["token"]))
    await adapter.stop()
    await engine.close()

    engine, adapter = await run_discord()  # a deploy while Bob types his prompt
    submit = submit_modal(fake_discord, adapter, modal, "she waves and smiles", user=BOB, message=message)
    await asyncio.sleep(1.5)
    assert callbacks(fake_discord, submit["token"]), "the form's submit was never answered"


async def test_avatar_audio_longer_than_the_credits_buy_says_how_long_a_clip_they_can_afford(
        run_discord, dc_settings, fake_discord, simulator):
    """Telegram: "The audio is 20 s long and costs 4 credits; you have 3, enough for 15 s. Send a
    shorter one." Discord, same request: the generic "You're out of credits: this needs 4 and you
    have 3", after a public deferral and both downloads."""
    _, adapter = await run_discord(replace(dc_settings, quota=QuotaSettings(daily_credits=3)))
    photo = fake_discord.attachment(image_bytes())
    voice = fake_discord.attachment(audio_bytes(20, "mp3", "libmp3lame", 22050), "voice.mp3", "audio/mpeg")
    payload = fake_discord.slash("avatar", [{"name": "image", "type": 11, "value": photo["id"]},
                                            {"name": "audio", "type": 11, "value": voice["id"]}],
                                 user=ALICE, attachments=[photo, voice])
    feed(adapter, payload)
    refusal = await until(lambda: [p["json"]["content"] for p in posts(fake_discord, payload["token"])
                                   if p["json"] and p["json"].get("flags", 0) & 64])
    assert "enough for 15 s" in refusal[0], refusal[0]


async def test_again_without_credits_is_refused_before_a_public_deferral(run_discord, fake_discord, simulator):
    """README: refusals that need no download are ephemeral and come before the deferral. A
    result button pressed by someone without credits first posts a public "thinking…" message
    in the channel, deletes it, then answers privately."""
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    await engine.set_credits(who(BOB), 0)
    press_ = press(fake_discord, adapter, message, "kling:again:1", user=BOB)
    await until(lambda: [p for p in posts(fake_discord, press_["token"]) if p["json"].get("flags", 0) & 64]
                or [c for c in callbacks(fake_discord, press_["token"]) if c["type"] == 4])
    [first, *_] = callbacks(fake_discord, press_["token"])
    assert first["type"] == 4 and first["data"]["flags"] & 64, f"first answer was type {first['type']} (public)"


async def test_another_effect_pick_without_credits_keeps_the_menu(run_discord, fake_discord, simulator):
    """The private effect menu is replaced by "Effect X chosen." before any check; a refused
    pick leaves the user without the menu."""
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    opened = press(fake_discord, adapter, message, "kling:fx:1")
    await until(lambda: callbacks(fake_discord, opened["token"]))
    menu_message = fake_discord.messages[fake_discord.originals[opened["token"]]]
    await engine.set_credits(who(ALICE), 0)  # e.g. spent meanwhile on another job
    pick = press(fake_discord, adapter, menu_message, "kling:fxpick:1", values=["santa_hug"])
    await until(lambda: callbacks(fake_discord, pick["token"]))
    await asyncio.sleep(0.5)
    [first, *_] = callbacks(fake_discord, pick["token"])
    assert not (first["type"] == 7 and first["data"].get("components") == []), \
        "the menu was replaced by 'Effect Santa hug chosen.' and then the pick was refused"


async def test_grant_reply_uses_the_singular(run_discord, fake_discord):
    engine, adapter = await run_discord()
    await engine.set_credits(who(BOB), 0)
    payload = fake_discord.slash("credits", [{"name": "member", "type": 6, "value": str(BOB)},
                                             {"name": "amount", "type": 4, "value": 1}],
                                 subcommand="grant", user=ALICE, permissions="32", users=[BOB])
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert response["data"]["content"] == f"<@{BOB}> now has 1 credit."
    assert messages.usage_today(1, 1).endswith("1 credit spent.")


async def test_a_long_name_typed_in_the_pickers_form_gets_a_refusal(run_discord, fake_discord, simulator):
    """The context menu's "Another effect…" form has no max_length (Discord allows 4000
    characters); the picker echoes the name into "Effect … chosen.", over Discord's 2000, so
    Discord refuses the answer and the user sees "This interaction failed" instead of
    "Unknown effect"."""
    from tests.test_discord import _context_menu
    _, adapter = await run_discord()
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    button = response["data"]["components"][1]["components"][0]
    menu_message = fake_discord.messages[fake_discord.originals[menu["token"]]]
    opened = press(fake_discord, adapter, menu_message, button["custom_id"])
    [modal] = await until(lambda: callbacks(fake_discord, opened["token"]))
    assert modal["type"] == 9
    submit = submit_modal(fake_discord, adapter, modal, "x" * 3000, message=menu_message)
    await asyncio.sleep(1.0)
    refused = fake_discord.violations[:]
    fake_discord.violations.clear()
    assert refused == [], refused
    answers = [c for c in callbacks(fake_discord, submit["token"])] + \
        [p["json"] for p in posts(fake_discord, submit["token"])]
    assert any("Unknown effect" in str(a) for a in answers)


# --- the fixes' own checks ------------------------------------------------------------------

async def test_a_voice_message_longer_than_the_credits_buy_is_refused_before_any_download(
        run_discord, dc_settings, fake_discord, simulator):
    """A voice message carries its length (duration_secs): priced before the deferral."""
    _, adapter = await run_discord(replace(dc_settings, quota=QuotaSettings(daily_credits=3)))
    photo = fake_discord.attachment(image_bytes())
    voice = fake_discord.attachment(audio_bytes(20, "ogg", "libopus", 48000), "voice-message.ogg", "audio/ogg")
    voice.update(duration_secs=20.0, waveform="AAAA")
    payload = fake_discord.slash("avatar", [{"name": "image", "type": 11, "value": photo["id"]},
                                            {"name": "audio", "type": 11, "value": voice["id"]}],
                                 user=ALICE, attachments=[photo, voice])
    feed(adapter, payload)
    [first] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert first["type"] == 4 and first["data"]["flags"] & 64
    assert first["data"]["content"] == messages.audio_costs_too_much(20.0, 4, 3, 15.0)
    assert fake_discord.to("/attachments/") == [] and simulator.submissions == []


async def test_an_effect_form_and_a_photo_menu_work_after_a_restart(run_discord, fake_discord, simulator):
    """The typed-effect form of a result, and the context menu's select, opened before a
    deploy and used after it."""
    from tests.test_discord import _context_menu
    engine, adapter = await run_discord()
    _, message = await delivered(fake_discord, adapter)
    await until(lambda: job_in_state(engine, 1, "done"))
    opened = press(fake_discord, adapter, message, "kling:fx:1")
    await until(lambda: callbacks(fake_discord, opened["token"]))
    menu_message = fake_discord.messages[fake_discord.originals[opened["token"]]]
    typing = press(fake_discord, adapter, menu_message, "kling:fxname:1")
    [form] = await until(lambda: callbacks(fake_discord, typing["token"]))
    assert form["data"]["custom_id"] == "kling:fxform:1"
    assert form["data"]["components"][0]["components"][0]["max_length"] == 100
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    context = _context_menu(fake_discord, target)
    feed(adapter, context)
    [picker] = await until(lambda: callbacks(fake_discord, context["token"]))
    picker_message = fake_discord.messages[fake_discord.originals[context["token"]]]
    select = picker["data"]["components"][0]["components"][0]
    await adapter.stop()
    await engine.close()

    engine, adapter = await run_discord()
    submit_modal(fake_discord, adapter, form, "jelly press", message=menu_message)
    await video_message(fake_discord, "kling-2.mp4")
    assert simulator.submissions[1]["body"]["effect_scene"] == "jelly_press"
    pick = press(fake_discord, adapter, picker_message, select["custom_id"], values=["hula"])
    await video_message(fake_discord, "kling-3.mp4")  # the photo read again from its message
    assert callbacks(fake_discord, pick["token"])[0]["data"]["content"] == "Effect Hula chosen."
    assert simulator.submissions[2]["body"]["effect_scene"] == "hula"


async def test_a_refused_typed_effect_keeps_the_pickers_menu(run_discord, fake_discord, simulator):
    from tests.test_discord import _context_menu
    engine, adapter = await run_discord()
    target = fake_discord.user_message(BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    menu_message = fake_discord.messages[fake_discord.originals[menu["token"]]]
    opened = press(fake_discord, adapter, menu_message, response["data"]["components"][1]["components"][0]["custom_id"])
    [modal] = await until(lambda: callbacks(fake_discord, opened["token"]))
    await engine.set_credits(who(ALICE), 0)
    submit = submit_modal(fake_discord, adapter, modal, "santa hug", message=menu_message)
    [answer] = await until(lambda: callbacks(fake_discord, submit["token"]))
    assert answer["type"] == 4 and answer["data"]["flags"] & 64
    assert answer["data"]["content"].startswith("You're out of credits: this needs 1 and you have 0.")
    assert menu_message["components"] == response["data"]["components"]  # the menu stays
    assert simulator.submissions == []
