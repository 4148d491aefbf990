"""Edges of the chat-identity rule (a message sent as a chat) and of fetching files.

A question the bot asked one person is answered by that person, or by the chat it was
asked in speaking as itself (an anonymous admin of that very chat: the bot cannot tell
which admin writes). A message sent as some other chat (a member posting as their own
channel, a linked channel) is nobody the question was asked of.

The real python-telegram-bot client against the fake Bot API; each test failed before its fix."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

import asyncio

from bot import messages
from tests.fake_telegram import chat_of
from tests.helpers import image_bytes
from tests.test_telegram import ALICE, GROUP, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import bot_message, button, quiet, sent, texts, who

MALLORYS_CHANNEL = -100777  # a channel a member of GROUP posts as ("send as")


async def test_a_question_to_a_member_is_not_answered_by_a_message_sent_as_another_chat(
        run_bot, tg_settings, telegram, simulator):
    """Alice picks an effect from her /effects menu in the group; the bot asks her for the
    photo. A member posting as her own channel answers it: that is not Alice, the question
    stays Alice's, nothing is started or charged."""
    engine, _ = await run_bot(quiet(tg_settings))
    telegram.user_message(GROUP, ALICE, text="/effects")
    await telegram.wait_for(lambda: sent(telegram, "effects. Tap one"))
    menu = bot_message(telegram, GROUP, "effects. Tap one")
    telegram.press_button(ALICE, menu, button(menu, f"fxa:{ALICE}:0"))
    await telegram.wait_for(lambda: sent(telegram, "now send the photo"))
    question = bot_message(telegram, GROUP, "now send the photo")

    channel = chat_of(MALLORYS_CHANNEL, "Mallory's news", "channel")
    telegram.user_message(GROUP, 0, photo=image_bytes(), reply_to=question, sender_chat=channel)
    await telegram.wait_for(lambda: messages.QUESTION_NOT_YOURS in texts(telegram) or simulator.submissions)
    await asyncio.sleep(0.3)
    assert simulator.submissions == [] and messages.QUESTION_NOT_YOURS in texts(telegram)
    assert (await engine.balance(who(MALLORYS_CHANNEL))).total == 10

    telegram.user_message(GROUP, ALICE, photo=image_bytes(), reply_to=question)  # still Alice's to answer
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert (await engine.store.job(1)).user_key == who(ALICE).key


async def test_a_menu_on_a_forwarded_copy_of_the_bots_message_proves_nothing(run_bot, tg_settings, telegram):
    """A forwarded copy is not the bot's own message, whatever buttons it shows: a group's
    /effects menu forwarded into another chat cannot act as that group there."""
    from tests.test_telegram import BOB
    from tests.test_telegram_chat_identity import as_group
    await run_bot(quiet(tg_settings))
    as_group(telegram, text="/effects")
    await telegram.wait_for(lambda: sent(telegram, "effects. Tap one"))
    menu = bot_message(telegram, GROUP, "effects. Tap one")
    copy = {**menu, "chat": {"id": BOB, "type": "private", "first_name": "Bob"}, "message_id": 999,
            "forward_origin": {"type": "chat", "date": menu["date"], "sender_chat": chat_of(GROUP)}}
    telegram.press_button(BOB, copy, button(menu, f"fxa:{GROUP}:0"))
    await telegram.wait_for(lambda: telegram.calls_to("answerCallbackQuery"))
    await asyncio.sleep(0.2)
    assert not sent(telegram, "now send the photo")  # no question asked on the group's behalf
