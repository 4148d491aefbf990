"""Rough edges a second review of the Telegram chat found, through the real
python-telegram-bot against the fake Bot API, each failing before its fix: double taps on
menus, questions forgotten before their answer was accepted, codec padding priced as
speech, hints in API spellings, a voice note replying to a photo, the group prompt
question opening everyone's reply field, plurals."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from bot import messages
from bot.jobs import UserRef
from tests.fake_telegram import FakeTelegram
from tests.helpers import audio_bytes, image_bytes
from tests.test_telegram import ALICE, BOB, GROUP, TOKEN, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import answers, bot_message, button, deliver_one, sent, texts


def who(user_id: int) -> UserRef:
    return UserRef("telegram", str(user_id))


def went_wrong(telegram) -> list[str]:
    return [t for t in texts(telegram) if t == messages.SOMETHING_WENT_WRONG]


async def test_a_voice_note_refused_as_too_long_can_be_replaced_by_a_shorter_one(run_bot, telegram, simulator):
    """The refusal says "Send a shorter one." The user answers the same question again with a
    shorter clip; that must make the video (today: the question was forgotten before the
    refusal, so the shorter clip gets "Send me a photo to animate it.")."""
    engine, _ = await run_bot()
    await engine.set_credits(who(ALICE), 3)
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/avatar", reply_to=photo)
    await telegram.wait_for(lambda: sent(telegram, "voice note"))
    asked = bot_message(telegram, ALICE, "voice note")
    telegram.user_message(ALICE, ALICE, voice=audio_bytes(2.0, "ogg", "libopus"), voice_seconds=20, reply_to=asked)
    await telegram.wait_for(lambda: sent(telegram, "Send a shorter one."))

    telegram.user_message(ALICE, ALICE, voice=audio_bytes(2.0, "ogg", "libopus"), voice_seconds=2, reply_to=asked)
    await asyncio.sleep(1.5)
    assert messages.TEXT_POINTER not in texts(telegram)
    assert simulator.submissions, "the shorter voice note, answering the same question, started nothing"


async def test_a_double_tap_on_the_photo_menu_is_one_job_and_no_error(run_bot, telegram, simulator):
    """Two taps on one effect before the menu disappears (a common double tap): one job, one
    charge, and never "Sorry, something went wrong"."""
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, photo=image_bytes())
    await telegram.wait_for(lambda: sent(telegram, "Effects cost"))
    menu = dict(bot_message(telegram, ALICE, "Effects cost"))  # the keyboard as the client still shows it
    data = button(menu, f"fx:{ALICE}:0")
    telegram.press_button(ALICE, menu, data)
    telegram.press_button(ALICE, menu, data)
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await asyncio.sleep(1.0)
    assert went_wrong(telegram) == [], "a double tap answered 'Sorry, something went wrong on my side.'"
    assert len(simulator.submissions) == 1 and (await engine.balance(who(ALICE))).total == 9


async def test_a_double_tap_on_more_is_no_error(run_bot, telegram, monkeypatch):
    """Telegram answers an edit that changes nothing with "message is not modified"; the
    fake does so for editMessageText and, here, for editMessageReplyMarkup too."""
    original = FakeTelegram._m_editMessageReplyMarkup

    def as_telegram(self, params, files):
        from aiohttp import web
        message = self.messages[(int(params["chat_id"]), int(params["message_id"]))]
        if message.get("reply_markup") == params.get("reply_markup"):
            return web.json_response({"ok": False, "error_code": 400, "description":
                                      "Bad Request: message is not modified: specified new message content "
                                      "and reply markup are exactly the same"}, status=400)
        return original(self, params, files)

    monkeypatch.setattr(FakeTelegram, "_m_editMessageReplyMarkup", as_telegram)
    await run_bot()
    telegram.user_message(ALICE, ALICE, photo=image_bytes())
    await telegram.wait_for(lambda: sent(telegram, "Effects cost"))
    menu = dict(bot_message(telegram, ALICE, "Effects cost"))
    telegram.press_button(ALICE, menu, f"fxp:{ALICE}:1")
    await telegram.wait_for(lambda: telegram.calls_to("editMessageReplyMarkup"))
    telegram.press_button(ALICE, menu, f"fxp:{ALICE}:1")  # the second tap of a double tap
    await telegram.wait_for(lambda: len(telegram.calls_to("editMessageReplyMarkup")) == 2)
    await asyncio.sleep(0.5)
    assert went_wrong(telegram) == [], "a double tap on 'More ›' answered 'Sorry, something went wrong'"


async def test_again_refused_then_pressed_again_is_not_called_started(run_bot, telegram, simulator):
    """Bob has no credits: "Again" is refused. He is granted credits and presses again at
    once: the video must start (today: "That button started a video a moment ago; it is on
    its way." although nothing was ever started)."""
    engine, _ = await run_bot()
    video = await deliver_one(telegram)
    await engine.set_credits(who(BOB), 0)
    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: answers(telegram))
    assert "out of credits" in answers(telegram)[0]["text"]
    await engine.grant(who(BOB), 5)
    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: len(answers(telegram)) == 2)
    second = answers(telegram)[1]["text"]
    assert second != messages.ALREADY_STARTED, "told 'started a moment ago' while nothing was started"
    await telegram.wait_for(lambda: len(simulator.submissions) == 2)


async def test_prompt_question_in_a_group_is_addressed_to_the_presser(run_bot, tg_settings, telegram, simulator):
    """In a group the "animate with a prompt" question opens everyone's reply field
    (ForceReply without selective, the question mentions nobody), and someone else's answer
    is silently dropped."""
    quiet = replace(tg_settings, telegram=replace(tg_settings.telegram, progress_interval=60.0))
    await run_bot(quiet)
    video = await deliver_one(telegram, GROUP, ALICE)
    telegram.press_button(BOB, video, button(video, "ask:"))
    [ask_call] = await telegram.wait_for(lambda: sent(telegram, messages.ASK_PROMPT))
    assert ask_call["reply_markup"].get("selective") is True or "User1002" in ask_call["text"], \
        "the question forces a reply from everyone in the group"
    ask = bot_message(telegram, GROUP, messages.ASK_PROMPT)
    before = len(telegram.calls_to("sendMessage"))
    telegram.user_message(GROUP, ALICE, text="she dances", reply_to=ask)
    await asyncio.sleep(0.8)
    assert len(telegram.calls_to("sendMessage")) > before, "Alice's answer got no reply at all"


async def test_grant_and_usage_say_credit_in_the_singular(run_bot, telegram):
    await run_bot()
    assert messages.now_has_credits("Bob", 1) == "Bob now has 1 credit."
    assert "1 credit spent" in messages.usage_today(1, 1)


@pytest.mark.parametrize("credits, seconds", [(3, 15), (None, 30)], ids=["what the credits buy", "the limit"])
async def test_a_voice_note_as_long_as_the_question_allows_is_accepted(run_bot, telegram, simulator, credits, seconds):
    """The question says "(up to N s)": N from the user's credits (3 buy 15 s) or from
    [media] max_audio_seconds (30). An Opus voice note of N s, as Telegram records it (Telegram
    reports duration N), measures a little more (15.03 s) after the download: it was priced
    as 20 s ("You're out of credits: this needs 4 and you have 3.") or refused as over the
    limit ("The audio is 30 s long; the limit is 30 s.")."""
    engine, _ = await run_bot()
    if credits is not None:
        await engine.set_credits(who(ALICE), credits)
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/avatar", reply_to=photo)
    await telegram.wait_for(lambda: sent(telegram, f"(up to {seconds} s)"))
    asked = bot_message(telegram, ALICE, "voice note")
    telegram.user_message(ALICE, ALICE, voice=audio_bytes(float(seconds), "ogg", "libopus", 48000),
                          voice_seconds=seconds, reply_to=asked)
    answered = ("Job", "You", "The")
    await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if t.startswith(answered)])
    final = next(t for t in texts(telegram, "editMessageText") if t.startswith(answered))
    assert final.startswith("Job 1 queued"), final


async def test_a_second_tap_on_a_menu_already_used_does_not_charge_again(run_bot, telegram, simulator):
    """The second tap of a slower double tap (or a client that still shows the keyboard)
    arrives after the first job is queued: a second job is made and charged, and both jobs
    edit the same status message in turn ("Job 1 … done." is overwritten by job 2)."""
    engine, _ = await run_bot()
    telegram.user_message(ALICE, ALICE, photo=image_bytes())
    await telegram.wait_for(lambda: sent(telegram, "Effects cost"))
    menu = dict(bot_message(telegram, ALICE, "Effects cost"))
    data = button(menu, f"fx:{ALICE}:0")
    telegram.press_button(ALICE, menu, data)
    await telegram.wait_for(lambda: [t for t in texts(telegram, "editMessageText") if t.startswith("Job 1 queued")])
    telegram.press_button(ALICE, menu, data)
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await asyncio.sleep(1.5)
    assert len(simulator.submissions) == 1 and (await engine.balance(who(ALICE))).total == 9


async def test_did_you_mean_hints_use_readable_names(run_bot, telegram):
    """The menus say "Boyfriend", "Office escape plow", "Heart gesture"; a typo gets the API's
    spelling back: "Did you mean 'boylfriend'?" (also on Discord and in the console)."""
    await run_bot()
    for caption in ("/effect boyfrend", "/effect ofice escape", "/effect jelly pres"):
        telegram.user_message(ALICE, ALICE, caption=caption, photo=image_bytes())
    await telegram.wait_for(lambda: len(sent(telegram, "Did you mean")) == 3)
    hints = " ".join(t for t in texts(telegram) if "Did you mean" in t)
    for api_spelling in ("boylfriend", "offic_escape_plow", "jelly_press"):
        assert api_spelling not in hints, hints


async def test_a_voice_note_replying_to_a_photo_is_understood(run_bot, telegram, simulator):
    """AVATAR_AUDIO_NEEDS_PHOTO tells the user "Send the voice note as a reply to the photo". Done
    so (a recorded voice note has no caption), the answer is "Send me a photo to animate it."."""
    await run_bot()
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, voice=audio_bytes(2.0, "ogg", "libopus"), reply_to=photo)
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    await asyncio.sleep(0.3)
    assert messages.TEXT_POINTER not in texts(telegram), texts(telegram)
