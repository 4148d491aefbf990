"""Round trips the PostgreSQL backend saves (issue #15, bench/scale.py's credit pairs):
what the server receives, read from the connection's own query log."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest

from bot.config import QuotaSettings, load_settings
from bot.credits import Credits
from bot.engine import Engine
from bot.jobs import UserRef
from bot.store import open_store
from bot.store.pg_migrations import prepare_connection
from bot.store.pg_session import ChangeFeed, _nothing_to_reset
from bot.store.postgres import PostgresStore
from bot.wavespeed import WaveSpeedClient
from tests.conftest import PLATFORM, effect_request, user
from tests.helpers import RecordingCourier

NOW = 1_700_000_000.0
LOCK = "pg_advisory_xact_lock"


@pytest.fixture
async def pg_store(pg_url):
    store = await open_store(pg_url)
    yield store
    await store.close()


def _log_queries(store) -> list[str]:
    """The statements sent on this task's transaction connection from now on."""
    sent: list[str] = []
    store.db.in_transaction().add_query_logger(lambda record: sent.append(record.query))
    return sent


async def test_an_accepts_transaction_locks_its_user_once(pg_store):
    """Accept locks the user, then reading the user's credits asks for the same lock: the
    second request would only cost a round trip (the lock is held to the transaction's end)."""
    credits = Credits(pg_store, QuotaSettings(daily_credits=10), clock=lambda: NOW)
    user = UserRef("test", "1")
    async with pg_store.transaction():
        sent = _log_queries(pg_store)
        await pg_store.lock_user(user.key)  # as Engine._queue does
        await credits.reserve(user, 1)  # reads the user's row, locking it again
        await pg_store.lock_user("test:2")  # another key is another lock
    assert len([q for q in sent if LOCK in q]) == 2  # test:1 once, test:2 once
    assert (await credits.balance(user)).total == 9


async def test_a_lock_taken_inside_a_rolled_back_savepoint_is_taken_again(pg_store):
    async with pg_store.transaction():
        sent = _log_queries(pg_store)
        with pytest.raises(RuntimeError):
            async with pg_store.transaction():  # a savepoint: its locks go with it
                await pg_store.lock_user("test:1")
                raise RuntimeError
        await pg_store.lock_user("test:1")
    assert len([q for q in sent if LOCK in q]) == 2


async def test_a_remembered_lock_still_makes_another_process_wait(pg_url, pg_store):
    """The lock is really held until the transaction ends, however often it was asked for."""
    other = await open_store(pg_url)
    try:
        order: list[str] = []
        holding = asyncio.Event()

        async def first() -> None:
            async with pg_store.transaction():
                await pg_store.lock_user("test:1")
                await pg_store.lock_user("test:1")
                holding.set()
                await asyncio.sleep(0.3)
                order.append("first ends")

        async def second() -> None:
            await holding.wait()
            async with other.transaction():
                await other.lock_user("test:1")
                order.append("second locked")

        await asyncio.gather(first(), second())
        assert order == ["first ends", "second locked"]
    finally:
        await other.close()


# --- a credit pair: accept (reserve) and settle (commit) ---------------------------------

async def _logged_engine(pg_url: str, tmp_path, keep_days: int = 7) -> tuple[Engine, list[str]]:
    """A never-started engine over the real PostgreSQL store, on a pool whose every
    connection reports each statement it sends to the server."""
    sent: list[str] = []

    def note(record) -> None:
        sent.append(" ".join(record.query.split()).lower())

    async def log_statements(conn) -> None:
        conn.add_query_logger(note)  # one callback: adding it again on each acquire changes nothing

    pool = await asyncpg.create_pool(pg_url, min_size=0, max_size=4, init=prepare_connection,
                                     reset=_nothing_to_reset, setup=log_statements)
    store = PostgresStore(pool, ChangeFeed(pg_url))
    base = load_settings(None, env={})
    settings = replace(base, storage=replace(base.storage, url=pg_url, videos_dir=str(tmp_path / "videos"),
                                                        keep_days=keep_days))
    engine = Engine(settings, store, WaveSpeedClient("http://127.0.0.1:9", "key"), clock=lambda: NOW)
    engine.register(PLATFORM, RecordingCourier())
    return engine, sent


async def test_an_accept_reserves_in_one_write_between_a_lock_and_one_read(pg_url, tmp_path):
    """Accept's transaction, for a user this process has not accepted for, is BEGIN, the
    user's lock, one read (the user's row and their running jobs), one write (the credit
    taken, the job, its ledger row, its photo, returning the job's queue place) and
    COMMIT. The balance it tells is the reservation's, not read again."""
    engine, sent = await _logged_engine(pg_url, tmp_path)
    try:
        await engine.credits.balance(user())  # the user exists, as for a running bot
        await engine.paused()  # the pause and the bans read, as a running bot has them (#17)
        sent.clear()
        answer = await engine.accept(effect_request())
        assert answer.credits_left == 9 and answer.position == 1
        assert len(sent) == 5, "\n".join(sent)
        assert [q.split()[0] for q in sent] == ["begin;", "select", "with", "with", "commit;"], sent
        rows = await engine.store.export_batches("ledger").__anext__()
        assert [(row["entry"], row["daily_delta"], row["job_id"]) for row in rows] == [("reserve", -1, answer.job.id)]
        assert set(await engine.store.files.get(answer.job.id)) == {"image"}
    finally:
        await engine.close()


async def test_settling_a_delivered_job_is_one_statement(pg_url, tmp_path):
    """The job done, its credit committed, its ledger row and its photo dropped: one
    statement (atomic without BEGIN and COMMIT)."""
    engine, sent = await _logged_engine(pg_url, tmp_path, keep_days=0)  # nothing kept for result buttons
    try:
        answer = await engine.accept(effect_request())
        job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], NOW + 60, NOW, set())
        assert job is not None and job.id == answer.job.id
        sent.clear()
        await engine.pipeline.settle_done(job)
        assert len(sent) == 1 and sent[0].startswith("with"), sent
        row = await engine.store.job_row(job.id)
        assert (row["state"], row["settlement"]) == ("done", "committed")
        assert await engine.store.files.get(job.id) == {}
        assert (await engine.credits.balance(user())).total == 9
    finally:
        await engine.close()


async def test_an_accept_for_a_user_the_process_knows_is_one_statement(pg_url, tmp_path):
    """After a process accepted a user's job it knows their row: their next accept is one
    statement, without BEGIN, lock or read (the user's row written only if unchanged, the
    job, its ledger row, its photo, the job's queue place). Settling a job leaves the
    user's row alone, so it stays known."""
    engine, sent = await _logged_engine(pg_url, tmp_path)
    try:
        first = await engine.accept(effect_request())
        sent.clear()
        answer = await engine.accept(effect_request())
        assert (answer.credits_left, answer.position) == (8, 2)
        assert len(sent) == 1 and sent[0].startswith("with"), "\n".join(sent)
        job = await engine.store.claims.claim_next(engine.owner, [PLATFORM], NOW + 60, NOW, set())
        assert job is not None and job.id == first.job.id
        await engine.pipeline.settle_done(job)
        sent.clear()
        third = await engine.accept(effect_request())
        assert (third.credits_left, third.position) == (7, 2)
        assert len(sent) == 1 and sent[0].startswith("with"), "\n".join(sent)
        rows = await engine.store.export_batches("ledger").__anext__()
        assert [(row["entry"], row["daily_delta"], row["job_id"]) for row in rows] == [
            ("reserve", -1, first.job.id), ("reserve", -1, answer.job.id), ("commit", 0, first.job.id),
            ("reserve", -1, third.job.id)]
        assert set(await engine.store.files.get(answer.job.id)) == {"image"}
        assert (await engine.credits.balance(user())).total == 7
    finally:
        await engine.close()
