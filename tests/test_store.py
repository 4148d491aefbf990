"""The store on both backends (SQLite and PostgreSQL): reopened as it was, transactions
atomic, questions expiring, a job's photo kept for its result buttons and then forgotten."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bot.config import QuotaSettings
from bot.credits import Credits
from bot.store import pg_migrations, sqlite
from tests.backends import on_postgres, raw_sql
from tests.conftest import user
from tests.helpers import settled

pytestmark = pytest.mark.both_backends


async def test_reopening_keeps_data_and_runs_each_migration_once(database, make_store):
    store = await make_store()
    async with store.transaction():
        await Credits(store, QuotaSettings()).reserve(user(), 3)
    await store.close()

    again = await make_store()
    assert await again.schema_version() == len(pg_migrations.MIGRATIONS if on_postgres(database)
                                                else sqlite.MIGRATIONS)
    assert (await again.user(user().key))["daily_left"] == 7
    if not on_postgres(database):  # SQLite only: its journal mode (several processes read while one writes)
        assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_failed_transaction_leaves_nothing_behind(make_store):
    store = await make_store()
    quota = Credits(store, QuotaSettings())
    try:
        async with store.transaction():
            await quota.reserve(user(), 3)
            raise RuntimeError("crash between the reservation and the job row")
    except RuntimeError:
        pass
    assert (await quota.balance(user())).total == 10


async def test_unanswered_asks_expire_after_a_day(make_store):
    store = await make_store()
    await store.asks.put("telegram", 1, 10, {"prompt": "old"}, now=1000.0)
    await store.asks.put("telegram", 1, 11, {"prompt": "new"}, now=1000.0 + 25 * 3600)
    assert await store.asks.get("telegram", 1, 10) is None
    assert await store.asks.get("telegram", 1, 11) == {"prompt": "new"}


async def test_photos_are_kept_where_every_process_reads_them_for_the_retention_time(
        engine, courier, simulator, database):
    """SQLite: in files beside the database (a crash's leftover swept at start);
    PostgreSQL: in the job's ``job_media`` row, as bytes."""
    from tests.conftest import effect_request
    from tests.helpers import image_bytes
    photo = image_bytes(800, 600)
    sqlite_files = not on_postgres(database)
    if sqlite_files:
        engine.store.files.folder.joinpath("job-999-image.jpg").write_bytes(b"left by a crash")
    await engine.stop()  # accept while stopped: the job waits, its photo stored
    await engine.start()
    answer = await engine.accept(effect_request(image=photo))
    [media] = await raw_sql(engine.store, "select data, path from job_media")
    if sqlite_files:
        assert media["data"] is None and Path(media["path"]).read_bytes() == photo
        assert not engine.store.files.folder.joinpath("job-999-image.jpg").exists()  # swept at start
    else:
        assert bytes(media["data"]) == photo and media["path"] is None
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    if sqlite_files:
        assert [p.name for p in engine.store.files.folder.iterdir()] == ["job-1-image.jpg"]  # for its buttons
    await engine.stop()
    await engine.start()  # a restart's sweep keeps it too
    assert await engine.media_kept(await engine.store.job(answer.job.id))
    assert (await engine.store.files.get(answer.job.id))["image"]["data"] == photo
    engine.results.clock = lambda: time.time() + 6 * 86400
    assert await engine.results.expire() == 0  # [storage] keep_days = 7
    engine.results.clock = lambda: time.time() + 8 * 86400
    assert await engine.results.expire() == 1
    if sqlite_files:
        assert list(engine.store.files.folder.iterdir()) == []
    assert await raw_sql(engine.store, "select job_id from job_media") == []
    assert not await engine.media_kept(await engine.store.job(answer.job.id))
    assert (await engine.store.job(answer.job.id)).inputs == {"effect_scene": "hula"}  # what run times are learnt from


def test_twelve_processes_opening_a_new_database_at_once_all_open_it(tmp_path):
    """Twelve `generate` runs started together once failed with "database is locked": two
    connections switching a fresh file to WAL deadlock, and SQLite refuses one at once."""
    failures: list[BaseException] = []

    def open_one(path: Path, start: threading.Barrier) -> None:
        start.wait()
        try:
            sqlite.SqliteStore(path, busy_timeout=10).db.close()
        except BaseException as err:  # collected, asserted below
            failures.append(err)

    for attempt in range(300):  # unfixed, the race was lost about once in a hundred rounds
        path, start = tmp_path / f"bot{attempt}.sqlite", threading.Barrier(12)
        openers = [threading.Thread(target=open_one, args=(path, start)) for _ in range(12)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert failures == []
