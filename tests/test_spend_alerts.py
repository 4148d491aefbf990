"""Admin alerts of the [spend] caps (issue #17, item 1): one message when 80% and one when
100% of a cap is used, however many processes reach the mark; on Discord in ``[discord]
admin_channel``, on Telegram to each of ``[telegram] admins``."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import discord
import pytest

from adapters.discord import DiscordAdapter
from adapters.telegram import TelegramAdapter
from bot.catalog import BUILT_IN
from bot.config import QuotaSettings, SpendSettings
from bot.spend import SpendCaps
from tests.backends import process_config
from tests.fake_discord import GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import checked, image_bytes
from tests.test_postgres_store import add_user, job_row
from tests.test_spend_caps import answers_of, spawn

pytestmark = pytest.mark.both_backends
DC_TOKEN = "MTIz.spend-alerts-discord.SECRET"
TG_TOKEN = "123456:SPEND-alerts-telegram-SECRET"
ADMIN_CHANNEL = 700000000000000099
ALICE, BOB = 600000000000000001, 600000000000000002
TG_ADMIN, TG_MEMBER, GROUP = 1001, 1002, -100500


def effect_at_one_dollar(simulator) -> None:
    simulator.set_base_price(BUILT_IN.resolve_model(None, "effect").id, "1")


def capped(settings, daily_usd: str):
    return replace(settings, spend=SpendSettings(daily_usd=Decimal(daily_usd)),
                   quota=replace(settings.quota, daily_credits=100, max_jobs_per_user=20))


async def until(check, timeout: float = 30.0):
    async with asyncio.timeout(timeout):
        while not (found := await checked(check())):
            await asyncio.sleep(0.05)
    return found


def alerts_in(paths: list[Path]) -> list[str]:
    lines = [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]
    return [event["text"] for event in lines if event["event"] == "alert"]


async def test_two_processes_send_one_alert_at_80_and_one_at_100_percent(tmp_path, simulator, database):
    effect_at_one_dollar(simulator)
    config = process_config(tmp_path, simulator.base_url, database, '\n[spend]\ndaily_usd = "5"\n')
    events = [tmp_path / f"events-{n}.jsonl" for n in range(2)]
    at = time.time() + 8
    processes = [await spawn(config, path, submit=3, at=at) for path in events]
    try:
        answers = [line for process in processes for line in await answers_of(process, 3)]
        await until(lambda: len(alerts_in(events)) >= 2, timeout=60)
        await asyncio.sleep(1.0)  # a duplicate from the other process would have come by now
        sent = alerts_in(events)
    finally:
        for process in processes:
            process.terminate()
            await process.wait()
    assert sum("daily spending cap" in line for line in answers) == 1, answers  # $5 of six $1 requests
    assert len(sent) == 2, sent
    [eighty] = [text for text in sent if "80% used" in text]
    [hundred] = [text for text in sent if "100% used" in text]
    assert "$4.00 of $5.00" in eighty and "$5.00 of $5.00" in hundred
    assert "resets at 00:00 UTC" in hundred


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def run_discord(settings, fake_discord, adapter_runner, simulator):
    effect_at_one_dollar(simulator)
    chosen = replace(capped(settings, "1.25"), discord=replace(
        settings.discord, token=DC_TOKEN, guild_ids=[GUILD], api_base_url=fake_discord.api_base_url,
        progress_interval=0.0, admin_channel=ADMIN_CHANNEL))
    original_base = discord.http.Route.BASE
    yield lambda: adapter_runner(chosen, DiscordAdapter, launch="prepare")
    discord.http.Route.BASE = original_base


def effect_payload(fake: FakeDiscord, user: int) -> dict:
    attachment = fake.attachment(image_bytes(640, 480))
    return fake.slash("effect", [{"name": "scene", "type": 3, "value": "hula"},
                                 {"name": "image", "type": 11, "value": attachment["id"]}],
                      user=user, attachments=[attachment])


def admin_channel_posts(fake: FakeDiscord) -> list[str]:
    return [call["json"]["content"] for call in fake.to(f"/channels/{ADMIN_CHANNEL}/messages", "POST")]


async def test_discord_admins_hear_in_the_admin_channel(run_discord, fake_discord):
    _, adapter = await run_discord()
    adapter.client._connection.parse_interaction_create(effect_payload(fake_discord, ALICE))
    [eighty] = await until(lambda: admin_channel_posts(fake_discord))
    assert "daily spending cap is 80% used: $1.00 of $1.25" in eighty

    refused = effect_payload(fake_discord, BOB)  # $1 more would cross the cap: refused, and it is reached
    adapter.client._connection.parse_interaction_create(refused)
    posts = await until(lambda: (found := admin_channel_posts(fake_discord)) and len(found) >= 2 and found)
    assert "100% used" in posts[1]
    answer = await until(lambda: [c["json"] for c in fake_discord.to("/interactions/")
                                  if refused["token"] in c["path"]])
    assert "daily spending cap is reached" in json.dumps(answer)
    await asyncio.sleep(0.5)
    assert len(admin_channel_posts(fake_discord)) == 2  # once each


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_telegram_admins_hear_in_their_private_chats(settings, telegram, adapter_runner, simulator):
    effect_at_one_dollar(simulator)
    chosen = replace(capped(settings, "1.25"), telegram=replace(
        settings.telegram, token=TG_TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url,
        progress_interval=0.0, admins=[TG_ADMIN]))
    await adapter_runner(chosen, TelegramAdapter)
    telegram.user_message(GROUP, TG_MEMBER, caption="/effect hula", photo=image_bytes(800, 600))

    def to_admin():
        return [c["params"]["text"] for c in telegram.calls_to("sendMessage")
                if int(c["params"]["chat_id"]) == TG_ADMIN]

    [eighty] = await until(to_admin)
    assert "80% used: $1.00 of $1.25" in eighty
    telegram.user_message(GROUP, TG_MEMBER, caption="/effect hula", photo=image_bytes(800, 600))
    both = await until(lambda: len(found := to_admin()) >= 2 and found)
    assert "100% used" in both[1]
    refusals = [c["params"]["text"] for c in telegram.calls_to("sendMessage") if int(c["params"]["chat_id"]) == GROUP]
    assert any("daily spending cap is reached" in text for text in refusals)
    assert TG_TOKEN not in "".join(to_admin())


async def test_a_job_that_reaches_100_percent_leaves_the_80_percent_alert_to_the_job_that_crossed_it(make_store):
    """The job that takes a cap from 80% to 100% claims only the 100% alert: were it to
    claim 80% too, it could win that claim over the job that crossed 80% in a slower
    process, and the admins would read "80% used: $5.00 of $5.00"."""
    first, second = await make_store(), await make_store()  # two processes on one database
    await add_user(first)
    told: list[str] = []

    async def alert(text: str) -> None:
        told.append(text)

    slow, quick = (SpendCaps(SpendSettings(daily_usd=Decimal("5")), QuotaSettings(), store, alert, time.time)
                   for store in (first, second))
    real_alert = slow._alert

    async def late_alert(*args) -> None:  # the first process is busy: its alerts start late
        await asyncio.sleep(0.3)
        await real_alert(*args)

    slow._alert = late_alert  # type: ignore[method-assign]

    def a_job_of(store, usd: str):
        async def reserve() -> int:  # the accept's write: a job row that counts its quote
            return await store.insert_job(job_row("test:1", quote_usd=Decimal(usd), created_at=time.time()))
        return reserve

    await slow.within("", Decimal("3"), a_job_of(first, "3"))  # 60%
    await slow.within("", Decimal("1"), a_job_of(first, "1"))  # 80%: told late
    await quick.within("", Decimal("1"), a_job_of(second, "1"))  # 100%, told at once
    await quick.settle()
    await slow.settle()
    assert len(told) == 2, told
    [eighty] = [text for text in told if "80% used" in text]
    [hundred] = [text for text in told if "100% used" in text]
    assert "$4.00 of $5.00" in eighty and "$5.00 of $5.00" in hundred
    [cap] = quick.caps("")
    assert quick.levels_told(cap, Decimal("3"), Decimal("5")) == [80, 100]  # both crossed at once: both said
    assert quick.levels_told(cap, Decimal("4.2"), Decimal("4.5")) == [80]  # a cap set above what was spent
