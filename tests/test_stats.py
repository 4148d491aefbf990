"""#17 /stats: the bot's figures for its admins, on SQLite and on PostgreSQL.

Jobs are written as another process would (their own store on the same database), with
the columns the spend part fills (charged_usd, failure, place_key) set directly; the
figures are read through the engine (what /stats, the console and `kling-bot stats`
show), the chart is opened as an image, the CLI runs as a subprocess, and /stats goes
through the real discord.py and python-telegram-bot clients against the fake servers.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import discord
import pytest
from PIL import Image

import tests.test_discord as dc
import tests.test_telegram as tg
from bot import messages
from bot.engine.stats import CHART_DAYS
from bot.jobs import JobState
from tests.backends import process_config
from tests.conftest import effect_request
from tests.fake_discord import APP_ID
from tests.fake_telegram import chat_of
from tests.helpers import checked, finished_job

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
fake_discord, dc_settings, run_discord = dc.fake_discord, dc.dc_settings, dc.run_discord
telegram, tg_settings, run_bot = tg.telegram, tg.tg_settings, tg.run_bot
GUILD_PLACE, CHAT_PLACE = "discord:guild:1", "telegram:chat:-100"


async def until(check, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not (found := await checked(check())):
            await asyncio.sleep(0.02)
    return found


async def _job(store, user_key, days_ago, state, settlement, cost, quote, charged=None, failure=None,
               place=""):
    """A job as the engine leaves it, created ``days_ago`` credit periods before now."""
    at = time.time() - days_ago * DAY - 1
    job_id = await store.insert_job({
        "user_key": user_key, "platform": "test", "reply_to": {}, "model_id": "kwaivgi/kling-effects",
        "kind": "effect", "inputs": {"effect_scene": "hula"}, "label": "effect hula", "cost": cost,
        "paid_daily": cost, "paid_bonus": 0, "period": "2026-01-01", "state": state.value,
        "settlement": settlement, "created_at": at, "updated_at": at, "place_key": place})
    await store.update_job(job_id, quote_usd=Decimal(quote), failure=failure,
                           charged_usd=None if charged is None else Decimal(charged))
    return job_id


@pytest.fixture
async def history(make_store):
    """Jobs over three weeks, written by another process (see the expected figures below)."""
    store = await make_store()
    for key, name in (("test:1", "Ann"), ("test:2", "Bob"), ("test:3", "Cid")):
        await store.add_user({"key": key, "platform": "test", "name": name, "period": "2026-01-01",
                              "daily_left": 10, "bonus": 0, "created_at": time.time()})
    done, failed, cancelled = JobState.DONE, JobState.FAILED, JobState.CANCELLED
    # today
    await _job(store, "test:1", 0, done, "committed", 1, "0.28", "0.28", place=GUILD_PLACE)
    await _job(store, "test:1", 0, done, "committed", 1, "0.28", place=GUILD_PLACE)  # charge not known: the quote
    await _job(store, "test:2", 0, failed, "refunded", 2, "0.56", failure="timeout", place=CHAT_PLACE)
    # WaveSpeed made the video (and billed it), the chat refused it: refunded, yet charged
    await _job(store, "test:2", 0, failed, "refunded", 2, "0.56", "0.56", failure="delivery", place=CHAT_PLACE)
    await _job(store, "test:3", 0, JobState.QUEUED, "reserved", 1, "0.28")  # reserved: counts
    await _job(store, "test:3", 0, cancelled, "refunded", 1, "0.28")  # no failure kind written: "cancelled"
    # three days ago
    await _job(store, "test:1", 3, done, "committed", 4, "1.12", "1.12", place=GUILD_PLACE)
    await _job(store, "test:2", 3, failed, "refunded", 2, "0.56", "0", failure="moderated", place=CHAT_PLACE)
    # ten days ago: in the chart, not in the week
    await _job(store, "test:1", 10, done, "committed", 2, "0.56", "0.56")
    # twenty days ago and still being made: in no span, but running now
    await _job(store, "test:3", 20, JobState.PROCESSING, "reserved", 1, "0.28")
    return store


async def test_figures_match_the_jobs_today_in_the_week_and_per_day(history, make_engine):
    engine = await make_engine(start=False)
    stats = await engine.stats()
    today, week = stats.today, stats.window
    assert today.jobs == {"delivered": 2, "failed": 2, "cancelled": 1, "running": 1, "refunded": 3}
    assert today.total == 6 and today.spend_usd == Decimal("1.40") and today.credits == 3
    assert today.failures == {"cancelled": 1, "delivery": 1, "timeout": 1}
    assert [(u.key, u.name, u.jobs, u.spend_usd) for u in today.top_users] == [
        ("test:1", "Ann", 2, Decimal("0.56")), ("test:2", "Bob", 2, Decimal("0.56")),
        ("test:3", "Cid", 2, Decimal("0.28"))]
    assert [(p.key, p.jobs, p.spend_usd) for p in today.top_places] == [
        (GUILD_PLACE, 2, Decimal("0.56")), (CHAT_PLACE, 2, Decimal("0.56"))]
    assert week.days == 7 and week.total == 8 and week.spend_usd == Decimal("2.52") and week.credits == 7
    assert week.jobs == {"delivered": 3, "failed": 3, "cancelled": 1, "running": 1, "refunded": 4}
    assert week.failures == {"cancelled": 1, "delivery": 1, "moderated": 1, "timeout": 1}
    assert [(u.key, u.jobs, u.spend_usd) for u in week.top_users][:2] == [
        ("test:1", 3, Decimal("1.68")), ("test:2", 3, Decimal("0.56"))]
    assert [(p.key, p.jobs, p.spend_usd) for p in week.top_places] == [
        (GUILD_PLACE, 3, Decimal("1.68")), (CHAT_PLACE, 3, Decimal("0.56"))]
    assert (stats.queued, stats.running) == (1, 1)
    assert len(stats.daily) == CHART_DAYS and stats.daily[-1].day == engine.credits.period()
    per_day = {len(stats.daily) - 1 - n: (day.total, day.spend_usd) for n, day in enumerate(stats.daily) if day.total}
    assert per_day == {0: (6, Decimal("1.40")), 3: (2, Decimal("1.12")), 10: (1, Decimal("0.56"))}

    text = stats.text()
    assert "Today: 6 jobs (2 delivered, 2 failed, 1 cancelled, 1 running; 3 refunded), $1.40 spent" in text
    assert "Last 7 days: 8 jobs" in text and "$2.52 spent at WaveSpeed, 7 credits spent." in text
    assert "Ann test:1: 3 jobs, $1.68" in text and f"{GUILD_PLACE}: 3 jobs, $1.68" in text
    assert "Failures: cancelled 1, delivery 1, moderated 1, timeout 1." in text
    assert "Now: 1 waiting in the queue, 1 being made." in text


async def test_a_longer_span_and_the_day_boundary_follow_the_reset_hour(history, make_engine, settings):
    engine = await make_engine(start=False)
    month = await engine.stats(30)
    assert month.window.total == 10 and len(month.daily) == 30  # the twenty-day-old job too
    assert month.window.spend_usd == Decimal("3.36")  # 2.52 + 0.56 + 0.28 (reserved)
    assert (await engine.stats(0)).window.days == 1  # at least today
    hour = (time.gmtime().tm_hour + 1) % 24  # the period started at most 23 hours ago
    shifted = await make_engine(replace(settings, quota=replace(settings.quota, reset_hour_utc=hour)), start=False)
    figures = await shifted.stats()
    assert time.time() - DAY <= figures.today.since <= time.time()
    assert figures.daily[-1].day == shifted.credits.period()


async def test_real_jobs_count_as_they_end(make_engine, simulator):
    engine = await make_engine()
    simulator.fail_next("submit", 400, 1200, message="content flagged")
    refused = await engine.accept(effect_request())
    await until(lambda: finished_job(engine, refused.job.id))
    made = await engine.accept(effect_request())
    await until(lambda: finished_job(engine, made.job.id))
    stats = await engine.stats()
    delivered = await engine.store.job(made.job.id)
    assert delivered.state is JobState.DONE and delivered.quote_usd is not None
    assert stats.today.jobs["delivered"] == 1 and stats.today.jobs["failed"] == 1
    assert stats.today.jobs["refunded"] == 1 and stats.today.credits == delivered.cost
    assert stats.today.spend_usd == delivered.quote_usd  # the refused one cost nothing
    assert sum(stats.today.failures.values()) == 1


async def test_the_chart_is_a_png_of_fourteen_days(history, make_engine):
    engine = await make_engine(start=False)
    png = (await engine.stats()).chart_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and 2_000 < len(png) < 300_000
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and 600 <= image.width <= 1600 and 300 <= image.height <= 900
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (66, 133, 244) in colours and (219, 68, 55) in colours  # the bars and the spend line are drawn
    empty = await make_engine(start=False)
    await engine.store.erase()
    with Image.open(io.BytesIO((await empty.stats()).chart_png())) as image:
        assert image.format == "PNG"  # a bot with no jobs yet still gets a chart


# --- the command line ----------------------------------------------------------------------

def _kling(*args, cwd):
    env = {**{k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)


async def test_kling_bot_stats_json_parses_and_matches(history, make_engine, tmp_path, simulator, database):
    config = process_config(tmp_path, simulator.base_url, database)
    chart = tmp_path / "chart.png"
    done = await asyncio.to_thread(_kling, "stats", "--json", "--days", "7", "--chart", str(chart),
                                   "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    expected = (await (await make_engine(start=False)).stats(7)).as_json()
    assert {k: v for k, v in figures.items() if k != "at"} == {k: v for k, v in expected.items() if k != "at"}
    assert figures["today"]["spend_usd"] == "1.40" and figures["window"]["jobs"]["total"] == 8
    assert figures["window"]["top_users"][0] == {"key": "test:1", "name": "Ann", "jobs": 3, "spend_usd": "1.68"}
    assert len(figures["daily"]) == CHART_DAYS and figures["queued"] == 1
    with Image.open(chart) as image:
        assert image.format == "PNG"

    text = await asyncio.to_thread(_kling, "stats", "--days", "4", "--config", str(config), cwd=tmp_path)
    assert text.returncode == 0 and "Last 4 days: 8 jobs" in text.stdout
    wrong = await asyncio.to_thread(_kling, "stats", "--days", "0", "--config", str(config), cwd=tmp_path)
    assert wrong.returncode == 2 and messages.CLI_STATS_DAYS in wrong.stderr and not wrong.stdout


# --- Discord -----------------------------------------------------------------------------

async def test_discord_stats_posts_the_figures_and_the_chart_to_admins_only(
        history, run_discord, dc_settings, fake_discord):
    _, adapter = await run_discord()
    payload = fake_discord.slash("stats", [], user=dc.ALICE, permissions=MANAGE_GUILD)
    dc.feed(adapter, payload)
    [followup] = await until(lambda: fake_discord.to(f"/webhooks/{APP_ID}/{payload['token']}", "POST"))
    [deferred] = dc.callbacks(fake_discord, payload["token"])
    assert deferred["type"] == 5 and deferred["data"]["flags"] & 64  # "thinking…", only to the admin
    assert followup["json"]["flags"] & 64 and followup["json"]["allowed_mentions"]["parse"] == []
    assert followup["json"]["content"].startswith("Bot figures (days start at 00:00 UTC):\nToday: 6 jobs")
    [(name, png)] = followup["files"].items()
    assert name == messages.STATS_CHART_FILENAME
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"

    refused = fake_discord.slash("stats", [], user=dc.BOB, permissions="0")
    dc.feed(adapter, refused)
    [answer] = await until(lambda: dc.callbacks(fake_discord, refused["token"]))
    assert answer["data"]["content"] == messages.ADMINS_ONLY and answer["data"]["flags"] & 64
    assert not fake_discord.to(f"/webhooks/{APP_ID}/{refused['token']}", "POST")


async def test_discord_stats_and_balance_are_synced_for_server_managers(run_discord, fake_discord):
    await run_discord()
    [sync] = fake_discord.to("/commands", "PUT")
    synced = {c["name"]: c for c in sync["json"]}
    for name in ("stats", "balance"):
        assert int(synced[name]["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
        assert synced[name]["description"] == messages.COMMANDS[name]


# --- Telegram ----------------------------------------------------------------------------

async def test_telegram_stats_sends_the_figures_and_the_chart_to_an_admin(history, run_bot, telegram):
    await run_bot()
    telegram.user_message(tg.ALICE, tg.ALICE, text="/stats")
    [photo] = await telegram.wait_for(lambda: telegram.calls_to("sendPhoto"))
    [text] = [c["params"] for c in telegram.calls_to("sendMessage")]
    assert text["chat_id"] == tg.ALICE and text["text"].startswith("Bot figures (days start at 00:00 UTC):")
    assert "Today: 6 jobs" in text["text"] and "Last 7 days: 8 jobs" in text["text"]
    assert photo["params"]["chat_id"] == tg.ALICE
    with Image.open(io.BytesIO(photo["files"]["photo"])) as image:
        assert image.format == "PNG"


async def test_telegram_stats_asked_in_a_group_goes_to_the_admins_private_chat(history, run_bot, telegram):
    await run_bot()
    telegram.user_message(tg.GROUP, tg.ALICE, text="/stats")
    await telegram.wait_for(lambda: telegram.calls_to("sendPhoto"))
    said = await telegram.wait_for(lambda: len(sent := telegram.calls_to("sendMessage")) == 2 and sent)
    assert said[0]["params"]["chat_id"] == tg.ALICE and "Today: 6 jobs" in said[0]["params"]["text"]
    assert said[1]["params"]["chat_id"] == tg.GROUP
    assert said[1]["params"]["text"] == messages.TELEGRAM_FIGURES_SENT_PRIVATELY
    assert telegram.calls_to("sendPhoto")[0]["params"]["chat_id"] == tg.ALICE

    telegram.blocked.add(tg.ALICE)  # an admin who never started the bot, or blocked it
    telegram.user_message(tg.GROUP, tg.ALICE, text="/stats")
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage")[-1]["params"]["text"]
                            == messages.TELEGRAM_FIGURES_NEED_PRIVATE_CHAT)
    assert telegram.calls_to("sendMessage")[-1]["params"]["chat_id"] == tg.GROUP


async def test_telegram_stats_refuses_everyone_else(history, run_bot, telegram):
    await run_bot()
    telegram.user_message(tg.BOB, tg.BOB, text="/stats")
    # an anonymous admin of the group is the group itself: never one of the bot's admins
    telegram.user_message(tg.GROUP, tg.ALICE, text="/stats", sender_chat=chat_of(tg.GROUP))
    said = await telegram.wait_for(lambda: len(sent := telegram.calls_to("sendMessage")) == 2 and sent)
    assert [c["params"]["text"] for c in said] == [messages.TELEGRAM_FIGURES_ADMINS_ONLY] * 2
    assert {c["params"]["chat_id"] for c in said} == {tg.BOB, tg.GROUP}
    await asyncio.sleep(0.3)
    assert not telegram.calls_to("sendPhoto") and len(telegram.calls_to("sendMessage")) == 2


# --- the console ---------------------------------------------------------------------------

async def test_console_stats_prints_the_figures(history, make_engine, tmp_path):
    from adapters.console import ConsoleChat, ConsoleCourier
    from bot.jobs import UserRef

    engine = await make_engine(start=False)
    out = io.StringIO()
    chat = ConsoleChat(engine, ConsoleCourier(out, tmp_path), UserRef("console", "me"), b"", out=out)
    assert await chat.handle("/stats")
    assert "Today: 6 jobs" in out.getvalue() and "Now: 1 waiting in the queue, 1 being made." in out.getvalue()
