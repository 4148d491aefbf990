"""#18 stats: purchases and refunds per day in /stats and `kling-bot stats`, on /metrics,
in `kling-bot payments list` and in `kling-bot credits show`, on SQLite and on PostgreSQL.

Payment rows are written as the payments part writes them (one row per charge, its refund on
the same row), directly in the database another process shares; the figures are read
through the engine (what /stats and the console show), /metrics as Prometheus' parser
reads it, and the command line as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import tests.test_telegram as tg
from bot import messages
from bot.engine.stats import CHART_DAYS
from bot.store.activity import PaymentCounts
from tests.backends import process_config, raw_sql
from tests.test_cli import kling
from tests.test_ops_http import ops_of, scrape, value  # noqa: F401  (ops_of: a fixture)

pytestmark = pytest.mark.both_backends

DAY = 86400
HOUR = 3600
telegram, tg_settings, run_bot = tg.telegram, tg.tg_settings, tg.run_bot


async def _payment(store, key, user_key, credits, at, *, stars=None, sku=None, refunded_at=None,
                   taken_back=None, short=None, by=None, pack="Starter"):
    """A payments row as the payments part leaves it (refunded when ``refunded_at`` is set)."""
    await raw_sql(store, "insert into payments (key, platform, user_key, pack, credits, stars, sku_id, at,"
                         " refunded_at, refunded_credits, refund_short, refunded_by)"
                         " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [key, key.partition(":")[0], user_key, pack, credits, stars, sku, at, refunded_at,
                   taken_back, short, by])


@pytest.fixture
async def paid(make_store, make_engine):
    """Purchases and refunds over two days (and one ten days ago), written by another process.
    Returns when today's credit period started."""
    store = await make_store()
    today = (await make_engine(start=False))._period_start(time.time())
    yesterday = today - HOUR  # an hour before today began: the day before, whatever the time now
    await _payment(store, "telegram:ch-a", "telegram:1", 100, yesterday, stars=50,  # refunded today
                   refunded_at=today + 60, taken_back=60, short=40, by="42")
    await _payment(store, "discord:111", "discord:2", 200, yesterday + 1, sku="1234", pack="Big",
                   refunded_at=yesterday + 2, taken_back=200, short=0, by="discord")  # refunded yesterday
    await _payment(store, "telegram:ch-c", "telegram:1", 100, today + 30, stars=50)
    await _payment(store, "telegram:ch-old", "telegram:3", 500, today - 10 * DAY, stars=250, pack="Huge")
    return today


TODAY = PaymentCounts(purchases=1, telegram=1, credits=100, stars=50, refunds=1, taken_back=60, short=40)
YESTERDAY = PaymentCounts(purchases=2, telegram=1, discord=1, credits=300, stars=50, refunds=1, taken_back=200)
WEEK = PaymentCounts(purchases=3, telegram=2, discord=1, credits=400, stars=100, refunds=2, taken_back=260,
                     short=40)


async def test_purchases_and_refunds_count_on_the_day_each_was_made(paid, make_engine):
    stats = await (await make_engine(start=False)).stats()
    assert stats.today.payments == TODAY
    assert stats.window.payments == WEEK
    assert len(stats.daily) == CHART_DAYS
    assert stats.daily[-1].payments == TODAY and stats.daily[-2].payments == YESTERDAY
    assert stats.daily[-11].payments == PaymentCounts(purchases=1, telegram=1, credits=500, stars=250)
    assert sum((day.payments for day in stats.daily[:-11] + stats.daily[-10:-2]), PaymentCounts()) \
        == PaymentCounts()
    month = await (await make_engine(start=False)).stats(30)
    assert month.window.payments.purchases == 4 and month.window.payments.credits == 900

    text = stats.text()
    assert ("Payments today: 1 purchase (1 with 50 Telegram Stars), 100 credits bought; 1 refund,"
            " 60 credits taken back, 40 short (spent before the refund).") in text
    assert ("Payments, last 7 days: 3 purchases (2 with 100 Telegram Stars; 1 on Discord), 400 credits bought;"
            " 2 refunds, 260 credits taken back, 40 short (spent before the refund).") in text
    yesterday, today = stats.daily[-2].day, stats.daily[-1].day
    day_lines = [line for line in text.splitlines() if line.startswith("  20")]
    assert day_lines == [
        f"  {yesterday}: 2 purchases (1 with 50 Telegram Stars; 1 on Discord), 300 credits bought;"
        " 1 refund, 200 credits taken back.",
        f"  {today}: 1 purchase (1 with 50 Telegram Stars), 100 credits bought; 1 refund, 60 credits taken back,"
        " 40 short (spent before the refund)."]
    assert text.index("Now: ") < text.index("Payments today")  # a chat's cut takes the day list first


async def test_telegram_stats_shows_the_payments(paid, run_bot, telegram):
    await run_bot()
    telegram.user_message(tg.ALICE, tg.ALICE, text="/stats")
    [text] = await telegram.wait_for(lambda: [c["params"]["text"] for c in telegram.calls_to("sendMessage")])
    assert "\nPayments today: 1 purchase (1 with 50 Telegram Stars), 100 credits bought; 1 refund," in text
    assert "\nPayments, last 7 days: 3 purchases (2 with 100 Telegram Stars; 1 on Discord)" in text


async def test_a_bot_without_payments_says_none(make_store, make_engine):
    await make_store()
    stats = await (await make_engine(start=False)).stats()
    assert stats.window.payments == PaymentCounts()
    text = stats.text()
    assert text.endswith("being made.\nPayments today: none.\nPayments, last 7 days: none.")
    assert stats.as_json()["window"]["payments"] == PaymentCounts().as_json()


async def test_kling_bot_stats_shows_payments_in_text_and_json(paid, make_engine, tmp_path, simulator, database):
    config = process_config(tmp_path, simulator.base_url, database)
    done = await asyncio.to_thread(kling, "stats", "--json", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["today"]["payments"] == TODAY.as_json()
    assert figures["window"]["payments"] == {"purchases": 3, "telegram": 2, "discord": 1, "credits": 400,
                                             "stars": 100, "refunds": 2, "taken_back": 260, "short": 40}
    per_day = {row["day"]: row for row in figures["payments"]}
    assert len(figures["payments"]) == CHART_DAYS and [row["day"] for row in figures["payments"]] \
        == [row["day"] for row in figures["daily"]]
    assert per_day[figures["daily"][-2]["day"]] == {"day": figures["daily"][-2]["day"], **YESTERDAY.as_json()}
    assert sum(row["purchases"] for row in figures["payments"]) == 4
    expected = (await (await make_engine(start=False)).stats(7)).as_json()
    assert {k: v for k, v in figures.items() if k != "at"} == {k: v for k, v in expected.items() if k != "at"}

    text = await asyncio.to_thread(kling, "stats", "--days", "1", "--config", str(config), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "Payments today: 1 purchase (1 with 50 Telegram Stars), 100 credits bought; 1 refund" in text.stdout
    assert "Payments, last 1 day: 1 purchase" in text.stdout and "\n  20" not in text.stdout  # no day list


async def test_metrics_count_payments_refunds_and_credits_bought(paid, make_store, ops_of):  # noqa: F811
    store = await make_store()
    samples = await scrape(await ops_of(store))
    assert value(samples, "kling_payments_total", platform="telegram") == 3
    assert value(samples, "kling_payments_total", platform="discord") == 1
    assert value(samples, "kling_payment_refunds_total", platform="telegram") == 1
    assert value(samples, "kling_payment_refunds_total", platform="discord") == 1
    assert value(samples, "kling_credits_purchased_total") == 900
    assert value(samples, "kling_credits_taken_back_total") == 260
    assert value(samples, "kling_stars_received_total") == 350


async def test_metrics_show_no_payments_at_zero(make_store, ops_of):  # noqa: F811
    samples = await scrape(await ops_of(await make_store()))
    for platform in ("telegram", "discord"):
        assert ("kling_payments_total", frozenset({("platform", platform)})) in samples
        assert value(samples, "kling_payment_refunds_total", platform=platform) == 0
    assert ("kling_credits_purchased_total", frozenset()) in samples


async def test_kling_bot_payments_list_lists_newest_first_and_filters(paid, tmp_path, simulator, database):
    config = ["--config", str(process_config(tmp_path, simulator.base_url, database))]
    done = await asyncio.to_thread(kling, "payments", "list", *config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split("  key ")[1].split()[0] for line in lines] == \
        ["telegram:ch-c", "discord:111", "telegram:ch-a", "telegram:ch-old"]
    newest, discord, refunded, _ = lines
    assert newest.endswith("  telegram  telegram:1  Starter: 100 credits, 50 Stars  key telegram:ch-c  not refunded")
    assert " UTC  discord  discord:2  Big: 200 credits, SKU 1234  key discord:111  refunded " in discord
    assert discord.endswith(" UTC by discord: 200 credits taken back")
    assert refunded.endswith(" UTC by 42: 60 credits taken back, 40 short")

    mine = await asyncio.to_thread(kling, "payments", "list", "--user", "telegram:1", "--days", "2", *config,
                                   cwd=tmp_path)
    assert [line.split("  key ")[1].split()[0] for line in mine.stdout.strip().splitlines()] == \
        ["telegram:ch-c", "telegram:ch-a"]
    today = await asyncio.to_thread(kling, "payments", "list", "--days", "1", "--json", *config, cwd=tmp_path)
    assert today.returncode == 0, today.stderr
    [row] = json.loads(today.stdout)
    assert row["key"] == "telegram:ch-c" and row["user"] == "telegram:1" and row["credits"] == 100
    assert row["stars"] == 50 and row["sku_id"] is None and row["refunded_at"] is None and row["taken_back"] == 0
    nobody = await asyncio.to_thread(kling, "payments", "list", "--user", "discord:9", *config, cwd=tmp_path)
    assert nobody.stdout.strip() == "No payments of discord:9 in the last 30 days."

    bad = await asyncio.to_thread(kling, "payments", "list", "--user", "telegram:abc", *config, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == f"kling-bot: {messages.CLI_USER_KEY}" and not bad.stdout
    bad = await asyncio.to_thread(kling, "payments", "list", "--days", "0", *config, cwd=tmp_path)
    assert bad.returncode == 2 and messages.CLI_STATS_DAYS in bad.stderr


async def test_kling_bot_payments_list_on_an_empty_database_says_no_payments(make_store, tmp_path, simulator,
                                                                             database):
    await make_store()
    config = ["--config", str(process_config(tmp_path, simulator.base_url, database))]
    done = await asyncio.to_thread(kling, "payments", "list", *config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "No payments in the last 30 days."
    empty = await asyncio.to_thread(kling, "payments", "list", "--json", *config, cwd=tmp_path)
    assert json.loads(empty.stdout) == []


def test_kling_bot_payments_list_refuses_where_no_database_is(tmp_path):
    done = kling("payments", "list", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and "no database at" in done.stderr
    assert list(tmp_path.iterdir()) == []
    helped = kling("payments", "list", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--user" in helped.stdout and "--days" in helped.stdout
    assert "/refund" in helped.stdout


async def test_kling_bot_credits_show_tells_purchased_credits(make_store, tmp_path, simulator, database):
    store = await make_store()
    config = ["--config", str(process_config(tmp_path, simulator.base_url, database))]  # 20 credits a day
    assert kling("credits", "grant", "telegram:1002", "5", *config, cwd=tmp_path).returncode == 0
    await raw_sql(store, "update users set purchased = 100 where key = ?", ["telegram:1002"])
    shown = await asyncio.to_thread(kling, "credits", "show", "telegram:1002", *config, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == \
        "telegram:1002 has 125 credits (5 bonus, 100 purchased), with a daily allowance of 20."


async def test_a_platform_refund_of_a_charge_never_credited_counts_as_no_purchase(make_store, make_engine, ops_of):  # noqa: F811
    """Telegram's refund handled before its successful_payment leaves a row of 0 credits (so
    the late payment credits nothing): no purchase was credited, nothing was taken back, so
    /stats and /metrics count neither."""
    from bot.jobs import UserRef
    from bot.payments import Purchase, telegram_key
    store = await make_store()
    engine = await make_engine(start=False)
    buyer = UserRef("telegram", "501", "Buyer")
    early = await engine.refund_payment(telegram_key("early"), by="telegram", user=buyer)
    assert early.outcome == "unknown"
    assert not (await engine.credit_purchase(Purchase(telegram_key("early"), buyer, "Starter", 50, stars=100))).new
    stats = await engine.stats()
    assert stats.today.payments == PaymentCounts()
    assert "Payments today: none." in stats.text()
    samples = await scrape(await ops_of(store))
    assert value(samples, "kling_payments_total", platform="telegram") == 0
    assert value(samples, "kling_payment_refunds_total", platform="telegram") == 0
    # `kling-bot payments list` shows it for what it is (an admin looking for the charge finds it)
    [line] = await engine.payments_list()
    assert line.text().endswith("  telegram  telegram:501  key telegram:early  refunded by telegram before it"
                                " was credited: nothing credited, nothing taken back")
