"""Round trips the PostgreSQL backend saves (issue #15, bench/scale.py's credit pairs):
what the server receives, read from the connection's own query log."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import QuotaSettings
from bot.credits import Credits
from bot.jobs import UserRef
from bot.store import open_store

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
