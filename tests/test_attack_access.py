"""Attacks on #17's access controls: pause (with --refund racing a worker), bans and their
targets, allowances changing mid-day, and the admin commands of the chats and of the
command line fed malformed ids and amounts (as a confused admin would)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from adapters.admin_cli import user_from_key
from adapters.telegram import TelegramAdapter
from bot import messages
from bot.jobs import Accepted, UserRef
from bot.store import open_store
from tests.backends import ledger_entries, process_config, raw_sql
from tests.conftest import effect_request, user
from tests.fake_discord import APP_ID, BOT_ID
from tests.helpers import RecordingCourier, settled
from tests.test_bans_and_allowances import (  # noqa: F401  (fixtures)
    ALICE,
    BOB,
    D_ALICE,
    D_BOB,
    GROUP,
    MANAGE,
    dc_settings,
    fake_discord,
    run_discord,
    telegram,
    tg_settings,
)
from tests.test_cli import kling
from tests.test_discord import callbacks, effect_payload, feed, until
from tests.test_telegram import _texts
from tests.test_telegram_experience import answers, bot_message, button, deliver_one, sent

pytestmark = pytest.mark.both_backends


def _quota(settings, **quota):
    return replace(settings, quota=replace(settings.quota, **quota))


async def credits_equal_the_ledger(store, key: str) -> int:
    """Within one day: what the user has is the day's allowance (as their row says) plus
    every movement the ledger holds; the credits they have."""
    [row] = await raw_sql(store, "select daily_left, bonus, allowance from users where key = ?", [key])
    [moved] = await raw_sql(store, "select coalesce(sum(daily_delta), 0) as daily,"
                                   " coalesce(sum(bonus_delta), 0) as bonus from ledger where user_key = ?", [key])
    allowance = 10 if row["allowance"] is None else int(row["allowance"])
    assert (int(row["daily_left"]), int(row["bonus"])) == (allowance + int(moved["daily"]), int(moved["bonus"]))
    assert int(row["daily_left"]) >= 0 and int(row["bonus"]) >= 0
    return int(row["daily_left"]) + int(row["bonus"])


# --- a pause with --refund racing a worker that claims the queued jobs ---------------------


async def test_a_pause_with_refund_racing_a_worker_runs_or_refunds_each_job_never_both(
        make_engine, settings, courier, simulator):
    roomy = _quota(settings, max_jobs_per_user=50)
    front = await make_engine(roomy, start=False)  # the admin's command line: it drives nothing
    owners = [user(n % 3) for n in range(12)]
    accepted = [await front.accept(effect_request(who=who)) for who in owners]
    assert all(isinstance(answer, Accepted) for answer in accepted)
    worker = await make_engine(roomy, start=False, max_concurrent=4)
    # The worker starts claiming while the pause cancels the queued jobs one by one.
    _, refunded = await asyncio.gather(worker.start(), front.pause("race", "cli", refund=True))
    refunded_ids = {job.id for job in refunded}
    ran = 0
    for answer in accepted:
        job = await settled(worker, answer.job.id, timeout=60)
        entries = await ledger_entries(worker.store, job.id)
        if job.id in refunded_ids:
            assert job.state.value == "cancelled" and entries == ["reserve", "refund"], (job, entries)
            assert job.id not in courier.delivered
        else:
            assert job.state.value == "done" and entries == ["reserve", "commit"], (job, entries)
            assert job.id not in courier.failures
            ran += 1
    assert len(simulator.submissions) == ran  # a refunded job never reached WaveSpeed
    for who in {owner.key for owner in owners}:
        await credits_equal_the_ledger(worker.store, who)


# --- the command line named with malformed ids and amounts ---------------------------------


NO_USER_KEYS = ["telegram:abc", "telegram:12x", "discord:@bob", "discord:-5", "telegram:1.5",
                "telegram:" + "9" * 40, "discord:٣", "telegram:", "mastodon:5", "telegram:1 2"]


@pytest.mark.parametrize("key", NO_USER_KEYS)
def test_a_user_id_that_is_no_number_of_its_platform_names_nobody(key):
    assert user_from_key(key) is None


async def test_the_command_line_refuses_a_user_id_that_is_no_number_of_its_platform(simulator, tmp_path):
    # The key is read before any store is opened, so one backend and one process per command
    # show every command refuses it (the parser itself is tried on each malformed key above).
    database = str(tmp_path / "bot.sqlite")
    await (await open_store(database)).close()  # the bot's database, as its first run made it
    config = process_config(tmp_path, simulator.base_url, database)
    for command, key in ((("users", "ban"), "telegram:abc"), (("users", "unban"), "discord:@bob"),
                         (("credits", "show"), "telegram:" + "9" * 40), (("credits", "set"), "discord:٣"),
                         (("credits", "grant"), "telegram:1.5")):
        amount = ("5",) if command[0] == "credits" and command[1] != "show" else ()
        done = kling(*command, key, *amount, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "platform:id" in done.stderr and "Traceback" not in done.stderr
    listed = kling("users", "list", "--config", str(config), cwd=tmp_path)
    assert listed.stdout.strip() == "Nobody is banned."


async def test_the_command_line_reads_a_user_id_with_leading_zeros_as_the_number(
        make_engine, simulator, database, tmp_path):
    engine = await make_engine()
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("users", "ban", "telegram:0042", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "telegram:42 is banned: their requests are refused and cost nothing."
    assert await engine.banned("telegram:42")


@pytest.mark.parametrize("amount", [str(2**63), str(-(2**63) - 1), "1000000001", "-1000000001"])
async def test_a_grant_on_the_command_line_too_big_for_the_database_is_refused_in_one_line(
        amount, make_engine, simulator, database, tmp_path):
    engine = await make_engine()
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("credits", "grant", "telegram:5", amount, "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "1000000000" in done.stderr
    assert await ledger_entries(engine.store) == []


async def test_a_set_on_the_command_line_with_no_whole_number_says_what_it_takes(simulator, database, tmp_path):
    config = process_config(tmp_path, simulator.base_url, database)
    for amount in ("1.5", "ten", str(2**63)):
        done = kling("credits", "set", "telegram:5", amount, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 2 and "must be a whole number from 0 to 1000000000" in done.stderr, done.stderr


# --- allowances changing mid-day and back ---------------------------------------------------


async def test_an_allowance_up_down_and_up_again_tops_up_once_and_the_ledger_explains_it(make_engine, settings):
    custom = replace(settings, telegram=replace(settings.telegram, chats={str(GROUP): 25}))
    engine = await make_engine(custom)
    alone, in_group = UserRef("telegram", "5"), UserRef("telegram", "5", chat=str(GROUP))
    first = await engine.accept(replace(effect_request(who=alone), reply_to={"chat_id": 5}))
    assert isinstance(first, Accepted) and (await engine.balance(alone)).total == 9
    assert (await engine.balance(in_group)).total == 24  # +15: the group's 25 less the 10 given
    for who in (alone, in_group, alone, in_group):
        assert (await engine.balance(who)).total == 24
    await credits_equal_the_ledger(engine.store, alone.key)


# --- Telegram: /ban aimed at the bot itself or at an admin ----------------------------------


async def test_telegram_ban_of_the_bot_itself_or_of_an_admin_is_refused(tg_settings, adapter_runner,  # noqa: F811
                                                                        telegram):  # noqa: F811
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    bot_said = telegram.user_message(GROUP, ALICE, text="hi", push=False)
    bot_said["from"] = {"id": 777000, "is_bot": True, "first_name": "Kling", "username": "kling_test_bot"}
    telegram.user_message(GROUP, ALICE, text="/ban", reply_to=bot_said)
    await telegram.wait_for(lambda: "That is a bot: it makes no requests to ban." in _texts(telegram, "sendMessage"))
    admin_said = telegram.user_message(GROUP, ALICE, text="hello", push=False)
    telegram.user_message(ALICE, ALICE, text=f"/ban {ALICE}")
    telegram.user_message(GROUP, ALICE, text="/ban", reply_to=admin_said)
    await telegram.wait_for(lambda: _texts(telegram, "sendMessage").count(
        "That is one of the bot's admins: take them out of [telegram] admins first.") == 2)
    assert await engine.bans() == []


# --- Discord: /ban aimed at a bot or at a configured admin ----------------------------------


async def test_discord_ban_of_a_bot_or_of_a_configured_admin_is_refused(dc_settings, run_discord,  # noqa: F811
                                                                        fake_discord):  # noqa: F811
    custom = replace(dc_settings, discord=replace(dc_settings.discord, admins=[D_ALICE]))
    engine, adapter = await run_discord(custom)
    for target, said in ((BOT_ID, "That is a bot: it makes no requests to ban."),
                         (D_ALICE, "That is one of the bot's admins: take them out of [discord] admins first.")):
        ban = fake_discord.slash("ban", [{"name": "member", "type": 6, "value": str(target)}],
                                 user=D_BOB, permissions=MANAGE, users=[target])
        if target == BOT_ID:
            ban["data"]["resolved"]["users"][str(BOT_ID)]["bot"] = True
        feed(adapter, ban)
        [answer] = await until(lambda b=ban: callbacks(fake_discord, b["token"]))
        assert answer["data"]["content"] == said and answer["data"]["flags"] & 64
    assert await engine.bans() == []


# --- an admin's look at a user, by id, leaves the user's name as their chat gives it ----------


async def test_credits_by_id_on_the_command_line_and_telegram_keep_the_users_name(
        tg_settings, adapter_runner, telegram, simulator, database, tmp_path):  # noqa: F811
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    await engine.balance(UserRef("telegram", "1002", "Bob Example"))  # Bob came once
    config = process_config(tmp_path, simulator.base_url, database)
    for command in (("credits", "show", "telegram:1002"), ("credits", "grant", "telegram:1002", "2"),
                    ("credits", "set", "telegram:1002", "4")):
        done = kling(*command, "--config", str(config), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "telegram:1002 has 4 credits, with a daily allowance of 20."
    telegram.user_message(ALICE, ALICE, text="/credits 1002")
    telegram.user_message(ALICE, ALICE, text="/setcredits 1002 6")
    await telegram.wait_for(lambda: "1002 now has 6 credits." in _texts(telegram, "sendMessage"))
    assert (await engine.store.user("telegram:1002"))["name"] == "Bob Example"


async def test_telegram_ban_and_setcredits_of_an_id_no_telegram_user_can_have_say_how_to_use_them(
        tg_settings, adapter_runner, telegram):  # noqa: F811
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    huge = "9" * 30
    for text in (f"/ban {huge} spam", f"/setcredits {huge} 5", f"/credits {huge}", f"/unban {huge}",
                 "/ban @bob", "/setcredits 1002 -5", f"/setcredits 1002 {2**63}", "/setcredits 1002 1.5"):
        telegram.user_message(ALICE, ALICE, text=text)
    usages = (messages.TELEGRAM_BAN_USAGE, messages.TELEGRAM_SET_USAGE, messages.TELEGRAM_CREDITS_USAGE,
              messages.TELEGRAM_UNBAN_USAGE, messages.TELEGRAM_BAN_USAGE) + (messages.TELEGRAM_SET_USAGE,) * 3
    await telegram.wait_for(lambda: sorted(_texts(telegram, "sendMessage")) == sorted(usages))
    assert await engine.bans() == [] and await raw_sql(engine.store, "select key from users") == []


# --- Discord: the amounts /credits takes ------------------------------------------------------


async def test_discord_credits_grant_and_set_take_amounts_within_a_billion(run_discord, dc_settings,  # noqa: F811
                                                                           fake_discord):  # noqa: F811
    await run_discord(dc_settings)
    [sync] = fake_discord.to("/commands", "PUT")
    credits = next(c for c in sync["json"] if c["name"] == "credits")
    bounds = {sub["name"]: next((o.get("min_value"), o.get("max_value")) for o in sub["options"]
                                if o["name"] == "amount") for sub in credits["options"] if sub["name"] != "show"}
    assert bounds == {"grant": (-1_000_000_000, 1_000_000_000), "set": (0, 1_000_000_000)}


# --- Discord: forged admin rights on the access commands ------------------------------------


@pytest.mark.parametrize("forgery", ["member in a dm", "admin id in the user field"])
@pytest.mark.parametrize("command", ["pause", "ban", "unban", "credits show"])
async def test_discord_access_commands_ignore_forged_admin_rights(forgery, command, run_discord,  # noqa: F811
                                                                  dc_settings, fake_discord):  # noqa: F811
    custom = replace(dc_settings, discord=replace(dc_settings.discord, admins=[D_ALICE]))
    engine, adapter = await run_discord(custom)
    name, _, sub = command.partition(" ")
    options = [] if name == "pause" else [{"name": "member", "type": 6, "value": str(D_BOB)}]
    kw = {"users": [D_BOB]} if options else {}
    if forgery == "member in a dm":
        payload = fake_discord.slash(name, options, user=D_BOB, dm=4242, subcommand=sub or None, **kw)
        payload["member"] = {"user": payload["user"], "roles": [], "permissions": MANAGE}
    else:  # a guild member without Manage Server; the admin's id where Discord puts no one
        payload = fake_discord.slash(name, options, user=D_BOB, subcommand=sub or None, **kw)
        payload["user"] = {**payload["member"]["user"], "id": str(D_ALICE)}
    await engine.ban(f"discord:{D_BOB}", "discord:1") if name == "unban" else None
    feed(adapter, payload)
    [answer] = await until(lambda: callbacks(fake_discord, payload["token"]))
    assert answer["data"]["content"] == messages.ADMINS_ONLY
    assert await engine.paused() is None
    assert [key for key, _, _ in await engine.bans()] == ([f"discord:{D_BOB}"] if name == "unban" else [])


# --- Telegram: banned after asking, before answering ------------------------------------------


async def test_a_user_banned_between_a_question_and_its_answer_is_refused_at_no_cost(
        tg_settings, adapter_runner, telegram, simulator):  # noqa: F811
    quiet = replace(tg_settings, telegram=replace(tg_settings.telegram, progress_interval=60.0))
    engine, _ = await adapter_runner(quiet, TelegramAdapter)
    video = await deliver_one(telegram, GROUP, ALICE)
    telegram.press_button(BOB, video, button(video, "ask:"))  # Bob: "animate with a prompt"
    await telegram.wait_for(lambda: sent(telegram, messages.ASK_PROMPT))
    ask = bot_message(telegram, GROUP, messages.ASK_PROMPT)
    async with asyncio.timeout(10):  # kept once sent: an answer before that answers nothing
        while await engine.pending_ask("telegram", GROUP, ask["message_id"]) is None:
            await asyncio.sleep(0.02)
    await engine.ban(f"telegram:{BOB}", f"telegram:{ALICE}", "spam")
    telegram.user_message(GROUP, BOB, text="she waves", reply_to=ask)
    await telegram.wait_for(lambda: messages.BANNED in _texts(telegram) + _texts(telegram, "sendMessage"))
    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: any(a.get("text") == messages.BANNED for a in answers(telegram)))
    await asyncio.sleep(0.3)
    assert len(simulator.submissions) == 1 and len(telegram.calls_to("getFile")) == 1  # Alice's photo only
    assert (await engine.balance(UserRef("telegram", str(BOB)))).total == 10


# --- a pause reason of 10 kB with mentions and markup, from the command line ----------------

REASON = "@everyone <@&1> **now** <b>x</b> " + "y" * 10_000


async def test_a_long_pause_reason_with_mentions_reaches_the_chats_cut_short_and_pinging_no_one(
        dc_settings, run_discord, fake_discord, simulator, database, tmp_path):  # noqa: F811
    engine, adapter = await run_discord(dc_settings)
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("pause", REASON, "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0 and len(done.stdout) < 300, done.stderr
    request = effect_payload(fake_discord, user=D_BOB)
    async with asyncio.timeout(10):
        while (await engine.paused()) is None:  # read again within 2 s
            await asyncio.sleep(0.1)
    feed(adapter, request)
    [refused] = await until(lambda: callbacks(fake_discord, request["token"]))
    content = refused["data"]["content"]
    assert content.startswith("The bot is paused by its admins (@everyone <@&1> **now** <b>x</b> yyy")
    assert len(content) < 200 and refused["data"]["flags"] & 64  # only the asker sees it: no ping
    assert fake_discord.to("/attachments/") == []


# --- Discord: /pause refund=True answers within Discord's three seconds ----------------------


class SlowToTell(RecordingCourier):
    """A chat that takes a second to show each refunded owner their job's end."""

    async def fail(self, job, reason: str) -> None:
        await asyncio.sleep(1.0)
        await super().fail(job, reason)


async def test_discord_pause_with_refund_answers_the_admin_within_three_seconds(
        dc_settings, run_discord, fake_discord):  # noqa: F811
    engine, adapter = await run_discord(dc_settings)
    # Jobs of a chat this process does not serve yet: they stay queued.
    queued = [await engine.accept(effect_request(who=user(n))) for n in range(4)]
    assert all(isinstance(answer, Accepted) for answer in queued)
    await engine.pause("hold", "cli")
    slow = SlowToTell()
    engine.register("test", slow)
    pause = fake_discord.slash("pause", [{"name": "refund", "type": 5, "value": True}],
                               user=D_ALICE, permissions=MANAGE)
    began = time.monotonic()
    feed(adapter, pause)
    await until(lambda: len(slow.failures) == 4, timeout=20)
    [first] = [c for c in fake_discord.to("/interactions/") if pause["token"] in c["path"]]
    assert first["at"] - began < 3.0  # Discord forgets an interaction not answered by then
    followups = f"/webhooks/{APP_ID}/{pause['token']}"
    [said] = await until(lambda: [c["json"] for c in fake_discord.to(followups, "POST")])  # once all are told
    assert said["content"] == "Paused: new requests are refused. 4 queued jobs refunded." and said["flags"] & 64
    for answer in queued:
        assert await ledger_entries(engine.store, answer.job.id) == ["reserve", "refund"]
