"""Attacks on authorization and privacy (#14, items 1, 2, 3, 12, 16) found after the items
landed: a malicious chat user's forged callback data, and what a group sees of a user's
private jobs. The real python-telegram-bot client against the fake Bot API; each test
failed before its fix."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from bot import messages
from tests.helpers import image_bytes
from tests.test_telegram import ALICE, BOB, GROUP, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import answers, deliver_one, quiet, texts, who
from tests.test_telegram_trust import SECRET, bot_reply

# --- forged callback data that is no number: refused quietly, never "something went wrong" ----

MALFORMED = ["again:--5", "hist:--1", "fxj:--2:0", "ask:---7", "other:--1", "fx:--1:0", "fxjp:--1:1"]


async def test_forged_callback_data_with_a_malformed_number_is_refused_without_an_error(
        run_bot, tg_settings, telegram, simulator, caplog):
    """``again:--5`` passed the digit check ("--" stripped) and then int() raised: the
    presser saw "Sorry, something went wrong" and the log an error, for each press."""
    engine, _ = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, ALICE, ALICE)
    start = len(answers(telegram))
    for data in MALFORMED:
        telegram.press_button(BOB, video, data)
    alerts = await telegram.wait_for(lambda: len(answers(telegram)) - start == len(MALFORMED)
                                     and answers(telegram)[start:])
    assert [a.get("text") for a in alerts if a.get("text") == messages.SOMETHING_WENT_WRONG] == []
    assert "update handling failed" not in caplog.text
    assert len(simulator.submissions) == 1 and (await engine.balance(who(BOB))).total == 10


# --- /jobs in a group: a private chat's prompts stay private -----------------------------------

async def test_jobs_in_a_group_does_not_show_the_prompt_of_a_job_made_in_a_private_chat(
        run_bot, tg_settings, telegram, simulator):
    """/history in a group lists only the videos made there ("a private chat's prompts stay
    private"); /jobs posted Alice's private prompt to the whole group. It still tells her
    the job runs, by number, without its label."""
    simulator.job_seconds = 5.0
    await run_bot(quiet(tg_settings))
    telegram.user_message(ALICE, ALICE, caption=f"/animate {SECRET}", photo=image_bytes())
    await telegram.wait_for(lambda: any(t.startswith("Job 1 queued") for t in texts(telegram, "editMessageText")))

    start = len(telegram.calls)
    telegram.user_message(GROUP, ALICE, text="/jobs")
    await telegram.wait_for(lambda: [c for c in telegram.calls[start:] if c["method"] == "sendMessage"])
    in_group = bot_reply(telegram, GROUP, start)
    assert "secret" not in in_group and "Job 1" in in_group, in_group

    start = len(telegram.calls)
    telegram.user_message(ALICE, ALICE, text="/jobs")  # her private chat: all of it
    await telegram.wait_for(lambda: [c for c in telegram.calls[start:] if c["method"] == "sendMessage"])
    assert SECRET in bot_reply(telegram, ALICE, start)


# --- item 12: a job number typed back ------------------------------------------------------------

async def test_cancel_of_a_4000_digit_job_number_answers_briefly(run_bot, telegram):
    """/cancel quoted the number back whole: 4,000 digits of what the user typed."""
    await run_bot()
    telegram.user_message(ALICE, ALICE, text="/cancel " + "9" * 4000)
    telegram.user_message(ALICE, ALICE, text="/cancel #" + "7" * 70)
    replies = await telegram.wait_for(lambda: len(texts(telegram)) == 2 and texts(telegram))
    assert all(len(reply) < 100 and reply.startswith("You have no job ") for reply in replies), replies
