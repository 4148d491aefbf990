"""Trust on Telegram (#14), through python-telegram-bot against the fake Bot API: callback
data is the client's word (a button acts only on what its own message may reach), senders
on behalf of a chat are that chat, user input echoed back stays short, and a file of no
told size is read only up to the limit."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import replace

import pytest

from adapters.console import PLATFORM as CONSOLE
from adapters.console import ConsoleChat, ConsoleCourier
from bot import catalog, messages
from bot.jobs import UserRef
from tests.fake_telegram import chat_of
from tests.helpers import image_bytes
from tests.test_telegram import ALICE, BOB, GROUP, TOKEN, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import (
    answers,
    bot_message,
    button,
    deliver_one,
    quiet,
    sent,
    texts,
    videos,
    who,
)

SECRET = "my secret garden prompt"
GROUP2 = -100600
CHANNEL = -100777
RESULT_PRESSES = ("again:{job}", "fxj:{job}:0", "ask:{job}", "other:{job}")


def traffic_since(telegram, start: int) -> str:
    """Everything the bot sent Telegram after call number ``start``: answers, texts, captions."""
    return json.dumps([c["params"] for c in telegram.calls[start:]])


def bot_reply(telegram, chat: int, start: int) -> str:
    """The text of the one message the bot sent to ``chat`` after call number ``start``."""
    [text] = [c["params"]["text"] for c in telegram.calls[start:]
              if c["method"] == "sendMessage" and c["params"]["chat_id"] == chat]
    return text


# --- item 1: result buttons of someone else's job --------------------------------------------

async def test_a_stranger_naming_someones_job_is_refused_like_an_expired_button(run_bot, tg_settings, telegram,
                                                                               simulator):
    """Bob knows job ids are sequential: he sends Alice's job id in each kind of result
    button, from his own chat and from bot messages in Alice's group that carry no such
    button. Each is refused with the expired button's words; nothing is charged, posted or
    sent to WaveSpeed, and Alice's prompt shows up nowhere."""
    engine, _ = await run_bot(quiet(tg_settings))
    alices = await deliver_one(telegram, GROUP, ALICE, caption=f"/animate {SECRET}")  # job 1
    bobs = await deliver_one(telegram, BOB, BOB)  # job 2, in Bob's private chat, with its buttons
    status = bot_message(telegram, GROUP, "done.")  # the bot's message in the group, no buttons
    assert "reply_markup" not in status and SECRET in traffic_since(telegram, 0)  # the caption has it
    bob_credits = (await engine.balance(who(BOB))).total
    start, submissions = len(telegram.calls), len(simulator.submissions)

    forged = [(bobs, data.format(job=1)) for data in RESULT_PRESSES]  # from another chat
    forged += [(status, data.format(job=1)) for data in RESULT_PRESSES]  # no such button on it
    forged.append((alices, "fxj:1:0"))  # Alice's video carries no effect menu's button
    for message, data in forged:
        telegram.press_button(BOB, message, data)
    alerts = await telegram.wait_for(lambda: len(answers(telegram)) == len(forged) and answers(telegram))
    await asyncio.sleep(0.3)

    assert [(a.get("text"), a.get("show_alert")) for a in alerts] == [(messages.SOURCE_GONE, True)] * len(forged)
    assert [c["method"] for c in telegram.calls[start:]] == ["answerCallbackQuery"] * len(forged)  # nothing posted
    assert "secret" not in traffic_since(telegram, start)
    assert len(simulator.submissions) == submissions and (await engine.balance(who(BOB))).total == bob_credits
    assert (await engine.balance(who(ALICE))).total == 9


async def test_the_real_button_works_for_anyone_in_its_chat_and_the_owner_anywhere(run_bot, tg_settings, telegram,
                                                                                 simulator):
    engine, _ = await run_bot(quiet(tg_settings))
    alices = await deliver_one(telegram, GROUP, ALICE, caption="/effect hula")  # job 1
    telegram.press_button(BOB, alices, button(alices, "again:"))  # the button under the video, in its chat
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert (await engine.balance(who(BOB))).total == 9

    telegram.user_message(ALICE, ALICE, text="/quota")
    quota = await telegram.wait_for(lambda: sent(telegram, "You have") and bot_message(telegram, ALICE, "You have"))
    telegram.press_button(ALICE, quota, "again:1")  # the owner, anywhere
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 3)
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["hula"] * 3
    assert (await engine.balance(who(ALICE))).total == 8


# --- item 1: menus keyed by their owner, and /history ----------------------------------------

async def test_a_forged_menu_button_on_someone_elses_menu_is_refused(run_bot, tg_settings, telegram, simulator):
    """The effect menus carry their owner's id: Bob sends his own id in a press of Alice's
    menu under her photo (an effect, or a page), or of her /effects menu."""
    await run_bot(quiet(tg_settings))
    telegram.user_message(GROUP, ALICE, photo=image_bytes(), caption="@kling_test_bot hi")
    telegram.user_message(GROUP, ALICE, text="/effects")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 2)
    photo_menu = bot_message(telegram, GROUP, "Effects cost")
    effects_menu = bot_message(telegram, GROUP, "effects. Tap one")
    assert button(photo_menu, f"fx:{ALICE}:0") and button(effects_menu, f"fxa:{ALICE}:0")
    start = len(telegram.calls)

    forged = [(photo_menu, f"fx:{BOB}:0"), (photo_menu, f"fxp:{BOB}:1"),
              (effects_menu, f"fxa:{BOB}:0"), (effects_menu, f"fxap:{BOB}:1")]
    for message, data in forged:
        telegram.press_button(BOB, message, data)
    alerts = await telegram.wait_for(lambda: len(answers(telegram)) == len(forged) and answers(telegram))
    await asyncio.sleep(0.3)

    assert [(a.get("text"), a.get("show_alert")) for a in alerts] == [(messages.MENU_NOT_YOURS, True)] * len(forged)
    assert [c["method"] for c in telegram.calls[start:]] == ["answerCallbackQuery"] * len(forged)
    assert simulator.submissions == [] and telegram.calls_to("getFile") == []

    telegram.press_button(ALICE, photo_menu, button(photo_menu, f"fx:{ALICE}:0"))  # hers still works
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


async def test_history_posts_again_only_the_owners_video_and_in_a_group_only_its_own(run_bot, tg_settings,
                                                                                    telegram):
    await run_bot(quiet(tg_settings))
    await deliver_one(telegram, ALICE, ALICE, caption=f"/animate {SECRET}")  # job 1: Alice's private chat
    await deliver_one(telegram, GROUP, ALICE)  # job 2: the group's
    telegram.user_message(GROUP, ALICE, text="/history")
    await telegram.wait_for(lambda: sent(telegram, "Your recent jobs"))
    listing = bot_message(telegram, GROUP, "Your recent jobs")
    assert button(listing, "hist:2") and "hist:1" not in json.dumps(listing["reply_markup"])
    start = len(telegram.calls)

    telegram.press_button(ALICE, listing, "hist:1")  # her private video, into the group
    telegram.press_button(BOB, listing, "hist:2")  # someone else's video
    telegram.press_button(BOB, listing, "hist:1")
    alerts = await telegram.wait_for(lambda: len(answers(telegram)) == 3 and answers(telegram))
    await asyncio.sleep(0.3)
    assert all(a.get("show_alert") for a in alerts)
    assert sorted(a["text"] for a in alerts) == sorted(messages.no_such_job(n) for n in (1, 2, 1))
    assert len(telegram.calls_to("sendVideo")) == 2 and "secret" not in traffic_since(telegram, start)

    telegram.press_button(ALICE, listing, button(listing, "hist:2"))  # hers, made here
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 3)


# --- item 3: senders on behalf of a chat -------------------------------------------------------

async def test_anonymous_admins_of_two_groups_are_two_users(run_bot, tg_settings, telegram, simulator):
    """Anonymous admins (and channels) all send as one placeholder user: keyed by it, two
    unrelated groups would share credits, /jobs and /cancel."""
    simulator.job_seconds = 3.0
    engine, _ = await run_bot(quiet(tg_settings).with_wavespeed(max_concurrent=1))
    first, second = chat_of(GROUP, "Gardeners"), chat_of(GROUP2, "Chess club")
    telegram.user_message(GROUP, 0, caption="/effect hula", photo=image_bytes(), sender_chat=first)
    telegram.user_message(GROUP, 0, caption="/effect squish", photo=image_bytes(), sender_chat=first)
    await telegram.wait_for(lambda: any(t.startswith("Job 2 queued") for t in texts(telegram, "editMessageText")))

    for command in ("/quota", "/jobs", "/cancel 2"):
        start = len(telegram.calls)
        telegram.user_message(GROUP2, 0, text=command, sender_chat=second)
        await telegram.wait_for(lambda start=start: [c for c in telegram.calls[start:] if c["method"] == "sendMessage"])
        answer = bot_reply(telegram, GROUP2, start)
        assert {"/quota": "You have 10 credits", "/jobs": "You have no", "/cancel 2": "You have no job 2"}[
            command] in answer, answer
    start = len(telegram.calls)
    telegram.user_message(GROUP, 0, text="/quota", sender_chat=chat_of(CHANNEL, "News", "channel"))  # a channel
    await telegram.wait_for(lambda: [c for c in telegram.calls[start:] if c["method"] == "sendMessage"])
    assert "You have 10 credits" in bot_reply(telegram, GROUP, start)

    start = len(telegram.calls)
    telegram.user_message(GROUP, 0, text="/jobs", sender_chat=first)  # the first group's admins see theirs
    await telegram.wait_for(lambda: [c for c in telegram.calls[start:] if c["method"] == "sendMessage"])
    assert "Job 2" in bot_reply(telegram, GROUP, start)
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2, timeout=30)
    assert (await engine.balance(who(GROUP))).total == 8 and (await engine.balance(who(GROUP2))).total == 10


# --- item 12: echoes of what a user typed ------------------------------------------------------

async def test_a_very_long_effect_name_gets_a_short_refusal(run_bot, telegram, simulator):
    await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    typed = "hula" + "z" * 3996
    telegram.user_message(ALICE, ALICE, text=f"/effect {typed}", reply_to=photo)
    telegram.user_message(ALICE, ALICE, text=f"/animate --model {typed} a cat", reply_to=photo)
    telegram.user_message(ALICE, ALICE, text=f"/animate --{typed} a cat", reply_to=photo)
    telegram.user_message(ALICE, ALICE, text=f"/animate --guidance {typed} a cat", reply_to=photo)
    replies = await telegram.wait_for(lambda: len(texts(telegram)) == 4 and texts(telegram))
    assert messages.SOMETHING_WENT_WRONG not in replies
    assert all(len(reply) < 400 and "zzz…" in reply for reply in replies), replies
    assert any(reply.startswith("Unknown effect 'hulazz") for reply in replies)
    assert simulator.submissions == []
    # the console and Discord read the very same sentences: they come from the catalog's check
    with pytest.raises(catalog.ValidationError) as refused:
        catalog.resolve_effect(typed)
    assert str(refused.value) in replies


# --- item 13: a file of no told size -----------------------------------------------------------

async def test_a_photo_of_no_told_size_is_read_only_up_to_the_limit(run_bot, tg_settings, telegram, simulator,
                                                                    caplog):
    caplog.set_level("DEBUG")
    await run_bot(replace(tg_settings, media=replace(tg_settings.media, max_download_mb=1)))
    size = 20 * 1024 * 1024  # the most getFile serves (over it, getFile refuses: tests/test_faithful_fakes.py)
    began = time.monotonic()
    message = telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=bytes(size), unsized=True)
    assert "file_size" not in json.dumps(message)
    await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if "1.0 MB" in t])
    await asyncio.sleep(0.3)
    [streamed] = telegram.streamed.values()
    # what the fake wrote before the bot hung up, socket buffers included: a few MB, not all 20
    assert streamed < size / 2, f"the bot read {streamed} of {size} bytes"
    [refusal] = texts(telegram, "editMessageText")
    assert refusal == messages.media_larger_than("photo", 1024 * 1024)
    assert time.monotonic() - began < 10
    assert simulator.submissions == [] and TOKEN not in caplog.text
    assert videos(telegram, ALICE) == []


async def test_the_console_answers_a_very_long_effect_name_with_the_same_short_refusal(make_engine, tmp_path):
    engine = await make_engine()
    out = io.StringIO()
    courier = ConsoleCourier(out, tmp_path / "videos")
    engine.register(CONSOLE, courier)
    chat = ConsoleChat(engine, courier, UserRef(CONSOLE, "me", "me"), image_bytes(), out=out)
    typed = "hula" + "z" * 3996
    await chat.handle(f"/effect {typed}")
    await chat.handle(f"/{typed}")
    with pytest.raises(catalog.ValidationError) as refused:
        catalog.resolve_effect(typed)
    lines = out.getvalue().splitlines()
    assert str(refused.value) in lines and messages.unknown_command(f"/{typed}") in lines
    assert all(len(line) < 200 for line in lines), lines
