"""``kling-bot db copy``: a bot's database moved between backends (SQLite <-> PostgreSQL,
SQLite -> SQLite) keeps every row and every media byte, is checked by its counts, refuses
a non-empty target without --force and a source a running bot still holds, says its
problems in one plain line (no traceback, no password), and a bot stopped on SQLite is
finished by one started on the copy."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from bot.jobs import JobState
from bot.store import open_store, pg_transfer, sqlite_transfer
from bot.store.copy import CopyRefused, copy_between
from bot.store.interface import COPIED_TABLES, JSON_COLUMNS
from tests.conftest import effect_request, user
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_700_000_000.0
USERS = [f"test:{n}" for n in range(1, 5)]
ASKS = [("telegram", 42, 7), ("discord", "g1-c2", "m3")]
MARK = ("discord", 9, 10)  # a one-use mark (a menu already used)
LISTING = [{"model_id": "kwaivgi/kling-v3.0-pro/image-to-video", "name": "Kling V3 ✨", "base_price": 0.7,
            "api_schema": {"api_schemas": [{"request_schema": {"properties": {"sound": {"type": "boolean"}}}}]}}]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    """Batches of 3 rows and about 100 kB of media, so a few rows and files already span
    several batches (a real copy uses 500 rows and 8 MiB)."""
    for module in (sqlite_transfer, pg_transfer):
        monkeypatch.setattr(module, "EXPORT_ROWS", 3)
        monkeypatch.setattr(module, "EXPORT_BYTES", 100_000)


def job_fields(n: int, **changes) -> dict:
    row = {"user_key": USERS[n % len(USERS)], "platform": "test",
           "reply_to": {"chat": 1000 + n, "thread": {"id": "t", "n": [1, 2.5, None]}},
           "model_id": "kwaivgi/kling-v2.1-i2v-standard", "kind": "animate",
           "inputs": {"prompt": f"a cat, dancing {n}", "duration": "5", "ratio": 1.5},
           "label": "Kling 2.1 · 5 s", "cost": 3, "paid_daily": 2, "paid_bonus": 1, "period": "2024-01-01",
           "state": JobState.DONE.value, "settlement": "committed", "created_at": NOW + n, "updated_at": NOW + n,
           "owner": f"front-{n % 2}", "lease_until": 0.0}
    return {**row, **changes}


async def populate(store) -> dict[int, dict[str, bytes]]:
    """Users, jobs in every situation (every column set somewhere), their ledger, media
    (files, and one kept in its row as old databases have it) and questions; returns
    the media bytes by job and role."""
    for n, key in enumerate(USERS):
        await store.add_user({"key": key, "platform": "test", "name": f"Ann ✨ {n}", "period": "2024-01-01",
                              "daily_left": 10 - n, "bonus": n, "created_at": NOW,
                              "allowance": 30 if n == 2 else None})  # a role's or a chat's (#17)
    jobs = [
        job_fields(1, prediction_id="p-1", result_url="https://ws/p-1", output_url="https://cdn/p-1.mp4", nsfw=1,
                   video_path="videos/1.mp4", inference_ms=1234, submitted_at=NOW + 2, finished_at=NOW + 9,
                   submit_attempts=2, resubmits=1, submit_started_at=NOW + 1.5, submit_ended_at=NOW + 1.75,
                   # as JSON text: both backends take it so (record_result is the usual writer)
                   webhook_result=json.dumps({"id": "p-1", "status": "completed", "outputs": ["https://cdn/x"]}),
                   completed_at=NOW + 8, not_before=NOW + 0.5, quote_usd=Decimal("0.350")),
        job_fields(2, state=JobState.FAILED.value, settlement="refunded", error="WaveSpeed refused it",
                   finished_at=NOW + 5),
        job_fields(3, state=JobState.QUEUED.value, settlement="reserved", owner="front-2", lease_until=NOW - 100,
                   not_before=NOW + 60),
        job_fields(4, state=JobState.PROCESSING.value, settlement="reserved", prediction_id="p-4",
                   submitted_at=NOW + 4, lease_until=NOW + 3),
        *[job_fields(n) for n in range(5, 12)],
    ]
    ids = [await store.insert_job(row) for row in jobs]
    for job_id in ids:
        await store.add_ledger(at=NOW + job_id, user_key=USERS[job_id % 4], job_id=job_id, entry="reserve",
                               daily_delta=-2, bonus_delta=-1, note="")
    await store.add_ledger(at=NOW, user_key=USERS[0], job_id=None, entry="grant", daily_delta=0, bonus_delta=5,
                           note="by admin")
    media = {ids[0]: {"image": os.urandom(150_000), "audio": os.urandom(70_000)},
             ids[2]: {"image": image_bytes()}, ids[3]: {"image": os.urandom(250_000)}}
    for job_id, files in media.items():
        for role, data in files.items():
            await store.files.put(job_id, role, "image/jpeg" if role == "image" else "audio/wav",
                                  f"upload-{job_id}.{'jpg' if role == 'image' else 'wav'}", data)
    for platform, chat, message_id in ASKS:
        await store.asks.put(platform, chat, message_id, {"ask": "voice", "job": ids[0], "who": [1, "x"]}, NOW)
    assert await store.asks.claim(*MARK, NOW)
    await store.save_model_listing(LISTING, NOW - 1)
    # The operator's controls (#17): a ban and a pause, each as an admin left it.
    await store.ban(USERS[1], at=NOW, by="telegram:1", reason="spam ✨")
    await store.set_bot_state("pause", {"reason": "db upgrade ✨", "by": "cli", "at": NOW}, NOW)
    return media


def add_blob_media(db_path: Path, job_id: int, data: bytes) -> None:
    """A media row holding its bytes, as SQLite databases from before media files do."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("insert into job_media (job_id, role, mime, filename, data) values (?, 'image',"
                     " 'image/png', 'old.png', ?)", [job_id, data])


async def snapshot(store) -> dict:
    """What the store interface says about every row the copy moves."""
    contents = await store.contents()
    job_ids = range(1, contents["jobs"] + 1)
    rows = []
    for job_id in job_ids:
        row = await store.job_row(job_id)
        for name in JSON_COLUMNS["jobs"]:  # SQLite gives JSON text, PostgreSQL its value
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        rows.append(row)
    media = {}
    for job_id in job_ids:
        kept = await store.files.get(job_id)
        if kept:
            media[job_id] = {role: (m["mime"], m["filename"], m["data"]) for role, m in kept.items()}
    return {"contents": contents, "users": [await store.user(key) for key in USERS], "job rows": rows,
            "jobs": [await store.job(job_id) for job_id in job_ids], "media": media,
            "asks": [await store.asks.get(*key) for key in ASKS], "listing": await store.model_listing(),
            "bans": await store.bans(), "pause": await store.bot_state("pause")}


def sqlite_table(db_path: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(f"select * from {table} order by 1").fetchall()


async def populated_sqlite(path: Path) -> tuple[dict, dict]:
    store = await open_store(str(path))
    try:
        media = await populate(store)
        add_blob_media(path, 2, b"\x89PNG old bytes \x00\x01" * 1000)
        media[2] = {"image": b"\x89PNG old bytes \x00\x01" * 1000}
        return media, await snapshot(store)
    finally:
        await store.close()


async def test_sqlite_to_postgresql_and_back_keeps_every_row_and_every_media_byte(tmp_path, pg_url):
    first, back = tmp_path / "bot.db", tmp_path / "back" / "bot.db"
    media, before = await populated_sqlite(first)
    assert before["contents"]["job_media"] == 5 and before["contents"]["jobs"] == 11
    assert before["contents"]["bans"] == 1 and before["contents"]["bot_state"] == 1
    assert before["bans"] == [{"user_key": USERS[1], "at": NOW, "by": "telegram:1", "reason": "spam ✨"}]
    assert before["pause"] == {"reason": "db upgrade ✨", "by": "cli", "at": NOW}
    assert before["contents"]["media_bytes"] == sum(len(d) for files in media.values() for d in files.values())

    seen = []
    counts = await copy_between(str(first), pg_url, force=False, now=time.time(), progress=seen.append)
    assert counts == before["contents"]
    assert [p.table for p in seen if p.table_done] == ["users", "jobs", "ledger", "job_media", "pending_asks",
                                                       "model_listing", "bans", "bot_state", "alerts_sent",
                                                       "payments"]
    media_steps = [p.done for p in seen if p.table == "job_media" and not p.table_done]
    batches = [(now["job_media"] - then["job_media"], now["media_bytes"] - then["media_bytes"])
               for then, now in zip([seen[0].total | {"job_media": 0, "media_bytes": 0}, *media_steps],
                                    media_steps, strict=False)]
    assert len(batches) >= 3 and all(rows == 1 or size <= 100_000 for rows, size in batches)  # never all at once
    assert seen[-1].fraction == 1.0

    pg = await open_store(pg_url)
    try:
        in_postgres = await snapshot(pg)
        assert await pg.asks.claim(*MARK, NOW + 1) is False  # the one-use mark came along
        # the bytes are in the rows themselves, for every machine: no path to a local file
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("select count(*) from job_media where path is not null") == 0
            assert await conn.fetchval("select sum(octet_length(data)) from job_media") == counts["media_bytes"]
        finally:
            await conn.close()
    finally:
        await pg.close()
    assert in_postgres == before
    assert in_postgres["media"][1]["image"][2] == media[1]["image"]

    assert await copy_between(pg_url, str(back), force=False, now=time.time()) == counts
    sqlite_again = await open_store(str(back))
    try:
        after = await snapshot(sqlite_again)
        assert await sqlite_again.asks.claim(*MARK, NOW + 1) is False
    finally:
        await sqlite_again.close()
    assert after == before
    for table in ("users", "ledger", "pending_asks", "bans"):  # every column, as SQLite itself has it
        assert sqlite_table(back, table) == sqlite_table(first, table)
    assert [row[:-2] for row in sqlite_table(back, "job_media")] == \
        [row[:-2] for row in sqlite_table(first, "job_media")]  # job, role, mime, filename (data, path: own)
    assert all(Path(path).parent == back.parent / "bot.db-media" for *_, path in sqlite_table(back, "job_media")
               if path)


async def test_sqlite_to_sqlite_keeps_everything(tmp_path):
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    _, before = await populated_sqlite(first)
    assert await copy_between(str(first), str(second), force=False, now=time.time()) == before["contents"]
    store = await open_store(str(second))
    try:
        assert await snapshot(store) == before
    finally:
        await store.close()
    assert sqlite_table(second, "jobs") == sqlite_table(first, "jobs")  # every column


async def test_new_rows_after_a_copy_into_postgresql_take_fresh_ids(tmp_path, pg_url):
    """Ids are copied as they are; the identity sequences are moved past them."""
    source = tmp_path / "bot.db"
    await populated_sqlite(source)
    await copy_between(str(source), pg_url, force=False, now=time.time())
    pg = await open_store(pg_url)
    try:
        new_id = await pg.insert_job(job_fields(20))
        await pg.add_ledger(at=NOW, user_key=USERS[0], job_id=new_id, entry="reserve", daily_delta=-1,
                            bonus_delta=0, note="")
        assert new_id == 12
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("select max(id) from ledger") == 13  # 12 copied, then this one
        finally:
            await conn.close()
    finally:
        await pg.close()


async def test_every_table_a_backend_keeps_is_copied(tmp_path, pg_url):
    """A table added to the schema must be added to ``COPIED_TABLES`` (or named here as
    one a copy leaves behind), else a move would silently lose it."""
    not_copied = {"kling_schema"}  # PostgreSQL's schema version: each database has its own
    store = await open_store(str(tmp_path / "bot.db"))
    await store.close()
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        in_sqlite = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
    conn = await asyncpg.connect(pg_url)
    try:
        in_postgres = {row["tablename"] for row in await conn.fetch(
            "select tablename from pg_tables where schemaname = 'public'")}
    finally:
        await conn.close()
    assert in_sqlite - not_copied == set(COPIED_TABLES) == in_postgres - not_copied


# --- the command line ---------------------------------------------------------------


def kling_bot(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "KLING_DATABASE_URL": ""})


def one_plain_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kling-bot: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


async def test_the_command_copies_and_says_the_checked_counts(tmp_path, pg_url):
    source = tmp_path / "bot.db"
    await populated_sqlite(source)
    done = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.strip().splitlines()
    # a line per table
    assert lines[:10] == ["copied 4 users", "copied 11 jobs", "copied 12 ledger entries", "copied 5 media files",
                         "copied 3 pending questions and marks", "copied 1 model listing", "copied 1 ban",
                         "copied 1 bot-wide setting (a pause)", "copied 0 admin alerts sent",
                         "copied 0 payments"]
    assert lines[10].startswith("Copied 4 users, 11 jobs, 12 ledger entries, 5 media files, "
                               "3 pending questions and marks, 1 model listing, 1 ban, 1 bot-wide setting (a pause),"
                               " 0 admin alerts sent, 0 payments (0.5 MB of media) from ")
    assert lines[10].endswith("Counts checked: the target holds exactly what the source held.")


async def test_a_non_empty_target_is_refused_without_force_and_replaced_with_it(tmp_path):
    source, target = tmp_path / "bot.db", tmp_path / "target.db"
    _, before = await populated_sqlite(source)
    other = await open_store(str(target))
    await other.add_user({"key": "test:stranger", "platform": "test", "name": "S", "period": "2024-01-01",
                          "daily_left": 1, "bonus": 0, "created_at": NOW})
    job_id = await other.insert_job(job_fields(1, user_key="test:stranger"))
    await other.files.put(job_id, "image", "image/jpeg", "x.jpg", b"stranger's photo")
    old_file = Path((await other.files.get(job_id))["image"]["path"])
    await other.close()

    refused = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", str(target))
    assert refused.returncode == 2
    line = one_plain_line(refused)
    assert f"{target} already holds 1 user, 1 job, 0 ledger entries, 1 media file" in line
    assert "add --force" in line
    assert sqlite_table(target, "users")[0][0] == "test:stranger"  # untouched

    forced = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", str(target), "--force")
    assert forced.returncode == 0, forced.stderr
    store = await open_store(str(target))
    try:
        assert await store.user("test:stranger") is None
        assert await snapshot(store) == before
    finally:
        await store.close()
    assert not old_file.exists() or old_file.read_bytes() != b"stranger's photo"


async def test_a_source_a_running_bot_holds_is_refused_even_with_force(tmp_path):
    """A job whose lease is still running: its bot would go on writing after the copy."""
    source, target = tmp_path / "bot.db", tmp_path / "copy.db"
    store = await open_store(str(source))
    await populate(store)
    await store.update_job(4, lease_until=time.time() + 300)
    await store.close()
    for extra in ([], ["--force"]):
        done = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", str(target), *extra)
        assert done.returncode == 2
        line = one_plain_line(done)
        assert "1 job is leased by a running bot until" in line and "Stop that bot first" in line
        assert "--force does not override this" in line
    assert not target.exists() or sqlite_table(target, "jobs") == []
    with pytest.raises(CopyRefused):
        await copy_between(str(source), str(target), force=True, now=time.time())
    assert await copy_between(str(source), str(target), force=True, now=time.time() + 301)  # its lease ran out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_missing_or_broken_sqlite_file_is_one_plain_line(tmp_path):
    source = tmp_path / "bot.db"
    await populated_sqlite(source)
    missing = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(tmp_path / "typo.db"),
                                      "--to", str(tmp_path / "x.db"))
    assert missing.returncode == 2
    assert "no SQLite database at" in one_plain_line(missing)
    assert not (tmp_path / "typo.db").exists()  # a typo does not become an empty database
    (tmp_path / "notes.txt").write_text("not a database, just words " * 100)
    broken = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(tmp_path / "notes.txt"),
                                     "--to", str(tmp_path / "x.db"))
    assert broken.returncode == 2 and "cannot open" in one_plain_line(broken)
    into_a_folder = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", str(tmp_path))
    assert into_a_folder.returncode == 2 and "cannot open" in one_plain_line(into_a_folder)
    same = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", str(source))
    assert same.returncode == 2 and "name the same database" in one_plain_line(same)


async def test_postgresql_start_up_problems_are_one_plain_line_without_the_password(tmp_path, pg_server):
    source = tmp_path / "bot.db"
    await populated_sqlite(source)
    secret = "s3cr3t-PASSWORD-9f"

    unreachable = f"postgresql://kling:{secret}@127.0.0.1:{_closed_port()}/kling"
    no_such_db = pg_server.url("no_such_database").replace("postgres@", f"postgres:{secret}@")
    query_password = pg_server.url("no_such_database") + f"?password={secret}"
    for url in (unreachable, no_such_db, query_password):
        for args in (("--from", str(source), "--to", url), ("--from", url, "--to", str(tmp_path / "y.db"))):
            done = await asyncio.to_thread(kling_bot, "db", "copy", *args)
            assert done.returncode == 2
            line = one_plain_line(done)
            assert "cannot open postgresql://" in line and secret not in done.stderr + done.stdout
            assert "***" in line


async def test_a_missing_media_file_is_named_and_nothing_is_written(tmp_path, pg_url):
    source = tmp_path / "bot.db"
    await populated_sqlite(source)
    with sqlite3.connect(source) as conn:
        path = conn.execute("select path from job_media where job_id = 3").fetchone()[0]
    Path(path).unlink()
    done = await asyncio.to_thread(kling_bot, "db", "copy", "--from", str(source), "--to", pg_url)
    assert done.returncode == 2
    assert f"job 3's image file {path} cannot be read" in one_plain_line(done)
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("select count(*) from users") == 0  # one transaction: all or nothing
    finally:
        await conn.close()


def test_a_terminal_sees_a_progress_bar(tmp_path):
    source, target = tmp_path / "bot.db", tmp_path / "copy.db"
    asyncio.run(populated_sqlite(source))
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "adapters", "db", "copy", "--from", str(source),
                                "--to", str(target)], cwd=ROOT, stdout=subprocess.PIPE, stderr=terminal,
                               text=True)
    os.close(terminal)
    drawn = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    stdout, _ = process.communicate(timeout=30)
    os.close(controller)
    assert process.returncode == 0
    assert b"\r[" in drawn and b"100%" in drawn and b"pending_asks 3/3" in drawn
    assert stdout.strip().splitlines()[-1].startswith("Copied 4 users")  # no per-table lines beside a bar


# --- moving a running bot -----------------------------------------------------------


async def test_jobs_a_stopped_sqlite_bot_left_are_finished_by_a_bot_on_the_postgresql_copy(
        settings, simulator, make_engine, courier, pg_url):
    """The README's steps: stop the bot (a job at WaveSpeed and one queued stay in its
    database), copy, point [storage] url at the copy, start: each job is delivered once,
    from one WaveSpeed task, and the credits equal the ledger."""
    simulator.job_seconds = 1.5
    old = await make_engine(max_concurrent=1)
    first = await old.accept(effect_request(who=user(1)))
    second = await old.accept(effect_request("squish", who=user(2)))
    async with asyncio.timeout(10):
        while not ((job := await old.store.job(first.job.id)).state == JobState.PROCESSING and job.prediction_id):
            await asyncio.sleep(0.02)
    await old.close()
    stopped = await open_store(settings.storage.path)
    left = [await stopped.job_row(first.job.id), await stopped.job_row(second.job.id)]
    await stopped.close()
    assert [row["state"] for row in left] == ["processing", "queued"] and left[0]["prediction_id"]
    # A clean stop released them: the started one's lease lapsed, the queued one is no process's.
    assert left[0]["owner"] and left[0]["lease_until"] < time.time()
    assert left[1]["owner"] is None and left[1]["lease_until"] is None
    assert len(simulator.submissions) == 1 and not courier.delivered

    await copy_between(settings.storage.path, pg_url, force=False, now=time.time())
    moved = replace(settings, storage=replace(settings.storage, url=pg_url,
                                              path=str(Path(settings.storage.path).with_name("unused.sqlite"))))
    new = await make_engine(moved, max_concurrent=1)
    assert (await courier.outcome(first.job.id))[0] == "delivered"
    assert (await courier.outcome(second.job.id))[0] == "delivered"
    await asyncio.sleep(0.3)  # nothing more arrives
    assert courier.deliver_calls == 2 and sorted(courier.delivered) == [first.job.id, second.job.id]
    assert len(simulator.submissions) == len(simulator.tasks) == 2  # one paid task each
    async with asyncio.timeout(5):
        while {(await new.store.job_row(j))["settlement"] for j in (first.job.id, second.job.id)} != {"committed"}:
            await asyncio.sleep(0.02)
    conn = await asyncpg.connect(pg_url)
    try:
        users = await conn.fetch("select key, daily_left + bonus as have from users order by key")
        moved_credits = dict(await conn.fetch("select user_key, sum(daily_delta + bonus_delta) from ledger"
                                              " group by user_key"))
    finally:
        await conn.close()
    daily = settings.quota.daily_credits
    assert [(row["key"], row["have"]) for row in users] == [(user(1).key, daily - first.job.cost),
                                                            (user(2).key, daily - second.job.cost)]
    assert all(row["have"] == daily + moved_credits.get(row["key"], 0) for row in users)
    assert not Path(moved.storage.path).exists()  # the new bot ran on PostgreSQL alone


async def test_payments_and_purchased_credits_survive_a_copy_to_postgresql_and_back(tmp_path, pg_url):
    """#18: the payments table (a credited charge, a refunded one, one refunded before it was
    credited) and the purchased bucket of users, jobs and ledger rows come along, every
    column as SQLite itself had it, and the copy's money still adds up."""
    from bot.config import Pack, PaymentsSettings, QuotaSettings, Settings
    from bot.credits import Credits
    from bot.engine.payments import Payments
    from bot.jobs import UserRef
    from bot.payments import Purchase, telegram_key

    class Shop(Payments):
        def __init__(self, store):
            from bot.engine.couriers import Couriers
            self.settings = Settings(quota=QuotaSettings(daily_credits=10, max_jobs_per_user=10),
                                     payments=PaymentsSettings(packs=[Pack("Starter ✨", 50, stars=100)]))
            self.store, self.clock = store, (lambda: NOW)
            self.credits = Credits(store, self.settings.quota, self.clock)
            self.couriers = Couriers()

    first, back = tmp_path / "bot.db", tmp_path / "back" / "bot.db"
    buyer = UserRef("telegram", "501", "Buyer")
    store = await open_store(str(first))
    try:
        shop = Shop(store)
        for n in (1, 2):
            await shop.credit_purchase(Purchase(telegram_key(f"charge-{n}"), buyer, "Starter ✨", 50, stars=100,
                                                details={"payload": f"kling1|50|100|Starter ✨ {n}", "n": [n]}))
        written, _ = await shop.credits.reserve_job(buyer, 70, {
            "platform": "telegram", "reply_to": {}, "model_id": "m", "kind": "effect", "inputs": {},
            "label": "a job", "state": "queued", "created_at": NOW, "updated_at": NOW})
        assert written.job.id
        await shop.refund_payment(telegram_key("charge-1"), by="42")
        await shop.refund_payment(telegram_key("early"), by="telegram", user=buyer)
        assert (await store.user(buyer.key))["purchased"] == 0
    finally:
        await store.close()
    await copy_between(str(first), pg_url, force=False, now=time.time())
    pg = await open_store(pg_url)
    try:
        assert (await pg.user(buyer.key))["purchased"] == 0
        assert (await pg.payment(telegram_key("charge-2")))["details"] == {
            "payload": "kling1|50|100|Starter ✨ 2", "n": [2]}
        assert (await pg.payment(telegram_key("charge-1")))["refund_short"] == 10
        assert (await pg.job_row(written.job.id))["paid_purchased"] == 60
    finally:
        await pg.close()
    await copy_between(pg_url, str(back), force=False, now=time.time())
    for table in ("users", "ledger", "jobs"):  # every column, as SQLite itself has it
        assert sqlite_table(back, table) == sqlite_table(first, table), table

    def payments(path: Path) -> list[tuple]:  # details as its value (jsonb keeps its keys in its own order)
        return [(*row[:7], json.loads(row[7]), *row[8:]) for row in sqlite_table(path, "payments")]
    assert payments(back) == payments(first) and len(payments(first)) == 3
