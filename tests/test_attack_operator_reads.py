"""#17 review: the operator's reads attacked (/metrics, /readyz, /stats, their store reads).

Each test is a defect found by attacking the merged http, doctor and stats parts; it
reads what an operator sees: the scrape as Prometheus parses it, the figures /stats and
``kling-bot stats`` show.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import aiohttp
import discord
import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.test_discord as dc
from bot import messages
from bot.jobs import JobState
from bot.ops_http import OpsListener
from tests.fake_discord import APP_ID

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
fake_discord, dc_settings, run_discord = dc.fake_discord, dc.dc_settings, dc.run_discord


async def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        body = await resp.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


async def _readyz(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as resp:
        return resp.status


@pytest.fixture
async def listen():
    started: list[OpsListener] = []

    async def start(store) -> int:
        listener = OpsListener("127.0.0.1:0", store)
        started.append(listener)
        return await listener.start()

    yield start
    for listener in started:
        await listener.stop()


async def _job(store, user_key: str, state: JobState, settlement: str, quote: str | None,
               charged: str | None = None, place: str = "") -> int:
    at = time.time() - 1
    job_id = await store.insert_job({
        "user_key": user_key, "platform": "test", "reply_to": {}, "model_id": "kwaivgi/kling-effects",
        "kind": "effect", "inputs": {"effect_scene": "hula"}, "label": "effect hula", "cost": 1,
        "paid_daily": 1, "paid_bonus": 0, "period": "2026-01-01", "state": state.value,
        "settlement": settlement, "created_at": at, "updated_at": at, "place_key": place})
    await store.update_job(job_id, quote_usd=None if quote is None else Decimal(quote),
                           charged_usd=None if charged is None else Decimal(charged))
    return job_id


async def test_metrics_say_the_database_is_down_when_its_file_is_gone(make_engine, listen, database):
    """/readyz says "not answering" once the SQLite file is deleted (what this connection
    writes then lands in a file no one opens again); /metrics must not report it up."""
    if not database.endswith(".sqlite"):
        pytest.skip("a file deleted under the bot is SQLite's case (PostgreSQL's is in test_ops_http)")
    engine = await make_engine()
    port = await listen(engine.store)
    assert (await _scrape(port))[("kling_database_up", frozenset())] == 1
    Path(database).unlink()
    assert await _readyz(port) == 503
    samples = await _scrape(port)
    assert samples[("kling_database_up", frozenset())] == 0
    assert not any(name.startswith("kling_jobs") for name, _ in samples)  # absent, not stale


async def test_metrics_spend_is_the_spend_stats_show(make_engine, make_store, listen):
    """One spend rule: /metrics' kling_spend_usd and /stats' spend agree to the last digit,
    whatever the quotes' precision (jobs with no quote and no place count too)."""
    engine = await make_engine()
    writer = await make_store()  # another process's store on the same database
    for key in ("test:1", "test:2", "test:3"):
        await writer.add_user({"key": key, "platform": "test", "name": key, "period": "2026-01-01",
                               "daily_left": 10, "bonus": 0, "created_at": time.time()})
    await _job(writer, "test:1", JobState.DONE, "committed", "0.0000004", place="discord:guild:1")
    await _job(writer, "test:1", JobState.DONE, "committed", "0.1234567", "0.1234567")
    await _job(writer, "test:2", JobState.FAILED, "refunded", "0.5000005", "0.5000005")
    await _job(writer, "test:2", JobState.FAILED, "refunded", "0.28")  # refunded, no charge: nothing
    # no quote, no place: 1 credit's worth (done: the engine running here leaves it as it is)
    await _job(writer, "test:3", JobState.DONE, "committed", None)
    figures = await engine.stats(1)
    assert figures.today.spend_usd == Decimal("0.6234576") + Decimal("0.25")  # as the caps count it
    port = await listen(engine.store)
    samples = await _scrape(port)
    spend = samples[("kling_spend_usd", frozenset({("model", "kwaivgi/kling-effects")}))]
    assert spend == float(figures.today.spend_usd)


WRITER = """
import asyncio, sys, time
from dataclasses import replace
from decimal import Decimal
from bot.store import open_store

async def main():
    store = await open_store(sys.argv[1])
    await store.add_user({"key": "test:w", "platform": "test", "name": "w", "period": "2026-01-01",
                          "daily_left": 10, "bonus": 0, "created_at": time.time()})
    print("writing", flush=True)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        at = time.time()
        job_id = await store.insert_job({
            "user_key": "test:w", "platform": "test", "reply_to": {}, "model_id": "kwaivgi/kling-effects",
            "kind": "effect", "inputs": {}, "label": "effect hula", "cost": 1, "paid_daily": 1,
            "paid_bonus": 0, "period": "2026-01-01", "state": "done", "settlement": "committed",
            "created_at": at, "updated_at": at, "place_key": "discord:guild:9"})
        await store.update_job(job_id, quote_usd=Decimal("0.28"), charged_usd=Decimal("0.28"))
    await store.close()

asyncio.run(main())
"""


async def test_stats_figures_agree_with_each_other_while_another_process_writes(make_engine, database):
    """Today's jobs are among the week's, and the week's are the sum of its days, even
    while a second process adds jobs between the reads /stats makes."""
    engine = await make_engine()
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, database, "6", env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE)
    assert writer.stdout is not None
    assert (await asyncio.wait_for(writer.stdout.readline(), 30)).strip() == b"writing"
    disagreements = []
    try:
        for _ in range(60):
            figures = await engine.stats(7)
            week = sum(day.total for day in figures.daily[-7:])
            if not (figures.today.total == figures.daily[-1].total and figures.window.total == week
                    and figures.today.spend_usd == figures.daily[-1].spend_usd
                    and figures.window.spend_usd == sum((d.spend_usd for d in figures.daily[-7:]), Decimal(0))):
                disagreements.append((figures.today.total, figures.daily[-1].total, figures.window.total, week))
            await asyncio.sleep(0.02)
    finally:
        await writer.wait()
    assert disagreements == []


# --- who may read the figures ------------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "balance"])
async def test_discord_figures_in_a_dm_ignore_a_forged_member_and_go_to_configured_admins_only(
        command, run_discord, dc_settings, fake_discord, simulator):
    """A DM has no server to manage: a member with Manage Server slipped into a DM's
    payload grants nothing; a configured admin still gets the figures there."""
    admin_settings = replace(dc_settings, discord=replace(dc_settings.discord, admins=[dc.ALICE]))
    _, adapter = await run_discord(admin_settings)
    forged = fake_discord.slash(command, [], user=dc.BOB, dm=4242)
    forged["member"] = {"user": forged["user"], "roles": [],
                        "permissions": str(discord.Permissions(manage_guild=True).value)}
    dc.feed(adapter, forged)
    [answer] = await dc.until(lambda: dc.callbacks(fake_discord, forged["token"]))
    assert answer["data"]["content"] == messages.ADMINS_ONLY
    asked = fake_discord.slash(command, [], user=dc.ALICE, dm=4243)
    dc.feed(adapter, asked)
    [followup] = await dc.until(lambda: fake_discord.to(f"/webhooks/{APP_ID}/{asked['token']}", "POST"))
    assert followup["json"]["flags"] & 64
    assert not fake_discord.to(f"/webhooks/{APP_ID}/{forged['token']}", "POST")


# --- doctor -------------------------------------------------------------------------------

async def test_doctor_calls_a_busy_sqlite_database_busy_not_unwritable(database, simulator, tmp_path):
    """Another process holding the write lock (a long write, an operator's sqlite3 shell)
    is not a permission problem: doctor (a container's health check) must not fail the
    bot for it, nor tell the operator to change the file's owner."""
    import sqlite3

    from bot.store.sqlite import SqliteStore
    from tests.test_doctor import doctor, write_config

    if not database.endswith(".sqlite"):
        pytest.skip("SQLite's write lock")
    store = SqliteStore(database)
    await store.close()
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("begin immediate")
    try:
        config = write_config(tmp_path, wavespeed=simulator, database=database)
        rc, out, err = await doctor(config, "--quick")
    finally:
        holder.execute("rollback")
        holder.close()
    [line] = [line for line in out.splitlines() if "database:" in line]
    assert "cannot be written" not in line and "write access" not in line, line
    assert line.startswith("ok") and "another process holds its write lock" in line, line
    assert rc == 0, out + err


def test_doctor_database_reasons_are_sentences_of_messages():
    """The reasons doctor's database line gives (bot/store/health.py) are words an operator
    reads: built in bot/messages.py like every other sentence (test_architecture's rule,
    which skips the store for its SQL)."""
    import ast
    import re

    sentence = re.compile(r"[A-Za-z]+[,;:'’]?\s+[A-Za-z]+[,;:'’]?\s+[A-Za-z]+")
    tree = ast.parse((ROOT / "bot" / "store" / "health.py").read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    sql = re.compile(r"^\s*(select|show|begin|rollback|pragma)\b|\bfrom\b.*\bwhere\b|\bfrom sqlite_master\b", re.I)
    found = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
             and sentence.search(node.value) and not sql.search(node.value)]
    assert found == []


async def test_a_scrape_of_a_locked_database_ends_in_seconds_and_the_next_one_counts(make_engine, listen,
                                                                                    database):
    """A table locked by another session (a migration, an operator's LOCK TABLE): the scrape
    answers within the database's few seconds with the database down, probes answer
    meanwhile, and once the lock goes the next scrape has the figures again."""
    import asyncpg

    if database.endswith(".sqlite"):
        pytest.skip("a PostgreSQL table lock (SQLite's WAL readers never wait for a writer)")
    engine = await make_engine()
    port = await listen(engine.store)
    locker = await asyncpg.connect(database)
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("lock table jobs in access exclusive mode")
        started = time.monotonic()
        scrape, healthz = await asyncio.gather(_scrape(port), _status_after(port, "/healthz", 0.5))
        assert time.monotonic() - started < 8
        assert scrape[("kling_database_up", frozenset())] == 0 and healthz == 200
        await lock.rollback()
    finally:
        await locker.close()
    for _ in range(3):  # the pool's connections are all fit again, not one left mid-query
        assert (await _scrape(port))[("kling_database_up", frozenset())] == 1


async def _status_after(port: int, path: str, delay: float) -> int:
    await asyncio.sleep(delay)
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}",
                                                               timeout=aiohttp.ClientTimeout(total=2)) as resp:
        return resp.status


# --- kling-bot stats ----------------------------------------------------------------------

def test_kling_bot_stats_of_a_database_that_does_not_exist_says_so_and_creates_none(tmp_path):
    """A wrong [storage] path (or a run from another folder) must not answer "0 jobs" from
    a new empty database it just made, leaving that file behind."""
    import subprocess

    missing = tmp_path / "elsewhere" / "bot.sqlite"
    missing.parent.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{missing}"\n')
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY", "_DATABASE_URL"))}
    done = subprocess.run([sys.executable, "-m", "adapters", "stats", "--config", str(config)], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "0 jobs" not in done.stdout
    assert str(missing) in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not missing.exists()


# --- the simulator's upload ticket ----------------------------------------------------------

@pytest.mark.parametrize("body", [[1], "a.png", 4, {"filename": ["a.png"], "size": 4}, {"filename": "a.png"},
                                  {"filename": "a.png", "size": 4, "content_type": 5}])
async def test_a_malformed_upload_ticket_is_a_400_not_a_crash(simulator, body):
    """POST /api/v3/media/uploads with a JSON body of the wrong shape: refused as the API
    refuses bad parameters (400, code 1400), not a 500 from the simulator's own error."""
    from tests.conftest import API_KEY

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http, \
            http.post(f"{simulator.base_url}/api/v3/media/uploads", json=body) as answer:
        assert answer.status == 400
        assert (await answer.json())["code"] == 1400
