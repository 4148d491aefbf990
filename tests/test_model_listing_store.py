"""The store's part of #16: WaveSpeed's model listing kept for every process (the newest
fetch wins, a restart still has it) and each job's USD quote kept exactly, on SQLite and
PostgreSQL, through schema upgrades and ``kling-bot db copy``."""

from __future__ import annotations

import asyncio
import copy
import random
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlite_utils

from bot.config import QuotaSettings
from bot.credits import Credits
from bot.jobs import JobState
from bot.store import open_store
from bot.store.copy import copy_between
from bot.store.sqlite import MIGRATIONS, SqliteStore
from tests.conftest import user

pytestmark = pytest.mark.both_backends

NOW = 1_700_000_123.456789
LISTING = [
    {"model_id": "kwaivgi/kling-v3.0-pro/image-to-video", "name": "Kling V3.0 Pro — 图生视频 ✨🎬",
     "base_price": 0.7, "type": "image-to-video", "sort_order": 3, "formula": None,
     "description": "Ünïcödé, \"quotes\", back\\slash and a newline\nhere",
     "api_schema": {"api_schemas": [{"type": "model_run", "request_schema": {
         "type": "object", "required": ["image", "prompt"],
         "properties": {"duration": {"type": "integer", "minimum": 3, "maximum": 15, "default": 5},
                        "aspect_ratio": {"type": "string", "enum": ["16:9", "9:16", "1:1"]},
                        "sound": {"type": "boolean", "default": False},
                        "cfg_scale": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
                        "multi_prompt": {"type": "array", "items": {"type": "object"}, "x-order": [1, 2.5, None]}},
     }}]}},
    {"model_id": "kwaivgi/kling-effects", "name": "Kling effects", "base_price": 0.25, "api_schema": {}},
]


def older_listing() -> list[dict]:
    listing = copy.deepcopy(LISTING)
    listing[0]["name"] = "an older fetch"
    return listing[:1]


async def test_a_listing_round_trips_with_its_fetch_time(make_store):
    store = await make_store()
    assert await store.model_listing() is None  # never fetched: the catalog uses its seeds
    await store.save_model_listing(LISTING, NOW)
    listing, fetched_at = await store.model_listing()
    assert listing == LISTING and fetched_at == NOW
    assert listing[0]["name"] == "Kling V3.0 Pro — 图生视频 ✨🎬"
    assert listing[0]["api_schema"]["api_schemas"][0]["request_schema"]["properties"]["sound"]["default"] is False


async def test_another_process_sees_the_listing_and_a_restart_keeps_it(make_store, database):
    first, second = await make_store(), await make_store()
    await first.save_model_listing(LISTING, NOW)
    assert await second.model_listing() == (LISTING, NOW)
    await first.close()
    await second.close()
    restarted = await open_store(database)  # a new process, no network: the listing is there
    try:
        assert await restarted.model_listing() == (LISTING, NOW)
    finally:
        await restarted.close()


async def test_an_older_fetch_never_replaces_a_newer_one(make_store):
    first, second = await make_store(), await make_store()
    await first.save_model_listing(LISTING, NOW)
    await second.save_model_listing(older_listing(), NOW - 60)  # a slow process, finishing late
    assert await first.model_listing() == (LISTING, NOW)
    newer = LISTING[1:]
    await second.save_model_listing(newer, NOW + 60)
    assert await first.model_listing() == (newer, NOW + 60)


async def test_processes_refreshing_at_once_keep_the_latest_fetch(make_store):
    stores = [await make_store() for _ in range(3)]
    moments = [NOW + n for n in range(30)]
    random.Random(16).shuffle(moments)
    await asyncio.gather(*[stores[n % 3].save_model_listing([{"model_id": f"m-{moment}"}], moment)
                           for n, moment in enumerate(moments)])
    assert await stores[0].model_listing() == ([{"model_id": f"m-{NOW + 29}"}], NOW + 29)


def job_fields(quote: Decimal | None, **more) -> dict:
    return {"platform": "test", "reply_to": {"chat_id": 7}, "model_id": "kwaivgi/kling-v3.0-pro/image-to-video",
            "kind": "animate", "inputs": {"prompt": "a cat", "duration": 12, "sound": True},
            "label": "v3 · 12 s", "state": JobState.QUEUED.value, "created_at": NOW, "updated_at": NOW,
            "owner": "worker-1", "lease_until": NOW + 600, "quote_usd": quote, **more}


async def test_a_quote_is_kept_exactly_through_accept_commit_and_refund(make_store):
    store = await make_store()
    credits = Credits(store, QuotaSettings(daily_credits=20, max_jobs_per_user=5))
    who = user()
    # The first accept takes the user's lock (insert_reserved_job); the next ones start
    # from the row this process now knows (reserve_if_unchanged).
    first, _ = await credits.reserve_job(who, 2, job_fields(Decimal("0.35")))
    assert credits.known.get(who.key) is not None
    long_quote = Decimal("1.123456789012345678901234567890")
    second, _ = await credits.reserve_job(who, 5, job_fields(long_quote))
    unquoted, _ = await credits.reserve_job(who, 1, job_fields(None))
    for reserved, quote in ((first, Decimal("0.35")), (second, long_quote), (unquoted, None)):
        for job in (reserved.job, await store.job(reserved.job.id)):
            assert job.quote_usd == quote and type(job.quote_usd) is type(quote)
    assert str((await store.job(first.job.id)).quote_usd) == "0.35"  # not 0.34999999999999997779...
    assert str((await store.job(second.job.id)).quote_usd) == str(long_quote)
    assert (await store.job_row(first.job.id))["quote_usd"] == Decimal("0.35")

    assert await credits.commit_delivered(first.job, "worker-1", drop_media=False,
                                          state=JobState.DONE.value, finished_at=NOW + 9)
    async with store.transaction():
        assert await credits.refund(second.job, "refunded for the test")
    done, refunded = await store.job(first.job.id), await store.job(second.job.id)
    assert done.state == JobState.DONE and str(done.quote_usd) == "0.35"
    assert refunded.quote_usd == long_quote and (await store.job_row(second.job.id))["settlement"] == "refunded"

    requoted = await store.update_job(unquoted.job.id, quote_usd=Decimal("0.70"))
    assert str(requoted.quote_usd) == "0.70" and str((await store.job(unquoted.job.id)).quote_usd) == "0.70"


def schema_9_database(path: Path) -> None:
    """A database as the bot left it before #16: migrations 1..9, a user and two jobs."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    for number, migration in enumerate(MIGRATIONS[:9], start=1):
        migration(db)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("insert into users (key, platform, name, period, daily_left, bonus, created_at)"
               " values ('test:1', 'test', 'Ann', '2024-01-01', 8, 0, ?)", [NOW])
    for n in (1, 2):
        db.execute("insert into jobs (user_key, platform, reply_to, model_id, kind, inputs, label, cost,"
                   " paid_daily, paid_bonus, period, state, created_at) values ('test:1', 'test', '{}',"
                   " 'kwaivgi/kling-v2.1-i2v-standard', 'animate', '{\"duration\": \"5\"}', 'v2.1', 1, 1, 0,"
                   " '2024-01-01', ?, ?)", ["done" if n == 1 else "queued", NOW + n])
    db.conn.commit()
    db.close()


async def test_a_schema_9_sqlite_database_upgrades_keeping_its_jobs(tmp_path):
    path = tmp_path / "old.db"
    schema_9_database(path)
    store = SqliteStore(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS) == 12
        old = [await store.job(n) for n in (1, 2)]
        assert [job.state for job in old] == [JobState.DONE, JobState.QUEUED]
        assert [job.quote_usd for job in old] == [None, None]  # unknown, not zero
        # #17's columns: no place, no known charge, no failure kind
        assert [(job.place_key, job.charged_usd, job.failure) for job in old] == [("", None, None)] * 2
        assert await store.model_listing() is None
        await store.save_model_listing(LISTING, NOW)
        credits = Credits(store, QuotaSettings(daily_credits=10, max_jobs_per_user=5))
        reserved, left = await credits.reserve_job(user(), 1, job_fields(Decimal("0.25")))
        assert left == 9 and reserved.job.id == 3 and str(reserved.job.quote_usd) == "0.25"  # a new day: 10, less 1
    finally:
        await store.close()


async def sqlite_with_quotes(path: Path) -> None:
    store = SqliteStore(path)
    try:
        await store.save_model_listing(LISTING, NOW)
        credits = Credits(store, QuotaSettings(daily_credits=20, max_jobs_per_user=5))
        for quote in (Decimal("0.35"), None, Decimal("10.500")):
            await credits.reserve_job(user(), 1, job_fields(quote, owner=None, lease_until=None))
    finally:
        await store.close()


async def quotes_and_listing(location: str) -> tuple[list, tuple | None]:
    store = await open_store(location)
    try:
        return [(await store.job(n)).quote_usd for n in (1, 2, 3)], await store.model_listing()
    finally:
        await store.close()


async def test_a_copy_to_postgresql_and_back_keeps_the_listing_and_the_quotes(tmp_path, pg_url):
    first, back = tmp_path / "bot.db", tmp_path / "back" / "bot.db"
    await sqlite_with_quotes(first)
    counts = await copy_between(str(first), pg_url, force=False, now=time.time())
    assert counts["model_listing"] == 1 and counts["jobs"] == 3
    quotes, listing = await quotes_and_listing(pg_url)
    assert [str(q) if q is not None else q for q in quotes] == ["0.35", None, "10.500"]
    assert all(q is None or type(q) is Decimal for q in quotes)
    assert listing == (LISTING, NOW)

    assert await copy_between(pg_url, str(back), force=False, now=time.time()) == counts
    quotes, listing = await quotes_and_listing(str(back))
    assert [str(q) if q is not None else q for q in quotes] == ["0.35", None, "10.500"]
    assert listing == (LISTING, NOW)
    with sqlite3.connect(back) as conn:  # as SQLite itself keeps them: exact text, NULL for none
        assert conn.execute("select quote_usd from jobs order by id").fetchall() == [("0.35",), (None,), ("10.500",)]


async def test_a_target_holding_only_a_cached_listing_takes_a_copy_without_force(tmp_path):
    """A bot started once on the new database already saved a listing: nothing to lose."""
    source, target = tmp_path / "bot.db", tmp_path / "new.db"
    await sqlite_with_quotes(source)
    fresh = SqliteStore(target)
    await fresh.save_model_listing(older_listing(), NOW + 3600)
    await fresh.close()
    counts = await copy_between(str(source), str(target), force=False, now=time.time())
    assert counts["model_listing"] == 1
    assert await quotes_and_listing(str(target)) == await quotes_and_listing(str(source))
