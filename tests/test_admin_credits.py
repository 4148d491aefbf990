"""Admin credit commands (#17): grant, set and show on Discord and Telegram (through the
real clients against the fakes) and on the command line (as a subprocess); non-admins refused."""

from __future__ import annotations

import pytest

from adapters.telegram import TelegramAdapter
from bot import messages
from tests.backends import process_config, raw_sql
from tests.test_bans_and_allowances import (  # noqa: F401  (fixtures)
    ALICE,
    BOB,
    D_ALICE,
    D_BOB,
    GROUP,
    MANAGE,
    dc_settings,
    dc_user,
    fake_discord,
    run_discord,
    telegram,
    tg_settings,
    tg_user,
)
from tests.test_cli import kling
from tests.test_discord import callbacks, feed, until
from tests.test_telegram import _texts

pytestmark = pytest.mark.both_backends


def credits_command(fake, subcommand, *, user, permissions, amount=None):
    options = [{"name": "member", "type": 6, "value": str(D_BOB)}]
    if amount is not None:
        options.append({"name": "amount", "type": 4, "value": amount})
    return fake.slash("credits", options, subcommand=subcommand, user=user, permissions=permissions, users=[D_BOB])


async def answer_to(fake, adapter, payload):
    feed(adapter, payload)
    [response] = await until(lambda: callbacks(fake, payload["token"]))
    assert response["data"]["flags"] & 64  # only the admin sees it
    return response["data"]["content"]


async def test_discord_credits_show_set_and_grant(dc_settings, run_discord, fake_discord):  # noqa: F811
    engine, adapter = await run_discord(dc_settings)
    show = credits_command(fake_discord, "show", user=D_ALICE, permissions=MANAGE)
    assert await answer_to(fake_discord, adapter, show) == \
        f"<@{D_BOB}> has 10 credits, with a daily allowance of 10."
    assert await answer_to(fake_discord, adapter, credits_command(
        fake_discord, "set", user=D_ALICE, permissions=MANAGE, amount=25)) == f"<@{D_BOB}> now has 25 credits."
    assert await answer_to(fake_discord, adapter, credits_command(
        fake_discord, "grant", user=D_ALICE, permissions=MANAGE, amount=5)) == f"<@{D_BOB}> now has 30 credits."
    await engine.ban(dc_user(D_BOB).key, "discord:1")
    assert await answer_to(fake_discord, adapter, credits_command(fake_discord, "show", user=D_ALICE,
                                                                  permissions=MANAGE)) == \
        f"<@{D_BOB}> has 30 credits (20 bonus), with a daily allowance of 10. They are banned."


async def test_discord_credit_commands_refuse_non_admins(dc_settings, run_discord, fake_discord):  # noqa: F811
    engine, adapter = await run_discord(dc_settings)
    for subcommand, amount in (("show", None), ("set", 99)):
        payload = credits_command(fake_discord, subcommand, user=D_ALICE, permissions="0", amount=amount)
        assert await answer_to(fake_discord, adapter, payload) == messages.ADMINS_ONLY
    assert (await engine.balance(dc_user(D_BOB))).total == 10


async def test_telegram_setcredits_and_credits_show_by_reply_or_id(tg_settings, adapter_runner, telegram):  # noqa: F811
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    bob_said = telegram.user_message(GROUP, BOB, text="hello", push=False)
    telegram.user_message(GROUP, ALICE, text="/setcredits 25", reply_to=bob_said)
    await telegram.wait_for(lambda: "User1002 now has 25 credits." in _texts(telegram, "sendMessage"))
    telegram.user_message(GROUP, ALICE, text="/credits show", reply_to=bob_said)
    await telegram.wait_for(lambda: "User1002 has 25 credits (15 bonus), with a daily allowance of 10."
                            in _texts(telegram, "sendMessage"))
    telegram.user_message(ALICE, ALICE, text=f"/setcredits {BOB} 3")
    await telegram.wait_for(lambda: f"{BOB} now has 3 credits." in _texts(telegram, "sendMessage"))
    telegram.user_message(ALICE, ALICE, text=f"/credits {BOB}")
    await telegram.wait_for(lambda: f"{BOB} has 3 credits, with a daily allowance of 10."
                            in _texts(telegram, "sendMessage"))
    telegram.user_message(ALICE, ALICE, text="/setcredits lots")
    telegram.user_message(ALICE, ALICE, text="/credits")
    await telegram.wait_for(lambda: messages.TELEGRAM_SET_USAGE in _texts(telegram, "sendMessage")
                            and messages.TELEGRAM_CREDITS_USAGE in _texts(telegram, "sendMessage"))
    assert (await engine.balance(tg_user(BOB))).total == 3


async def test_telegram_credit_commands_refuse_non_admins(tg_settings, adapter_runner, telegram):  # noqa: F811
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    alice_said = telegram.user_message(GROUP, ALICE, text="hello", push=False)
    telegram.user_message(GROUP, BOB, text="/setcredits 500", reply_to=alice_said)
    telegram.user_message(GROUP, BOB, text=f"/credits {ALICE}")
    telegram.user_message(GROUP, BOB, text="/pause")
    await telegram.wait_for(lambda: _texts(telegram, "sendMessage").count(messages.TELEGRAM_ADMIN_COMMAND_ONLY) == 3)
    assert (await engine.balance(tg_user(ALICE))).total == 10
    assert await engine.paused() is None


async def test_credits_show_grant_and_set_on_the_command_line(make_store, simulator, database, tmp_path):
    await make_store()  # the bot's database, as its first run made it
    config = ["--config", str(process_config(tmp_path, simulator.base_url, database))]  # 20 credits a day
    shown = kling("credits", "show", "telegram:1002", *config, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "telegram:1002 has 20 credits, with a daily allowance of 20."
    granted = kling("credits", "grant", "telegram:1002", "5", *config, cwd=tmp_path)
    assert granted.stdout.strip() == "telegram:1002 has 25 credits (5 bonus), with a daily allowance of 20."
    done = kling("credits", "set", "telegram:1002", "3", *config, cwd=tmp_path)
    assert done.stdout.strip() == "telegram:1002 has 3 credits, with a daily allowance of 20."
    store = await make_store()
    notes = await raw_sql(store, "select entry, note from ledger where user_key = ? order by id", ["telegram:1002"])
    assert [(row["entry"], row["note"]) for row in notes] == [("grant", "cli"), ("set", "cli")]
    refused = kling("credits", "set", "telegram:1002", "-1", *config, cwd=tmp_path)
    assert refused.returncode == 2 and "must be a whole number from 0 to" in refused.stderr
    refused = kling("credits", "show", "1002", *config, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == f"kling-bot: {messages.CLI_USER_KEY}"
