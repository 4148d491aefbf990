"""#17 /balance: WaveSpeed's balance (GET /api/v3/balance) for the bot's admins.

The real discord.py and python-telegram-bot clients against the fake servers, the
engine's WaveSpeed client against the simulator: what the admin reads, and that a
refused key or a WaveSpeed that does not answer is one friendly line without the key.
"""

from __future__ import annotations

import json
from decimal import Decimal

import discord
import pytest

import tests.test_discord as dc
import tests.test_telegram as tg
from bot import messages
from tests.conftest import API_KEY
from tests.fake_discord import APP_ID

fake_discord, dc_settings, run_discord = dc.fake_discord, dc.dc_settings, dc.run_discord
telegram, tg_settings, run_bot = tg.telegram, tg.tg_settings, tg.run_bot
MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
BAD_KEY = "ws-wrong-key-MUST-NOT-SHOW-91c2"


async def discord_balance(fake, adapter, user=dc.ALICE, permissions=MANAGE_GUILD):
    """/balance as ``user``: the answer's content and whether it was only for them."""
    payload = fake.slash("balance", [], user=user, permissions=permissions)
    dc.feed(adapter, payload)
    answer = await dc.until(lambda: fake.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST")
                            or [c for c in dc.callbacks(fake, payload["token"]) if c["type"] == 4])
    body = answer[0]["json"] if "json" in answer[0] else answer[0]["data"]
    return body["content"], bool(body["flags"] & 64)


async def test_discord_balance_tells_an_admin_what_is_left(run_discord, fake_discord, simulator):
    simulator.balance = Decimal("12.5")
    _, adapter = await run_discord()
    assert await discord_balance(fake_discord, adapter) == ("WaveSpeed balance: $12.50.", True)
    assert any(r["path"] == "/api/v3/balance" for r in simulator.requests)


async def test_discord_balance_refuses_members_who_are_not_admins(run_discord, dc_settings, fake_discord, simulator):
    _, adapter = await run_discord()
    asked = len(simulator.requests)
    assert await discord_balance(fake_discord, adapter, user=dc.BOB, permissions="0") == (messages.ADMINS_ONLY, True)
    assert not [r for r in simulator.requests[asked:] if "balance" in r["path"]]


async def test_discord_balance_with_a_bad_key_is_one_line_without_the_key(run_discord, dc_settings, fake_discord,
                                                                          simulator):
    simulator.api_key = API_KEY  # the simulator accepts only the right key
    _, adapter = await run_discord(dc_settings.with_wavespeed(api_key=BAD_KEY))
    content, private = await discord_balance(fake_discord, adapter)
    assert (content, private) == (messages.BALANCE_BAD_KEY, True) and "\n" not in content
    assert BAD_KEY not in json.dumps([c["json"] for c in fake_discord.calls])


async def test_discord_balance_when_wavespeed_does_not_answer(run_discord, fake_discord, simulator):
    simulator.fail_next("balance", 503, times=50)
    _, adapter = await run_discord()
    assert await discord_balance(fake_discord, adapter) == (messages.BALANCE_UNAVAILABLE, True)


# --- Telegram ----------------------------------------------------------------------------

async def telegram_answers(fake, chat, user, count=1, **kw):
    fake.user_message(chat, user, text="/balance", **kw)
    sent = await fake.wait_for(lambda: len(fake.calls_to("sendMessage")) >= count)
    assert sent
    return [c["params"] for c in fake.calls_to("sendMessage")]


async def test_telegram_balance_tells_an_admin_what_is_left(run_bot, telegram, simulator):
    simulator.balance = Decimal("0.75")
    await run_bot()
    [answer] = await telegram_answers(telegram, tg.ALICE, tg.ALICE)
    assert answer["chat_id"] == tg.ALICE and answer["text"] == "WaveSpeed balance: $0.75."


async def test_telegram_balance_in_a_group_goes_to_the_admin_privately(run_bot, telegram, simulator):
    simulator.balance = Decimal("3")
    await run_bot()
    private, group = await telegram_answers(telegram, tg.GROUP, tg.ALICE, count=2)
    assert (private["chat_id"], private["text"]) == (tg.ALICE, "WaveSpeed balance: $3.00.")
    assert (group["chat_id"], group["text"]) == (tg.GROUP, messages.TELEGRAM_FIGURES_SENT_PRIVATELY)


async def test_telegram_balance_refuses_everyone_else(run_bot, telegram, simulator):
    await run_bot()
    asked = len(simulator.requests)
    [answer] = await telegram_answers(telegram, tg.BOB, tg.BOB)
    assert answer["text"] == messages.TELEGRAM_FIGURES_ADMINS_ONLY
    assert not [r for r in simulator.requests[asked:] if "balance" in r["path"]]


async def test_telegram_balance_with_a_bad_key_is_one_line_without_the_key(run_bot, tg_settings, telegram,
                                                                           simulator, caplog):
    simulator.api_key = API_KEY
    await run_bot(tg_settings.with_wavespeed(api_key=BAD_KEY))
    [answer] = await telegram_answers(telegram, tg.ALICE, tg.ALICE)
    assert answer["text"] == messages.BALANCE_BAD_KEY and "\n" not in answer["text"]
    assert BAD_KEY not in json.dumps([c["params"] for c in telegram.calls]) and BAD_KEY not in caplog.text


@pytest.mark.parametrize("status", [503, 429])
async def test_telegram_balance_when_wavespeed_does_not_answer(run_bot, telegram, simulator, status):
    simulator.fail_next("balance", status, times=50)
    await run_bot()
    [answer] = await telegram_answers(telegram, tg.ALICE, tg.ALICE)
    assert answer["text"] == messages.BALANCE_UNAVAILABLE
