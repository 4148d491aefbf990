"""Who gets what (#17): bans refused politely at no cost on both platforms (through the
real clients against the fakes), and daily allowances by Discord role and Telegram chat."""

from __future__ import annotations

from dataclasses import replace

import discord
import pytest

from adapters.discord import DiscordAdapter
from adapters.telegram import TelegramAdapter
from bot import messages
from bot.jobs import Accepted, Rejected, UserRef
from tests.backends import process_config
from tests.conftest import effect_request, press, user
from tests.fake_discord import APP_ID, GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes
from tests.test_cli import kling
from tests.test_discord import TOKEN as DC_TOKEN
from tests.test_discord import callbacks, effect_payload, feed, until
from tests.test_telegram import TOKEN as TG_TOKEN
from tests.test_telegram import _texts

pytestmark = pytest.mark.both_backends

ALICE, BOB = 1001, 1002  # Telegram: ALICE is an admin
GROUP = -100500
D_ALICE, D_BOB = 600000000000000001, 600000000000000002
ROLE, BIG_ROLE = "700000000000000001", "700000000000000002"
MANAGE = str(discord.Permissions(manage_guild=True).value)
BANNED = "Sorry, you can't make videos with this bot. If you think this is a mistake, ask its admins."


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def tg_settings(settings, telegram):
    return replace(settings, telegram=replace(
        settings.telegram, token=TG_TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url,
        progress_interval=0.0, admins=[ALICE]))


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def dc_settings(settings, fake_discord):
    return replace(settings, discord=replace(settings.discord, token=DC_TOKEN, guild_ids=[GUILD],
                                             api_base_url=fake_discord.api_base_url,
                                             progress_interval=0.0, admins=[]))


@pytest.fixture
async def run_discord(adapter_runner):
    original_base = discord.http.Route.BASE
    yield lambda custom: adapter_runner(custom, DiscordAdapter, launch="prepare")
    discord.http.Route.BASE = original_base


def tg_user(user_id: int) -> UserRef:
    return UserRef("telegram", str(user_id))


def dc_user(user_id: int) -> UserRef:
    return UserRef("discord", str(user_id))


# --- bans ---------------------------------------------------------------------------------

async def test_a_banned_telegram_user_is_refused_politely_and_costs_nothing(tg_settings, adapter_runner,
                                                                            telegram, simulator):
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    bob_said = telegram.user_message(GROUP, BOB, text="hello", push=False)
    telegram.user_message(GROUP, ALICE, text="/ban spamming", reply_to=bob_said)
    await telegram.wait_for(lambda: "User1002 is banned: their requests are refused and cost nothing."
                            in _texts(telegram, "sendMessage"))
    telegram.user_message(GROUP, BOB, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: BANNED in _texts(telegram, "sendMessage"))
    assert telegram.calls_to("getFile") == []  # refused before any download
    assert simulator.submissions == []
    assert (await engine.balance(tg_user(BOB))).total == 10
    assert await engine.store.user_jobs(tg_user(BOB).key, active_only=False) == []

    telegram.user_message(ALICE, ALICE, text=f"/unban {BOB}")
    await telegram.wait_for(lambda: f"{BOB} is no longer banned." in _texts(telegram, "sendMessage"))
    telegram.user_message(GROUP, BOB, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


async def test_only_telegram_admins_ban(tg_settings, adapter_runner, telegram):
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    alice_said = telegram.user_message(GROUP, ALICE, text="hello", push=False)
    telegram.user_message(GROUP, BOB, text="/ban", reply_to=alice_said)
    telegram.user_message(GROUP, BOB, text=f"/unban {ALICE}")
    await telegram.wait_for(lambda: _texts(telegram, "sendMessage").count("Only the bot's admins can do that.") == 2)
    assert not await engine.banned(tg_user(ALICE).key)
    telegram.user_message(ALICE, ALICE, text="/ban")  # neither a reply nor an id
    await telegram.wait_for(lambda: messages.TELEGRAM_BAN_USAGE in _texts(telegram, "sendMessage"))


async def test_a_banned_discord_user_is_refused_politely_and_costs_nothing(dc_settings, run_discord,
                                                                           fake_discord, simulator):
    engine, adapter = await run_discord(dc_settings)
    ban = fake_discord.slash("ban", [{"name": "member", "type": 6, "value": str(D_BOB)},
                                     {"name": "reason", "type": 3, "value": "spam"}],
                             user=D_ALICE, permissions=MANAGE, users=[D_BOB])
    feed(adapter, ban)
    [answer] = await until(lambda: callbacks(fake_discord, ban["token"]))
    assert answer["data"]["content"] == f"<@{D_BOB}> is banned: their requests are refused and cost nothing."
    assert answer["data"]["flags"] & 64
    request = effect_payload(fake_discord, user=D_BOB)
    feed(adapter, request)
    [refused] = await until(lambda: callbacks(fake_discord, request["token"]))
    assert refused["data"]["content"] == BANNED and refused["data"]["flags"] & 64
    assert fake_discord.to("/attachments/") == [] and simulator.submissions == []
    assert (await engine.balance(dc_user(D_BOB))).total == 10

    unban = fake_discord.slash("unban", [{"name": "member", "type": 6, "value": str(D_BOB)}],
                               user=D_ALICE, permissions=MANAGE, users=[D_BOB])
    feed(adapter, unban)
    [answer] = await until(lambda: callbacks(fake_discord, unban["token"]))
    assert answer["data"]["content"] == f"<@{D_BOB}> is no longer banned."
    assert not await engine.banned(dc_user(D_BOB).key)
    again = effect_payload(fake_discord, user=D_BOB)
    feed(adapter, again)
    await until(lambda: fake_discord.to("/attachments/"))  # the photo is fetched now


async def test_only_discord_admins_ban(dc_settings, run_discord, fake_discord):
    engine, adapter = await run_discord(dc_settings)
    ban = fake_discord.slash("ban", [{"name": "member", "type": 6, "value": str(D_ALICE)}],
                             user=D_BOB, permissions="0", users=[D_ALICE])
    feed(adapter, ban)
    [answer] = await until(lambda: callbacks(fake_discord, ban["token"]))
    assert answer["data"]["content"] == "Only server managers and the bot's admins can do that."
    assert not await engine.banned(dc_user(D_ALICE).key)


async def test_a_banned_user_cannot_rerun_a_video(make_engine, courier, simulator):
    engine = await make_engine()
    accepted = await engine.accept(effect_request())
    assert isinstance(accepted, Accepted)
    assert (await courier.outcome(accepted.job.id))[0] == "delivered"
    assert await engine.ban(user().key, "telegram:1", "abuse") is True
    assert await engine.ban(user().key, "telegram:1") is False  # banned already
    refusal = await engine.rerun_precheck(press(user()), accepted.job.id, effect="jelly_press")
    assert refusal is not None and refusal.text == BANNED
    answer = await engine.rerun(press(user()), accepted.job.id, reply_to={"chat": 42}, effect="jelly_press")
    assert isinstance(answer, Rejected) and answer.text == BANNED
    assert len(simulator.submissions) == 1 and (await engine.balance(user())).total == 9


async def test_users_ban_and_unban_on_the_command_line(make_engine, simulator, database, tmp_path):
    engine = await make_engine()
    config = process_config(tmp_path, simulator.base_url, database)
    done = kling("users", "ban", "test:1", "--reason", "spam", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "platform:id" in done.stderr  # no such platform
    done = kling("users", "ban", "telegram:1002", "--reason", "spam", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "telegram:1002 is banned: their requests are refused and cost nothing."
    answer = await engine.accept(effect_request(who=tg_user(BOB)))
    assert isinstance(answer, Rejected) and answer.text == BANNED
    listed = kling("users", "list", "--config", str(config), cwd=tmp_path)
    assert listed.stdout.strip() == "telegram:1002 banned by cli: spam"
    done = kling("users", "unban", "telegram:1002", "--config", str(config), cwd=tmp_path)
    assert done.stdout.strip() == "telegram:1002 is no longer banned."
    assert kling("users", "list", "--config", str(config), cwd=tmp_path).stdout.strip() == "Nobody is banned."


# --- allowances -----------------------------------------------------------------------------

async def test_a_discord_role_gives_its_daily_allowance_the_highest_applying(dc_settings, run_discord,
                                                                             fake_discord):
    custom = replace(dc_settings, discord=replace(dc_settings.discord, roles={ROLE: 30, BIG_ROLE: 50}))
    engine, adapter = await run_discord(custom)
    for who, roles in ((D_ALICE, [ROLE]), (D_BOB, [ROLE, BIG_ROLE])):
        quota = fake_discord.slash("quota", [], user=who)
        quota["member"]["roles"] = roles
        feed(adapter, quota)
        [answer] = await until(lambda q=quota: callbacks(fake_discord, q["token"]))
        expected = 30 if who == D_ALICE else 50
        assert answer["data"]["content"].startswith(
            f"You have {expected} credits. Daily credits reset to {expected} at 00:00 UTC")
    request = effect_payload(fake_discord, user=D_ALICE)
    request["member"]["roles"] = [ROLE]
    feed(adapter, request)
    await until(lambda: [c for c in fake_discord.to(f"/webhooks/{APP_ID}/{request['token']}", "POST") if c["files"]])
    assert (await engine.balance(dc_user(D_ALICE))).total == 29
    plain = fake_discord.slash("quota", [], user=600000000000000003)  # no role: [quota] daily_credits
    feed(adapter, plain)
    [answer] = await until(lambda: callbacks(fake_discord, plain["token"]))
    assert answer["data"]["content"].startswith("You have 10 credits. Daily credits reset at")


async def test_a_telegram_chat_gives_its_members_its_daily_allowance(tg_settings, adapter_runner, telegram):
    custom = replace(tg_settings, telegram=replace(tg_settings.telegram, chats={str(GROUP): 20}))
    engine, _ = await adapter_runner(custom, TelegramAdapter)
    telegram.user_message(GROUP, BOB, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert any(t.startswith("Job 1 queued (effect hula), next in line. It costs 1 credit; 19 left.")
               for t in _texts(telegram))
    telegram.user_message(BOB, BOB, text="/quota")  # in private the group's day stays granted
    telegram.user_message(ALICE, ALICE, text="/quota")  # never in the group: the usual
    replies = await telegram.wait_for(lambda: len(t := [x for x in _texts(telegram, "sendMessage")
                                                        if x.startswith("You have")]) == 2 and t)
    assert sorted(replies)[0].startswith("You have 10 credits. Daily credits reset at")
    assert sorted(replies)[1].startswith("You have 19 credits. Daily credits reset to 20 at")


async def test_a_higher_allowance_mid_day_tops_up_once_and_a_lower_takes_nothing(make_engine, settings):
    custom = replace(settings, telegram=replace(settings.telegram, chats={str(GROUP): 25}))
    engine = await make_engine(custom)
    alone, in_group = UserRef("telegram", "5"), UserRef("telegram", "5", chat=str(GROUP))
    assert (await engine.balance(alone)).total == 10
    assert (await engine.balance(in_group)).total == 25  # topped up by the difference
    assert (await engine.balance(alone)).total == 25  # a lower allowance takes nothing away
    assert (await engine.balance(in_group)).total == 25  # and the group's is given once a day
