from __future__ import annotations

import time
from pathlib import Path

from bot.config import QuotaSettings
from bot.credits import Credits
from bot.store.sqlite import MIGRATIONS
from bot.store.sqlite import SqliteStore as Store
from tests.conftest import user
from tests.helpers import settled


async def test_reopening_keeps_data_and_runs_each_migration_once(tmp_path):
    path = tmp_path / "bot.sqlite"
    store = Store(path)
    async with store.transaction():
        await Credits(store, QuotaSettings()).reserve(user(), 3)
    await store.close()

    again = Store(path)
    assert await again.schema_version() == len(MIGRATIONS)
    assert again.db["users"].get(user().key)["daily_left"] == 7
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "bot.sqlite")
    quota = Credits(store, QuotaSettings())
    try:
        async with store.transaction():
            await quota.reserve(user(), 3)
            raise RuntimeError("crash between the reservation and the job row")
    except RuntimeError:
        pass
    assert (await quota.balance(user())).total == 10


async def test_unanswered_asks_expire_after_a_day(tmp_path):
    store = Store(tmp_path / "bot.sqlite")
    await store.asks.put("telegram", 1, 10, {"prompt": "old"}, now=1000.0)
    await store.asks.put("telegram", 1, 11, {"prompt": "new"}, now=1000.0 + 25 * 3600)
    assert await store.asks.get("telegram", 1, 10) is None
    assert await store.asks.get("telegram", 1, 11) == {"prompt": "new"}


async def test_photos_live_in_files_beside_the_database_for_the_retention_time(engine, courier, simulator):
    from tests.conftest import effect_request
    from tests.helpers import image_bytes
    photo = image_bytes(800, 600)
    engine.store.files.folder.joinpath("job-999-image.jpg").write_bytes(b"left by a crash")
    await engine.stop()  # accept while stopped: the job waits, its photo on disk
    await engine.start()
    answer = await engine.accept(effect_request(image=photo))
    [(data, path)] = engine.store.db.execute("select data, path from job_media").fetchall()
    assert data is None and Path(path).read_bytes() == photo
    assert not engine.store.files.folder.joinpath("job-999-image.jpg").exists()  # swept at start
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    assert [p.name for p in engine.store.files.folder.iterdir()] == ["job-1-image.jpg"]  # for its buttons
    await engine.stop()
    await engine.start()  # a restart's sweep keeps it too
    assert await engine.media_kept(await engine.store.job(answer.job.id))
    engine.results.clock = lambda: time.time() + 6 * 86400
    assert await engine.results.expire() == 0  # [storage] keep_days = 7
    engine.results.clock = lambda: time.time() + 8 * 86400
    assert await engine.results.expire() == 1
    assert list(engine.store.files.folder.iterdir()) == []
    assert not await engine.media_kept(await engine.store.job(answer.job.id))
    assert (await engine.store.job(answer.job.id)).inputs == {"effect_scene": "hula"}  # what run times are learnt from
