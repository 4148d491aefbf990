"""Thousands of jobs in flight in one process, on both backends: a pass over all of them
(lease renewals, queue places) asks the real store for a bounded batch at a time, so no
single call blocks the event loop for long (SQLite answers on it), and reads no job row
it does not need; and a full garbage collection walks only what came after start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.engine.scheduler import ROWS_PER_CALL
from bot.jobs import JobState
from tests.backends import raw_sql
from tests.conftest import PLATFORM, user

pytestmark = pytest.mark.both_backends

QUEUED = 3 * ROWS_PER_CALL + 17  # a few full batches and a part one
NOW_LEASE = 1.0  # a lease long run out: renewed by the pass, or still this old


async def _queue_jobs(store, owner: str, count: int, *, not_before: float = 0.0,
                      lease_until: float = NOW_LEASE) -> None:
    """``count`` queued jobs of ``owner``'s in one statement (accepting them one by one
    through the engine would take minutes)."""
    who = user()
    await raw_sql(store, "insert into users (key, platform, name, period, daily_left, bonus, created_at)"
                         " values (?, ?, ?, 'p', 10, 0, 0) on conflict do nothing", [who.key, PLATFORM, who.name])
    await raw_sql(
        store,
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?)"
        " insert into jobs (user_key, platform, reply_to, model_id, kind, inputs, label, cost, paid_daily,"
        " paid_bonus, period, state, not_before, created_at, updated_at, owner, lease_until)"
        " select ?, ?, '{}', 'kwaivgi/kling-effects', 'effect', '{}', 'a job', 1, 1, 0,"
        " 'p', 'queued', ?, 1.0, 1.0, ?, ? from n",
        [count, who.key, PLATFORM, not_before, owner, lease_until])


def _recording(calls: list[int], method):
    """``method`` itself, noting how many rows each call handed back."""
    async def recorded(*args, **kwargs):
        result = await method(*args, **kwargs)
        calls.append(len(result) if hasattr(result, "__len__") else 1)
        return result
    return recorded


async def test_a_lease_renewal_over_thousands_of_queued_jobs_renews_each_in_batches_reading_none(
        make_engine, monkeypatch):
    engine = await make_engine(start=False)
    store = engine.store
    # Due in an hour (a submit to retry): the loop claims none of them meanwhile.
    await _queue_jobs(store, engine.owner, QUEUED, not_before=10**10)
    await _queue_jobs(store, "another-process", 3, not_before=10**10, lease_until=10**10)  # alive
    renewed: list[int] = []
    job_reads: list[int] = []
    monkeypatch.setattr(store.claims, "renew", _recording(renewed, store.claims.renew))
    monkeypatch.setattr(store, "job", _recording(job_reads, store.job))

    await engine.start()  # renews this process's leases before it returns
    reads_during_renewal = len(job_reads)

    assert reads_during_renewal == 0  # a queued job needs its lease, not a look
    assert max(renewed) <= ROWS_PER_CALL
    assert sum(renewed) == QUEUED
    leases = await raw_sql(store, "select owner, count(*) as n, min(lease_until) as oldest from jobs"
                                  " group by owner order by owner")
    ours = {row["owner"]: row for row in leases}
    assert ours[engine.owner]["n"] == QUEUED and ours[engine.owner]["oldest"] > NOW_LEASE  # every one renewed
    assert ours["another-process"]["oldest"] == 10**10  # another live process's claims untouched


async def test_a_lease_renewal_still_drives_again_a_started_job_nothing_drives(make_engine):
    """Among thousands of queued jobs, the one started job whose driver is gone is found
    (its claim is this process's) and driven again: here, to its failure, as it has no photo."""
    engine = await make_engine(start=False)
    store = engine.store
    await _queue_jobs(store, engine.owner, 2 * ROWS_PER_CALL, not_before=10**10)
    [started] = await raw_sql(store, "select max(id) as id from jobs")
    await raw_sql(store, "update jobs set state = 'submitting' where id = ?", [started["id"]])

    await engine.start()
    assert engine.scheduler.is_driving(started["id"]) or \
        (await store.job(started["id"])).state.finished


async def test_every_queued_job_is_told_its_place_in_line_a_batch_at_a_time(make_engine, courier, monkeypatch):
    engine = await make_engine(start=False)
    store = engine.store
    await _queue_jobs(store, engine.owner, QUEUED)
    await _queue_jobs(store, "another-process", 2, lease_until=10**10)  # its own queue, not ours
    pages: list[int] = []
    monkeypatch.setattr(store.claims, "own_queued", _recording(pages, store.claims.own_queued))

    await engine.scheduler.announce_positions()

    ours = [row["id"] for row in await raw_sql(store, "select id from jobs where owner = ? order by id",
                                                [engine.owner])]
    told = [(job_id, update.position) for job_id, update in courier.progress_log if update.stage == "queued"]
    assert told == [(job_id, place) for place, job_id in enumerate(ours, start=1)]
    assert max(pages) <= ROWS_PER_CALL


async def test_renewing_in_batches_never_renews_another_process_s_claim(make_store):
    """The store's part: a batch covers this owner's unfinished jobs above ``after`` only."""
    store = await make_store()
    await _queue_jobs(store, "w1", 5)
    await _queue_jobs(store, "w2", 2)
    ids = [row["id"] for row in await raw_sql(store, "select id from jobs where owner = 'w1' order by id")]
    await raw_sql(store, "update jobs set state = 'done' where id = ?", [ids[1]])

    first = await store.claims.renew("w1", 500.0, after=0, limit=2)
    rest = await store.claims.renew("w1", 500.0, after=max(first), limit=10)

    assert first == {ids[0]: JobState.QUEUED, ids[2]: JobState.QUEUED}
    assert set(rest) == {ids[3], ids[4]}
    rows = await raw_sql(store, "select owner, lease_until from jobs where lease_until = 500.0")
    assert {row["owner"] for row in rows} == {"w1"} and len(rows) == 4


def test_after_start_a_full_garbage_collection_walks_only_what_came_since(tmp_path: Path):
    """A fresh process (this one's objects are pytest's): once its first engine started,
    the collector skips the tens of thousands of objects of the imported modules, so a
    full collection with thousands of requests waiting walks those requests only."""
    script = textwrap.dedent(f"""
        import asyncio, gc
        from dataclasses import replace
        from bot.config import load_settings
        from bot.engine import Engine
        import adapters.app  # everything a bot process imports

        async def main():
            base = load_settings(None, env={{}})
            settings = replace(base, storage=replace(base.storage, path={str(tmp_path / "bot.sqlite")!r},
                                                     videos_dir={str(tmp_path / "videos")!r}))
            engine = await Engine.from_settings(settings)
            before = len(gc.get_objects())
            await engine.start(drive=False)
            print(before, len(gc.get_objects()))
            await engine.close()

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent, check=True)
    before, after = map(int, done.stdout.split())
    assert before > 20_000  # the imports: what a collection walked every time
    assert after < 2_000
