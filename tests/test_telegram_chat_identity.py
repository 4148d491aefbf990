"""Menus, /history lists and questions made for a chat speaking as itself (an anonymous
group admin, a channel): every message of theirs is the chat's, but a button press carries
the real person, so keyed by the person nothing made for them could ever be used. A press
on the bot's own menu or list made for a chat identity, in that chat, acts (and pays) as
that chat identity; a stranger elsewhere still reaches nothing.

The real python-telegram-bot client against the fake Bot API; each test failed before its fix."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio

from bot import messages
from tests.fake_telegram import chat_of
from tests.helpers import image_bytes
from tests.test_telegram import ALICE, BOB, GROUP, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import answers, bot_message, button, quiet, sent, texts, videos, who

GARDENERS = chat_of(GROUP, "Gardeners")  # as sender_chat: an anonymous admin of GROUP


def as_group(telegram, **fields):
    """A message an anonymous admin of GROUP sends (``from`` is Telegram's placeholder)."""
    return telegram.user_message(GROUP, 0, sender_chat=GARDENERS, **fields)


async def effect_video_in_group(telegram):
    """An anonymous admin's photo, addressed to the bot; Alice (the admin, as a press shows
    her) taps the first effect of its menu; until the video is posted."""
    as_group(telegram, photo=image_bytes(), caption="@kling_test_bot hi")
    await telegram.wait_for(lambda: sent(telegram, "Effects cost"))
    menu = bot_message(telegram, GROUP, "Effects cost")
    telegram.press_button(ALICE, menu, button(menu, f"fx:{GROUP}:0"))
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await telegram.wait_for(lambda: texts(telegram, "editMessageText")[-1].endswith("done."))
    return menu


async def test_an_anonymous_admins_photo_menu_starts_the_job_charged_to_the_group(run_bot, tg_settings, telegram,
                                                                                simulator):
    engine, _ = await run_bot(quiet(tg_settings))
    await effect_video_in_group(telegram)
    assert len(simulator.submissions) == 1
    assert (await engine.store.job(1)).user_key == who(GROUP).key  # as if the admin had typed /effect
    assert (await engine.balance(who(GROUP))).total == 9 and (await engine.balance(who(ALICE))).total == 10


async def test_an_anonymous_admins_history_button_posts_the_video_again(run_bot, tg_settings, telegram, simulator):
    await run_bot(quiet(tg_settings))
    await effect_video_in_group(telegram)
    as_group(telegram, text="/history")
    await telegram.wait_for(lambda: sent(telegram, "Your recent jobs"))
    listing = bot_message(telegram, GROUP, "Your recent jobs")
    telegram.press_button(ALICE, listing, button(listing, "hist:1"))
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert len(videos(telegram, GROUP)) == 2


async def test_an_anonymous_admins_answers_to_questions_are_taken(run_bot, tg_settings, telegram, simulator):
    """The /effects menu's photo question and a video's prompt question, answered as the
    group (an anonymous admin can write no other way)."""
    engine, _ = await run_bot(quiet(tg_settings))
    as_group(telegram, text="/effects")
    await telegram.wait_for(lambda: sent(telegram, "effects. Tap one"))
    menu = bot_message(telegram, GROUP, "effects. Tap one")
    telegram.press_button(ALICE, menu, button(menu, f"fxa:{GROUP}:0"))
    await telegram.wait_for(lambda: sent(telegram, "now send the photo"))
    question = bot_message(telegram, GROUP, "now send the photo")
    as_group(telegram, photo=image_bytes(), reply_to=question)
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    await telegram.wait_for(lambda: texts(telegram, "editMessageText")[-1].endswith("done."))
    assert texts(telegram).count(messages.QUESTION_NOT_YOURS) == 0
    assert (await engine.balance(who(GROUP))).total == 9

    [video] = videos(telegram, GROUP)
    telegram.press_button(ALICE, video, button(video, "ask:1"))
    await telegram.wait_for(lambda: sent(telegram, messages.ASK_PROMPT))
    question = bot_message(telegram, GROUP, messages.ASK_PROMPT)
    as_group(telegram, text="she waves", reply_to=question)
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert texts(telegram).count(messages.QUESTION_NOT_YOURS) == 0
    assert simulator.submissions[1]["body"]["prompt"] == "she waves"
    assert (await engine.balance(who(GROUP))).total < 9  # who answered pays
    assert (await engine.balance(who(ALICE))).total == 10


async def test_a_stranger_elsewhere_cannot_use_what_was_made_for_a_group(run_bot, tg_settings, telegram, simulator):
    """Bob, in his private chat, sends the group's menu data and /history data on a message
    of the bot's there: refused, nothing started, nothing posted."""
    engine, _ = await run_bot(quiet(tg_settings))
    await effect_video_in_group(telegram)
    telegram.user_message(BOB, BOB, text="/effects")
    await telegram.wait_for(lambda: [s for s in sent(telegram, "effects. Tap one") if s["chat_id"] == BOB])
    his = bot_message(telegram, BOB, "effects. Tap one")
    start = len(answers(telegram))
    forged = [f"fx:{GROUP}:0", f"fxa:{GROUP}:0", f"fxp:{GROUP}:1", "hist:1", f"hist:1:{GROUP}"]
    for data in forged:
        telegram.press_button(BOB, his, data)
    alerts = await telegram.wait_for(
        lambda: len(answers(telegram)) - start == len(forged) and answers(telegram)[start:])
    await asyncio.sleep(0.3)
    assert all(a.get("show_alert") for a in alerts)
    assert sorted(a["text"] for a in alerts) == sorted([messages.MENU_NOT_YOURS] * 3 + [messages.no_such_job(1)] * 2)
    assert len(telegram.calls_to("sendVideo")) == 1 and len(simulator.submissions) == 1
    assert (await engine.balance(who(GROUP))).total == 9 and (await engine.balance(who(BOB))).total == 10
