"""The store interface (``bot.store.interface``) on both backends, SQLite and PostgreSQL:
the same calls give the same answers, and the guarantees the money rules rest on hold
between separate store objects (separate connections and pools, as separate processes
have). PostgreSQL runs on the suite's own throw-away server (tests/postgres.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
import pytest

from bot.jobs import Job, JobState
from bot.store import LeaseLost, Staged, StoreOffline, TaskTaken, is_postgres_url, open_store, pg_migrations, sqlite

NOW = 1_700_000_000.0


@pytest.fixture
async def open_stores():
    """Open stores (each its own connections, like another process); all closed after."""
    opened = []

    async def open_(url: str):
        store = await open_store(url)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(storage_url, open_stores):
    return await open_stores(storage_url)


async def add_user(store, key: str = "test:1", daily_left: int = 10, bonus: int = 0) -> None:
    await store.add_user({"key": key, "platform": "test", "name": "Ann", "period": "2024-01-01",
                          "daily_left": daily_left, "bonus": bonus, "created_at": NOW})


def job_row(user_key: str = "test:1", **changes) -> dict:
    row = {"user_key": user_key, "platform": "test",
           "reply_to": {"chat_id": 123456789012345678, "thread": {"id": "t", "n": [1, 2.5, None]}},
           "model_id": "kwaivgi/kling-v2.1-i2v-standard", "kind": "animate",
           "inputs": {"prompt": "a cat, dancing", "negative_prompt": "blur", "duration": "5", "ratio": 1.5},
           "label": "Kling 2.1 · 5 s", "cost": 3, "paid_daily": 2, "paid_bonus": 1, "period": "2024-01-01",
           "state": JobState.QUEUED.value, "created_at": NOW, "updated_at": NOW,
           "owner": "front-1", "lease_until": NOW + 30}
    return {**row, **changes}


async def new_job(store, user_key: str = "test:1", **changes) -> int:
    job_id: int = await store.insert_job(job_row(user_key, **changes))
    return job_id


def expected_version(url: str) -> int:
    return len(pg_migrations.MIGRATIONS if is_postgres_url(url) else sqlite.MIGRATIONS)


# --- migrations ---------------------------------------------------------------------


async def test_a_new_database_is_migrated_once_and_reopened_as_it_is(empty_storage_url, open_stores):
    first = await open_stores(empty_storage_url)
    assert await first.schema_version() == expected_version(empty_storage_url)
    await add_user(first)
    again = await open_stores(empty_storage_url)
    assert await again.schema_version() == expected_version(empty_storage_url)
    assert (await again.user("test:1"))["name"] == "Ann"  # nothing migrated twice, nothing lost


async def test_processes_starting_at_once_migrate_the_database_once(empty_storage_url, open_stores):
    stores = await asyncio.gather(*(open_stores(empty_storage_url) for _ in range(4)))
    assert [await s.schema_version() for s in stores] == [expected_version(empty_storage_url)] * 4
    await add_user(stores[0])
    assert (await stores[3].user("test:1"))["daily_left"] == 10


# --- users, the ledger, settlements --------------------------------------------------


async def test_users_and_the_ledger_and_a_reservation_settled_once(store):
    assert await store.user("test:1") is None
    await add_user(store, daily_left=10, bonus=2)
    await store.update_user("test:1", daily_left=7, name="Ann B")
    assert await store.user("test:1") == {"key": "test:1", "platform": "test", "name": "Ann B",
                                          "period": "2024-01-01", "daily_left": 7, "bonus": 2, "created_at": NOW,
                                          "version": 1, "allowance": None,  # one write since it was added
                                          "purchased": 0}
    job_id = await new_job(store)
    await store.add_ledger(at=NOW, user_key="test:1", job_id=job_id, entry="reserve", daily_delta=-2,
                           bonus_delta=-1, note="")
    assert await store.settle(job_id, "committed") is True
    assert await store.settle(job_id, "refunded") is False  # settled once: the refund never happens
    assert (await store.job_row(job_id))["settlement"] == "committed"


# --- jobs ---------------------------------------------------------------------------


async def test_a_job_comes_back_as_it_was_written(store):
    await add_user(store)
    job_id = await new_job(store)
    job = await store.job(job_id)
    assert job == Job(id=job_id, user_key="test:1", platform="test", reply_to=job_row()["reply_to"],
                      model_id="kwaivgi/kling-v2.1-i2v-standard", kind="animate", inputs=job_row()["inputs"],
                      label="Kling 2.1 · 5 s", cost=3, state=JobState.QUEUED, created_at=NOW, owner="front-1")
    assert isinstance(job.created_at, float)
    assert await store.job(0) is None and await store.job(2**70) is None  # typed by a user: no such job
    assert await store.user_jobs("test:1") == [job]
    assert await store.count_active("test:1") == 1


async def test_job_writes_are_fenced_by_their_owner_and_one_task_has_one_job(store):
    await add_user(store)
    first, second = await new_job(store), await new_job(store)
    job = await store.update_job(first, owner="front-1", state=JobState.PROCESSING, prediction_id="task-a",
                                 submitted_at=NOW + 1, nsfw=1)
    assert (job.state, job.prediction_id, job.nsfw, job.submitted_at) == (JobState.PROCESSING, "task-a", True,
                                                                          NOW + 1)
    with pytest.raises(LeaseLost):
        await store.update_job(first, owner="worker-9", state=JobState.FAILED)
    with pytest.raises(KeyError):
        await store.update_job(999, state=JobState.FAILED)
    with pytest.raises(TaskTaken):
        await store.update_job(second, owner="front-1", prediction_id="task-a")
    async with store.transaction():  # refused inside a transaction, the transaction goes on
        with pytest.raises(TaskTaken):
            await store.update_job(second, owner="front-1", prediction_id="task-a")
        await store.update_job(second, owner="front-1", error="kept")
    known = await store.job(second)
    assert known.error == "kept" and known.prediction_id is None
    told = await store.update_job(second, known=known, state=JobState.SUBMITTING.value, resubmits=1)
    assert told == await store.job(second) == dataclasses.replace(known, state=JobState.SUBMITTING, resubmits=1)


async def test_the_first_task_reported_for_a_job_is_kept(store):
    await add_user(store)
    job_id = await new_job(store, state=JobState.SUBMITTING.value)
    assert await store.record_result(job_id, "task-a", {"id": "task-a", "status": "completed"}) is not None
    assert await store.record_result(job_id, "task-b", {"id": "task-b", "status": "completed"}) is None
    again = await store.record_result(job_id, "task-a", {"id": "task-a", "status": "completed", "n": 2})
    assert again.webhook_result == {"id": "task-a", "status": "completed", "n": 2}
    assert await store.prediction_claimed("task-a", job_id + 1) is True
    assert await store.prediction_claimed("task-a", job_id) is False
    queued = await new_job(store)
    assert await store.record_result(queued, "task-c", {"id": "task-c"}) is None  # not waiting for a task
    assert await store.record_result(-1, "task-c", {"id": "task-c"}) is None


# --- media --------------------------------------------------------------------------


async def test_a_jobs_media_is_readable_by_another_store_and_expires(storage_url, store, open_stores):
    await add_user(store)
    job_id, other = await new_job(store), await new_job(store, inputs={"effect_scene": "hug"})
    photo, audio = b"\xff\xd8photo" * 1000, b"ID3audio"
    staged = await store.files.stage(audio, "voice.mp3")
    async with store.transaction():
        await store.files.put(job_id, "image", "image/jpeg", "cat.jpg", photo)
        await store.files.put(job_id, "audio", "audio/mpeg", "voice.mp3", staged)
    await store.files.discard(staged)
    elsewhere = await open_stores(storage_url)
    media = await elsewhere.files.get(job_id)
    assert {role: (m["mime"], m["filename"], m["data"]) for role, m in media.items()} == {
        "image": ("image/jpeg", "cat.jpg", photo), "audio": ("audio/mpeg", "voice.mp3", audio)}
    assert await elsewhere.files.has(job_id) and not await elsewhere.files.has(other)
    assert await store.files.sweep() == 0 and await elsewhere.files.has(job_id, "audio")

    await store.update_job(job_id, state=JobState.DONE.value, finished_at=NOW + 10)
    await store.update_job(other, state=JobState.FAILED.value, finished_at=NOW + 10)
    assert await store.files.expire(NOW + 5) == []  # not yet
    assert await store.files.expire(NOW + 20) == [job_id]  # the other has neither media nor prompt
    assert await elsewhere.files.get(job_id) == {}
    assert (await elsewhere.job(job_id)).inputs == {"duration": "5", "ratio": 1.5}
    await store.files.put(other, "image", "image/png", "a.png", b"png")
    await store.files.drop(other)
    assert not await elsewhere.files.has(other)


async def test_postgresql_keeps_media_in_its_rows(pg_url, open_stores):
    store = await open_stores(pg_url)
    await add_user(store)
    job_id = await new_job(store)
    staged = await store.files.stage(b"photo-bytes", "cat.jpg")
    assert staged == Staged("cat.jpg", data=b"photo-bytes")  # no file on this machine's disk
    await store.files.put(job_id, "image", "image/jpeg", "cat.jpg", staged)
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("select data from job_media where job_id = $1", job_id) == b"photo-bytes"
    finally:
        await conn.close()


# --- pending questions and one-use marks -----------------------------------------------


async def test_a_one_use_mark_is_claimed_once_across_stores(storage_url, store, open_stores):
    other = await open_stores(storage_url)
    await store.asks.put("test", 42, 7, {"want": "audio", "job": 3}, NOW)
    assert await other.asks.get("test", "42", "7") == {"want": "audio", "job": 3}
    await other.asks.put("test", 42, 7, {"want": "photo"}, NOW + 1)
    assert await store.asks.get("test", 42, 7) == {"want": "photo"}
    results = await asyncio.gather(*(s.asks.claim("test", 42, 8, NOW) for s in [store, other] * 5))
    assert sorted(results) == [False] * 9 + [True]
    await other.asks.unclaim("test", 42, 8)
    assert await store.asks.claim("test", 42, 8, NOW) is True
    assert await other.asks.claim("test", 42, 8, NOW + 5, window=10) is False
    assert await other.asks.claim("test", 42, 8, NOW + 11, window=10) is True  # the old mark lapsed
    await store.asks.drop("test", 42, 7)
    assert await other.asks.get("test", 42, 7) is None
    await store.asks.put("test", 1, 1, {}, NOW + 25 * 3600)  # a day later: unanswered questions go
    assert await other.asks.get("test", 42, 8) is None


# --- claims -------------------------------------------------------------------------


async def test_twenty_claimers_take_each_queued_job_exactly_once(storage_url, store, open_stores):
    await add_user(store)
    queued = [await new_job(store) for _ in range(60)]
    later = await new_job(store, not_before=NOW + 100)
    elsewhere = await new_job(store, platform="discord")
    excluded = queued[0]
    claimers = await asyncio.gather(*(open_stores(storage_url) for _ in range(20)))

    async def claim_all(claimer) -> list[int]:
        taken = []
        while (job := await claimer.claims.claim_next("front-1", ["test"], NOW + 30, NOW, {excluded})):
            assert job.state == JobState.SUBMITTING and job.owner == "front-1"
            taken.append(job.id)
        return taken

    claimed = [job_id for taken in await asyncio.gather(*map(claim_all, claimers)) for job_id in taken]
    assert sorted(claimed) == queued[1:]  # each once, none twice, none left
    assert [j.id for j in await store.claims.own_queued("front-1")] == [excluded, later, elsewhere]
    assert await store.claims.next_due("front-1", ["test"], NOW) == 0  # due at once (not_before 0)
    assert (await store.claims.claim_next("front-1", ["test"], NOW + 30, NOW, set())).id == excluded
    assert await store.claims.claim_next("front-2", ["test"], NOW + 30, NOW + 200, set()) is None
    assert (await store.claims.claim_next("front-1", ["test"], NOW + 30, NOW + 200, set())).id == later


async def test_a_dead_processes_jobs_are_taken_over_once(storage_url, store, open_stores):
    """Started jobs of a dead process are taken over whole; queued ones no live process
    holds (a dead one's, or a front's: no owner) are adopted one at a time by claim_next,
    each by one process."""
    await add_user(store)
    await add_user(store, "test:2")
    dead = await new_job(store, owner="dead", lease_until=NOW - 1, state=JobState.PROCESSING.value)
    dead_other_user = await new_job(store, "test:2", owner="dead", lease_until=NOW - 1,
                                    state=JobState.PROCESSING.value)
    alive = await new_job(store, owner="alive", lease_until=NOW + 30, state=JobState.PROCESSING.value)
    unowned = await new_job(store, owner=None, lease_until=None)
    queued_of_dead = await new_job(store, "test:2", owner="dead", lease_until=NOW - 1)
    alive_queued = await new_job(store, owner="alive", lease_until=NOW + 30)
    await new_job(store, owner="dead", lease_until=NOW - 1, state=JobState.DONE.value)
    assert await store.claims.live_owner(alive, NOW) == "alive" and await store.claims.live_owner(dead, NOW) is None
    mine = await store.claims.take_over("w1", ["test"], NOW + 30, NOW, user_key="test:1")
    assert [j.id for j in mine] == [dead] and {j.owner for j in mine} == {"w1"}
    others = await asyncio.gather(*[(await open_stores(storage_url)).claims.take_over("w2", ["test"], NOW + 30, NOW)
                                    for _ in range(3)], store.claims.take_over("w3", ["test"], NOW + 30, NOW))
    assert sorted(j.id for taken in others for j in taken) == [dead_other_user]
    # Queued: not adopted without ``adopt``, only the user's with ``user_key``, never a live one's.
    assert await store.claims.claim_next("w1", ["test"], NOW + 30, NOW, set()) is None
    assert await store.claims.next_due("w1", ["test"], NOW) is None
    assert await store.claims.next_due("w1", ["test"], NOW, adopt=True) == 0
    adopted = await store.claims.claim_next("w1", ["test"], NOW + 30, NOW, set(), adopt=True, user_key="test:1")
    assert adopted.id == unowned and adopted.owner == "w1" and adopted.state == JobState.SUBMITTING
    rivals = await asyncio.gather(*[(await open_stores(storage_url)).claims.claim_next(
        f"w{n}", ["test"], NOW + 30, NOW, set(), adopt=True) for n in range(5, 9)])
    assert [j.id for j in rivals if j is not None] == [queued_of_dead]  # one adopter only
    assert await store.claims.claim_next("w9", ["test"], NOW + 30, NOW, set(), adopt=True) is None
    assert (await store.job(alive_queued)).owner == "alive"
    assert set(await store.claims.renew("w1", NOW + 60)) == {dead, unowned}
    assert [j.id for j in await store.claims.held("w1")] == [dead, unowned]
    await store.claims.release_job(dead, "w1")
    assert await store.claims.live_owner(dead, NOW) is None and await store.claims.live_owner(unowned, NOW) == "w1"
    await store.claims.release("w1")
    assert [j.id for j in await store.claims.take_over("w4", ["test"], NOW + 30, NOW)] == [dead, unowned]


async def test_one_users_read_check_write_runs_one_at_a_time(storage_url, store, open_stores):
    """50 requests over two stores for a user with no row yet and 10 credits to come:
    exactly 10 are granted, and the balance and the ledger agree."""
    other = await open_stores(storage_url)

    async def request_one(db, n: int) -> bool:
        async with db.transaction():
            await db.lock_user("test:new")
            row = await db.user("test:new")  # on PostgreSQL, another request's turn comes at each call
            if row is None:
                await add_user(db, "test:new", daily_left=9)
            elif row["daily_left"] > 0:
                await db.update_user("test:new", daily_left=row["daily_left"] - 1)
            else:
                return False
            await db.add_ledger(at=NOW, user_key="test:new", job_id=n, entry="reserve", daily_delta=-1,
                                bonus_delta=0, note="")
            return True

    granted = await asyncio.gather(*(request_one(store if n % 2 else other, n) for n in range(50)))
    assert sum(granted) == 10
    assert (await other.user("test:new"))["daily_left"] == 0


# --- wake-ups -----------------------------------------------------------------------


async def wait_for(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` holds (fails after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout:.1f} s"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_store_hears_the_jobs_it_queues_and_the_tasks_it_records(store):
    heard: list[int] = []
    store.on_change(heard.append)
    await add_user(store)
    job_id = await new_job(store)
    await wait_for(lambda: heard == [job_id], 1.0)
    await store.update_job(job_id, state=JobState.SUBMITTING.value)
    await store.record_result(job_id, "task-a", {"id": "task-a"})
    await wait_for(lambda: heard == [job_id, job_id], 1.0)
    await asyncio.sleep(0.1)
    assert heard == [job_id, job_id]  # queued, then its task's end: once each


async def test_a_job_queued_by_one_process_wakes_another_at_once(pg_url, open_stores):
    front, worker = await open_stores(pg_url), await open_stores(pg_url)
    heard_by_worker: list[int] = []
    heard_by_front: list[int] = []
    worker.on_change(heard_by_worker.append)
    front.on_change(heard_by_front.append)
    await add_user(front)
    async with front.transaction():
        job_id = await new_job(front)
        await asyncio.sleep(0.3)
        assert heard_by_worker == []  # not before the job is committed: it could not be claimed yet
    assert await wait_for(lambda: heard_by_worker == [job_id], 0.2) < 0.2
    await wait_for(lambda: heard_by_front == [job_id], 0.2)


async def test_the_wake_ups_survive_a_server_restart(pg_url, pg_server, open_stores):
    front, worker = await open_stores(pg_url), await open_stores(pg_url)
    heard: list[int] = []
    worker.on_change(heard.append)
    await pg_server.restart()
    await wait_for(lambda: heard == [0], 10)  # "look at everything": what was sent meanwhile is lost
    await add_user(front)
    job_id = await new_job(front)
    await wait_for(lambda: heard == [0, job_id], 0.5)


async def test_a_call_while_the_server_is_down_fails_and_the_next_one_works(pg_url, pg_server, open_stores):
    store = await open_stores(pg_url)
    await add_user(store)
    await pg_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreOffline):  # backend-neutral, soon: no hang
            await store.user("test:1")
        with pytest.raises(StoreOffline):
            async with store.transaction():
                await store.lock_user("test:1")
        assert time.monotonic() - started < 15
    finally:
        await pg_server.start()
    assert (await store.user("test:1"))["daily_left"] == 10
    async with store.transaction():
        await store.update_user("test:1", daily_left=9)
    assert (await store.user("test:1"))["daily_left"] == 9


# --- both backends answer alike ---------------------------------------------------------


async def test_both_backends_answer_every_query_alike(tmp_path: Path, pg_url, open_stores):
    lite, pg = await open_stores(str(tmp_path / "bot.sqlite")), await open_stores(pg_url)

    async def scenario(db) -> list:
        await add_user(db)
        await add_user(db, "discord:2")
        ids = [await new_job(db, created_at=NOW + n, inputs={"effect_scene": effect, "duration": duration},
                             kind="effect", reply_to={"guild_id": 777 if n % 2 else "778", "chat_id": n})
               for n, (effect, duration) in enumerate([("hug", "5"), ("hug", "10"), ("kiss", "5"), ("", "5")])]
        ids.append(await new_job(db, "discord:2", platform="discord", reply_to={"guild_id": 777}))
        await db.update_job(ids[0], state=JobState.DONE.value, submitted_at=NOW, completed_at=NOW + 61.5,
                            finished_at=NOW + 70)
        await db.update_job(ids[1], state=JobState.FAILED.value, submitted_at=NOW, completed_at=NOW + 40,
                            finished_at=NOW + 50)
        await db.settle(ids[1], "refunded")
        await db.update_job(ids[2], state=JobState.SUBMITTING.value, submit_started_at=NOW + 5,
                            submit_ended_at=NOW + 6)
        await db.update_job(ids[3], state=JobState.SUBMITTING.value, submit_started_at=NOW + 7)
        return [
            await db.queue_position(ids[4]), await db.queue_position(ids[0]),
            await db.recent_run_seconds("kwaivgi/kling-v2.1-i2v-standard", "5"),
            await db.recent_run_seconds("kwaivgi/kling-v2.1-i2v-standard", "10"),
            await db.recent_run_seconds("kwaivgi/kling-v2.1-i2v-standard", None),
            await db.effect_counts(),
            await db.usage_since("test", NOW, "guild_id", 777), await db.usage_since("test", NOW, "guild_id", "778"),
            await db.usage_since("test", NOW + 1, "chat_id", 1), await db.usage_since("discord", 0, "guild_id", 777),
            await db.submits_in_window("kwaivgi/kling-v2.1-i2v-standard", ids[3], NOW, NOW + 10),
            await db.user_jobs("test:1"), await db.user_jobs("test:1", active_only=False, limit=2),
            await db.finished_jobs("test:1"), await db.count_active("test:1"),
            await db.claims.own_queued("front-1"), await db.claims.held("front-1"),
            await db.user("discord:2"),
        ]

    assert await scenario(pg) == await scenario(lite)
