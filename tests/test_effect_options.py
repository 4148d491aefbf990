"""``/effect hula --x`` answered with /animate's options (--model, --duration…), which an
effect refuses anyway: an effect's refusal says effects take no options. Through the real
python-telegram-bot client against the fake Bot API; failed before its fix."""

# The fixtures come from tests/test_telegram.py, so test parameters shadow the imports.
# ruff: noqa: F811

from __future__ import annotations

from bot import messages
from tests.helpers import image_bytes
from tests.test_telegram import ALICE, run_bot, telegram, tg_settings  # noqa: F401
from tests.test_telegram_experience import texts


async def test_an_unknown_option_of_effect_is_answered_with_effects_taking_none(run_bot, telegram, simulator):
    await run_bot()
    telegram.user_message(ALICE, ALICE, caption="/effect hula --x", photo=image_bytes())
    telegram.user_message(ALICE, ALICE, caption="/effect hula --model", photo=image_bytes())
    replies = await telegram.wait_for(lambda: len(texts(telegram)) == 2 and texts(telegram))
    assert sorted(replies) == sorted([messages.effect_takes_no_options("--x"),
                                      messages.effect_takes_no_options("--model")])
    assert all("--duration" not in reply and "no options" in reply for reply in replies), replies
    assert simulator.submissions == []
