"""The Telegram chat experience (#10), through python-telegram-bot against the fake Bot API:
the first photo answered, prices before spending, progress you can read, buttons on a
delivered video (also after a restart), /history, one cancel message, a tappable /effects."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io
import itertools
import time
from dataclasses import replace
from pathlib import Path

import av
import pytest

from bot import catalog, messages
from bot.config import QuotaSettings
from bot.jobs import UserRef
from tests.helpers import audio_bytes, image_bytes
from tests.test_telegram import ALICE, BOB, GROUP, TOKEN, run_bot, telegram, tg_settings  # noqa: F401


def quiet(settings):
    """Progress edits at stage changes only: PTB's rate limiter lets a group have 20
    messages a minute, and group tests post two jobs."""
    return replace(settings, telegram=replace(settings.telegram, progress_interval=60.0))


def who(user_id: int) -> UserRef:
    return UserRef("telegram", str(user_id))


def texts(telegram, method="sendMessage") -> list[str]:
    return [c["params"]["text"] for c in telegram.calls_to(method)]


def sent(telegram, text_part: str) -> list[dict]:
    """sendMessage calls whose text holds ``text_part``."""
    return [c["params"] for c in telegram.calls_to("sendMessage") if text_part in c["params"]["text"]]


def buttons(markup: dict) -> list[dict]:
    return [b for row in markup["inline_keyboard"] for b in row]


def button(message: dict, prefix: str) -> str:
    """The callback data of a message's button whose data is, or else starts with, ``prefix``."""
    datas = [b["callback_data"] for b in buttons(message["reply_markup"])]
    if prefix in datas:
        return prefix
    [data] = [d for d in datas if d.startswith(prefix)]
    return data


def bot_message(telegram, chat: int, text_part: str) -> dict:
    """The newest message the bot sent to ``chat`` whose text holds ``text_part``."""
    found = [m for (c, _), m in sorted(telegram.messages.items())
             if c == chat and m["from"]["id"] == telegram.bot_user["id"] and text_part in m.get("text", "")]
    return found[-1]


def videos(telegram, chat: int) -> list[dict]:
    return [m for (c, _), m in sorted(telegram.messages.items()) if c == chat and "video" in m]


def answers(telegram) -> list[dict]:
    return [c["params"] for c in telegram.calls_to("answerCallbackQuery")]


async def deliver_one(telegram, chat=ALICE, user=ALICE, caption="/effect hula") -> dict:
    """A photo with an effect caption, until its video is posted; the video message."""
    before = len(telegram.calls_to("sendVideo"))
    telegram.user_message(chat, user, caption=caption, photo=image_bytes())
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) > before)
    await telegram.wait_for(lambda: texts(telegram, "editMessageText")[-1].endswith("done."))
    return videos(telegram, chat)[-1]


# --- 1. first contact ----------------------------------------------------------------------

async def test_a_bare_photo_in_a_private_chat_gets_the_priced_effect_menu(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes())
    [menu] = await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))

    params = menu["params"]
    assert params["reply_parameters"]["message_id"] == photo["message_id"]
    assert "/animate" in params["text"] and "/avatar" in params["text"]
    assert "Effects cost 1 credit each; you have 10." in params["text"]
    titles = [b["text"] for b in buttons(params["reply_markup"])]
    assert titles[:3] == ["Emoji", "Let's ride", "Snatched"]  # readable names, not let's_ride
    assert telegram.calls_to("getFile") == []  # nothing downloaded for a menu

    message = bot_message(telegram, ALICE, "Effects cost")
    lets_ride = catalog.EFFECTS.index("let's_ride")
    telegram.press_button(ALICE, message, button(message, f"fx:{ALICE}:{lets_ride}"))
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert simulator.submissions[0]["body"]["effect_scene"] == "let's_ride"
    assert (await engine.balance(who(ALICE))).total == 9


async def test_in_a_group_only_photos_addressed_to_the_bot_get_the_menu(run_bot, telegram):
    await run_bot()
    telegram.user_message(GROUP, ALICE, photo=image_bytes())  # a photo for the group, not the bot
    telegram.user_message(GROUP, ALICE, text="nice photo")
    await asyncio.sleep(0.4)
    assert telegram.calls_to("sendMessage") == []

    mentioned = telegram.user_message(GROUP, ALICE, photo=image_bytes(), caption="@Kling_Test_Bot make it move")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 1)
    telegram.user_message(GROUP, BOB, text="/quota")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 2)
    quota_answer = bot_message(telegram, GROUP, "You have 10 credits")
    replying = telegram.user_message(GROUP, BOB, photo=image_bytes(), reply_to=quota_answer)
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 3)

    menus = [c["params"] for c in telegram.calls_to("sendMessage") if "reply_markup" in c["params"]]
    assert [m["reply_parameters"]["message_id"] for m in menus] == [mentioned["message_id"], replying["message_id"]]
    assert button(bot_message(telegram, GROUP, "Effects cost"), f"fx:{BOB}:0")  # Bob's menu is Bob's


async def test_plain_text_and_unknown_commands_point_to_help_in_private_only(run_bot, telegram):
    await run_bot()
    telegram.user_message(GROUP, ALICE, text="hello everyone")
    telegram.user_message(GROUP, ALICE, text="/frobnicate")
    telegram.user_message(ALICE, ALICE, text="hello")
    telegram.user_message(ALICE, ALICE, text="/frobnicate now")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 2)
    await asyncio.sleep(0.3)
    assert sorted(texts(telegram)) == sorted([messages.TEXT_POINTER, messages.unknown_command("/frobnicate")])
    assert {c["params"]["chat_id"] for c in telegram.calls_to("sendMessage")} == {ALICE}


async def test_start_greets_with_credits_prices_and_how_to_begin(run_bot, telegram):
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, text="/start")
    [greeting] = await telegram.wait_for(lambda: texts(telegram))
    assert greeting.startswith("Hi User1001! I turn a photo into a short Kling AI video.")
    assert (await engine.balance(who(ALICE))).text()[:20] in greeting  # "You have 10 credits…"
    assert engine.price_text() in greeting and "Send me a photo" in greeting

    telegram.user_message(ALICE, ALICE, text="/help")
    await telegram.wait_for(lambda: len(texts(telegram)) == 2)
    assert engine.price_text() in texts(telegram)[1] and "/history" in texts(telegram)[1]


# --- 2. prices before spending ---------------------------------------------------------------

@pytest.mark.parametrize("credits, caption, expected", [
    (10, "/effect hulla", "Unknown effect 'hulla'. Did you mean 'hula'?"),
    (10, "/animate --duration 7 a cat dances", "Duration must be 5 or 10 seconds"),
    (3, "/animate --model master --duration 10 a cat dances", "You're out of credits: this needs 8 and you have 3."),
    (0, "/effect hula", "You're out of credits: this needs 1 and you have 0."),
])
async def test_refusals_come_before_any_download_or_status(run_bot, telegram, simulator, credits, caption, expected):
    engine, _ = await run_bot()
    await engine.set_credits(who(ALICE), credits)
    telegram.user_message(ALICE, ALICE, caption=caption, photo=image_bytes())
    await telegram.wait_for(lambda: sent(telegram, expected))
    await asyncio.sleep(0.2)
    assert telegram.calls_to("getFile") == [] and simulator.uploads == {}
    assert messages.CHECKING_PHOTO not in texts(telegram) and texts(telegram, "editMessageText") == []


async def test_too_many_jobs_is_refused_before_the_download(run_bot, tg_settings, telegram, simulator):
    simulator.job_seconds = 3.0
    await run_bot(replace(tg_settings, quota=QuotaSettings(max_jobs_per_user=1)))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: simulator.submissions)
    telegram.user_message(ALICE, ALICE, caption="/effect squish", photo=image_bytes())
    await telegram.wait_for(lambda: sent(telegram, "You already have 1 job queued or running"))
    assert len(telegram.calls_to("getFile")) == 1


async def test_avatar_says_what_audio_the_user_can_afford_or_refuses_up_front(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    await engine.set_credits(who(ALICE), 3)
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/avatar", reply_to=photo)
    [ask] = await telegram.wait_for(lambda: sent(telegram, "voice note"))
    assert "(up to 15 s)" in ask["text"] and "1 credit per 5 s" in ask["text"]
    assert ask["reply_markup"]["force_reply"] is True
    asked = bot_message(telegram, ALICE, "voice note")
    telegram.user_message(ALICE, ALICE, voice=audio_bytes(2.0, "ogg", "libopus"), voice_seconds=20, reply_to=asked)
    await telegram.wait_for(lambda: sent(telegram, "20 s long"))
    assert sent(telegram, "20 s long")[0]["text"] == (
        "The audio is 20 s long and costs 4 credits; you have 3, enough for 15 s. Send a shorter one.")
    assert telegram.calls_to("getFile") == []  # priced from the length Telegram told, before any download

    await engine.set_credits(who(BOB), 0)
    photo = telegram.user_message(BOB, BOB, photo=image_bytes(), push=False)
    telegram.user_message(BOB, BOB, text="/avatar", reply_to=photo)
    await telegram.wait_for(lambda: [c for c in telegram.calls_to("sendMessage") if c["params"]["chat_id"] == BOB])
    [refusal] = [c["params"]["text"] for c in telegram.calls_to("sendMessage") if c["params"]["chat_id"] == BOB]
    assert "voice note" not in refusal and "credit" in refusal  # refused before asking for anything


# --- 3. progress ---------------------------------------------------------------------------

async def test_progress_edits_show_a_percentage(run_bot, telegram, simulator):
    simulator.job_seconds = 1.5
    await run_bot()
    await deliver_one(telegram)
    assert any("%" in t and "Generating" in t for t in texts(telegram, "editMessageText"))


async def test_progress_in_a_group_stays_within_telegrams_group_limit(run_bot, tg_settings, telegram, simulator):
    """Two jobs in one group, progress asked for every 0.5 s: the group's progress edits
    (both jobs together) come at least 6 s apart, as Telegram's 20 a minute need."""
    simulator.job_seconds = 8.0
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, progress_interval=0.5)))
    for user in (ALICE, BOB):
        telegram.user_message(GROUP, user, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2, timeout=40)
    moments = [c["at"] for c in telegram.calls_to("editMessageText")
               if "Generating" in c["params"]["text"] and int(c["params"]["chat_id"]) == GROUP]
    assert len(moments) >= 2
    gaps = [b - a for a, b in itertools.pairwise(moments)]
    short = [gap for gap in gaps if gap < 5.9]
    assert len(short) <= 1, gaps  # the second job's first "Generating" is a stage change: shown at once


# --- 4. buttons on a delivered video ------------------------------------------------------------

async def test_a_delivered_video_carries_priced_result_buttons(run_bot, telegram):
    await run_bot()
    video = await deliver_one(telegram)
    [call] = telegram.calls_to("sendVideo")
    labels = {b["callback_data"].split(":")[0]: b["text"] for b in buttons(call["params"]["reply_markup"])}
    assert labels == {"again": messages.priced(messages.BUTTON_AGAIN, 1),
                      "other": messages.priced(messages.BUTTON_OTHER_EFFECT, 1),
                      "ask": messages.priced(messages.BUTTON_PROMPT, 1)}
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons(video["reply_markup"]))


async def test_no_buttons_when_photos_are_not_kept(run_bot, tg_settings, telegram):
    """``[storage] keep_days = 0``: the buttons could only refuse, so the video has none."""
    await run_bot(replace(tg_settings, storage=replace(tg_settings.storage, keep_days=0)))
    await deliver_one(telegram)
    [call] = telegram.calls_to("sendVideo")
    assert "reply_markup" not in call["params"]


async def test_again_charges_whoever_presses_and_replies_to_the_video(run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE, "/animate --duration 10 a cat dances")
    assert (await engine.balance(who(ALICE))).total == 8

    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    [toast] = answers(telegram)
    assert toast["text"].startswith("Job 2 queued") and not toast.get("show_alert")
    status = [c for c in telegram.calls_to("sendMessage") if c["params"]["text"] == messages.CHECKING_PHOTO][-1]
    assert status["params"]["reply_parameters"]["message_id"] == video["message_id"]
    second = telegram.calls_to("sendVideo")[1]["params"]
    assert second["reply_parameters"]["message_id"] == video["message_id"]
    assert simulator.submissions[1]["body"]["prompt"] == "a cat dances"
    assert simulator.submissions[1]["body"]["duration"] == "10"
    assert (await engine.balance(who(BOB))).total == 8 and (await engine.balance(who(ALICE))).total == 8


async def test_another_effect_opens_a_menu_whose_tap_runs_that_effect(run_bot, telegram, simulator):
    engine, _ = await run_bot()
    video = await deliver_one(telegram)
    telegram.press_button(ALICE, video, button(video, "other:"))
    [menu_call] = await telegram.wait_for(lambda: sent(telegram, "Pick an effect"))
    assert menu_call["reply_parameters"]["message_id"] == video["message_id"]
    assert "each costs 1 credit; you have 9" in menu_call["text"]
    menu = bot_message(telegram, ALICE, "Pick an effect")

    telegram.press_button(ALICE, menu, button(menu, "fxjp:"))  # the next page
    await telegram.wait_for(lambda: telegram.calls_to("editMessageReplyMarkup"))
    index = catalog.EFFECTS.index("offic_escape_plow")
    telegram.press_button(ALICE, menu, f"fxj:1:{index}")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert simulator.submissions[1]["body"]["effect_scene"] == "offic_escape_plow"
    assert telegram.calls_to("sendVideo")[1]["params"]["reply_parameters"]["message_id"] == video["message_id"]
    assert len(answers(telegram)) == 3  # every press answered once
    assert (await engine.balance(who(ALICE))).total == 8


async def test_animate_with_a_prompt_asks_and_the_pressers_reply_starts_it(run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE)
    telegram.press_button(BOB, video, button(video, "ask:"))
    [ask_call] = await telegram.wait_for(lambda: sent(telegram, messages.ASK_PROMPT))
    assert ask_call["reply_markup"]["force_reply"] is True
    ask = bot_message(telegram, GROUP, messages.ASK_PROMPT)

    telegram.user_message(GROUP, ALICE, text="not my question", reply_to=ask)  # Alice did not press
    telegram.user_message(GROUP, BOB, text="she waves and smiles", reply_to=ask)
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    [_, submission] = simulator.submissions
    assert submission["body"]["prompt"] == "she waves and smiles"
    assert submission["model"] == catalog.BUILT_IN.resolve_model(None, "animate").id
    assert telegram.calls_to("sendVideo")[1]["params"]["reply_parameters"]["message_id"] == video["message_id"]
    assert (await engine.balance(who(BOB))).total == 9 and (await engine.balance(who(ALICE))).total == 9


async def test_result_button_refusals_are_alerts_and_leave_nothing_behind(run_bot, tg_settings, telegram, simulator):
    engine, _ = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE)
    await engine.set_credits(who(BOB), 0)
    sent_before = len(telegram.calls_to("sendMessage"))
    for prefix in ("again:", "ask:", "other:"):
        telegram.press_button(BOB, video, button(video, prefix))
    menu = {**video, "reply_markup": {"inline_keyboard": [[{"text": "Hula", "callback_data": "fxj:1:0"}]]}}
    telegram.press_button(BOB, menu, "fxj:1:0")  # from the "another effect" menu, as Telegram has it
    alerts = await telegram.wait_for(lambda: len(answers(telegram)) == 4 and answers(telegram))
    assert all(a["show_alert"] and "out of credits" in a["text"] for a in alerts)
    await asyncio.sleep(0.2)
    # the one status message posted for "again" was deleted; no question, no menu was sent
    assert len(telegram.calls_to("sendMessage")) - sent_before == len(telegram.calls_to("deleteMessage")) <= 1
    assert len(simulator.submissions) == 1 and (await engine.balance(who(BOB))).total == 0


async def test_result_buttons_check_the_allowed_chats(run_bot, tg_settings, telegram, simulator):
    engine, adapter = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE)
    await adapter.stop()
    await engine.close()
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, allowed_chats=[ALICE])))  # not GROUP
    telegram.press_button(BOB, video, button(video, "again:"))
    [alert] = await telegram.wait_for(lambda: answers(telegram))
    assert alert["show_alert"] and alert["text"] == messages.CHAT_NOT_ALLOWED
    assert len(simulator.submissions) == 1


async def test_again_still_works_after_a_restart_and_charges_the_presser(run_bot, tg_settings, telegram, simulator):
    engine, adapter = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE)
    await adapter.stop()
    await engine.close()

    engine, _ = await run_bot(quiet(tg_settings))  # a new process: nothing in memory but the database
    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["hula", "hula"]
    assert (await engine.balance(who(BOB))).total == 9 and (await engine.balance(who(ALICE))).total == 9


async def test_buttons_of_a_video_whose_photo_is_no_longer_kept_say_so(run_bot, tg_settings, telegram, simulator):
    keep = replace(tg_settings, storage=replace(tg_settings.storage, keep_days=1e-9))
    engine, _ = await run_bot(keep)
    video = await deliver_one(telegram)
    await asyncio.sleep(0.01)
    assert await engine.results.expire() == 1  # what the hourly housekeeping does past keep_days
    sent_before = len(telegram.calls_to("sendMessage"))
    for prefix in ("again:", "other:", "ask:"):
        telegram.press_button(ALICE, video, button(video, prefix))
    alerts = await telegram.wait_for(lambda: answers(telegram) if len(answers(telegram)) == 3 else None)
    assert all(a["show_alert"] and a["text"] == messages.SOURCE_GONE for a in alerts)
    assert len(telegram.calls_to("sendMessage")) == sent_before  # no menu, question or status opened
    assert len(simulator.submissions) == 1 and (await engine.balance(who(ALICE))).total == 9

    telegram.user_message(ALICE, ALICE, text="/history")  # posted again: without buttons that cannot work
    menu_call = await telegram.wait_for(lambda: sent(telegram, "Your recent jobs"))
    telegram.press_button(ALICE, bot_message(telegram, ALICE, "Your recent jobs"), "hist:1")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert menu_call and "reply_markup" not in telegram.calls_to("sendVideo")[1]["params"]


# --- 5. /history -----------------------------------------------------------------------------

async def test_history_lists_jobs_and_posts_a_video_again(run_bot, tg_settings, telegram):
    engine, _ = await run_bot()
    await deliver_one(telegram)
    telegram.user_message(ALICE, ALICE, text="/history")
    [listing] = await telegram.wait_for(lambda: sent(telegram, "Your recent jobs"))
    assert "Job 1 (effect hula)" in listing["text"]
    menu = bot_message(telegram, ALICE, "Your recent jobs")

    telegram.press_button(ALICE, menu, button(menu, "hist:1"))
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    again = telegram.calls_to("sendVideo")[1]["params"]
    assert again["reply_parameters"]["message_id"] == menu["message_id"]
    assert button(videos(telegram, ALICE)[-1], "again:1")  # with its result buttons
    # The copy fetched to post again is removed once sent (just after the send returns).
    await telegram.wait_for(lambda: not [p for p in Path(tg_settings.storage.videos_dir).glob("*")
                                         if p.name.startswith("again-")], timeout=5)
    assert (await engine.balance(who(ALICE))).total == 9  # posting a past video costs nothing

    await engine.store.update_job(1, finished_at=time.time() - 8 * 86400)  # past WaveSpeed's 7 days
    telegram.press_button(ALICE, menu, "hist:1")
    await telegram.wait_for(lambda: sent(telegram, messages.VIDEO_GONE))
    assert len(telegram.calls_to("sendVideo")) == 2


# --- 6. one cancel message ---------------------------------------------------------------------

async def test_cancel_answers_once_and_the_status_says_cancelled(run_bot, tg_settings, telegram, simulator):
    simulator.job_seconds = 2.0
    await run_bot(tg_settings.with_wavespeed(max_concurrent=1))
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: simulator.submissions)
    telegram.user_message(ALICE, ALICE, caption="/effect squish", photo=image_bytes())
    await telegram.wait_for(lambda: any(t.startswith("Job 2 queued") for t in texts(telegram, "editMessageText")))
    telegram.user_message(ALICE, ALICE, text="/cancel 2")
    await telegram.wait_for(lambda: sent(telegram, "cancelled"))
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await asyncio.sleep(0.3)
    every_text = texts(telegram) + texts(telegram, "editMessageText")
    assert [t for t in texts(telegram) if "cancelled" in t] == ["Job 2 cancelled; 1 credit refunded."]
    assert "Job 2 (effect squish): cancelled; 1 credit refunded." in texts(telegram, "editMessageText")
    assert not [t for t in every_text if "Job 2: Job 2" in t]
    assert len(simulator.submissions) == 1


# --- 7. /effects you can tap ------------------------------------------------------------------

async def test_effects_alone_asks_for_the_photo_and_the_api_gets_its_spelling(run_bot, telegram, simulator):
    await run_bot()
    command = telegram.user_message(GROUP, ALICE, text="/effects")
    [listing] = await telegram.wait_for(lambda: sent(telegram, "effects. Tap one"))
    assert "Let's ride" in [b["text"] for b in buttons(listing["reply_markup"])]
    menu = bot_message(telegram, GROUP, "effects. Tap one")
    telegram.press_button(BOB, menu, f"fxa:{ALICE}:0")  # not Bob's menu
    boyfriend = f"fxa:{ALICE}:{catalog.EFFECTS.index('boylfriend')}"  # on a later page, as Telegram has it
    menu = {**menu, "reply_markup": {"inline_keyboard": [[{"text": "Boyfriend", "callback_data": boyfriend}]]}}
    telegram.press_button(ALICE, menu, boyfriend)
    [ask_call] = await telegram.wait_for(lambda: sent(telegram, "Boyfriend: now send the photo"))
    assert ask_call["reply_markup"]["force_reply"] is True
    assert ask_call["reply_parameters"]["message_id"] == command["message_id"]
    ask = bot_message(telegram, GROUP, "Boyfriend: now send the photo")

    telegram.user_message(GROUP, BOB, photo=image_bytes(), reply_to=ask)  # not Bob's question
    photo = telegram.user_message(GROUP, ALICE, photo=image_bytes(), reply_to=ask)
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["reply_parameters"]["message_id"] == photo["message_id"]
    assert [s["body"]["effect_scene"] for s in simulator.submissions] == ["boylfriend"]
    assert sent(telegram, "Effects cost") == []  # the photos answered the question: no menu for them
    assert [a.get("show_alert") for a in answers(telegram)].count(True) == 1  # Bob was told off


async def test_effects_as_a_reply_to_a_photo_is_that_photos_menu(run_bot, telegram):
    await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/effects", reply_to=photo)
    [menu] = await telegram.wait_for(lambda: sent(telegram, "Pick an effect"))
    assert menu["reply_parameters"]["message_id"] == photo["message_id"]
    assert all(b["callback_data"].startswith(("fx:", "fxp:")) for b in buttons(menu["reply_markup"]))


# --- 9. the command menu -------------------------------------------------------------------------

async def test_the_command_menu_includes_history(run_bot, telegram):
    await run_bot()
    [call] = telegram.calls_to("setMyCommands")
    commands = {c["command"]: c["description"] for c in call["params"]["commands"]}
    assert commands["history"] == messages.COMMANDS["history"]
    assert all(commands[name] == messages.COMMANDS[name] for name in commands)


# --- a video that fits ----------------------------------------------------------------------------

async def test_a_talking_photo_over_the_upload_limit_is_re_encoded_with_its_sound(run_bot, tg_settings, telegram,
                                                                                   simulator):
    simulator.video_bytes, simulator.video_seconds = 3 * 1000 * 1000, 3.0
    await run_bot(replace(tg_settings, telegram=replace(tg_settings.telegram, upload_limit_mb=2)))
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, caption="/avatar", voice=audio_bytes(2.0, "ogg", "libopus"), reply_to=photo)
    [call] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=60)
    [task] = simulator.tasks.values()
    assert len(task.video) > 2 * 1024 * 1024  # what WaveSpeed served: over the bot's upload limit
    sent_video = call["files"]["video"]
    assert len(sent_video) < 2 * 1024 * 1024 and "http" not in call["params"]["caption"]
    with av.open(io.BytesIO(sent_video)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio  # the voice is kept
