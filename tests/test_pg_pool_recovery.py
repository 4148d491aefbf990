"""A pooled PostgreSQL connection left stuck mid-operation (as a server restart leaves
one the driver has not yet seen cut) is an outage for the call that meets it, and never
handed out again: before, every call it was handed to failed with the driver's
"another operation is in progress", lease renewals among them, until the leases of a
live worker lapsed and another worker posted its videos a second time."""

from __future__ import annotations

import asyncio

import pytest

from bot.store import StoreOffline
from bot.store.postgres import PostgresStore


async def test_a_connection_stuck_mid_operation_is_an_outage_once_then_replaced(pg_url):
    store = await PostgresStore.open(pg_url, max_size=1, listen=False)
    try:
        stuck = await store.db.pool.acquire()
        running = asyncio.create_task(stuck.fetchval("select pg_sleep(3)"))
        await asyncio.sleep(0.2)  # the query is on the wire
        await store.db.pool.release(stuck)  # back in the pool while its protocol is busy
        with pytest.raises(StoreOffline):
            await store.db.fetchval("select 1")  # handed the stuck one: an outage, waited out by callers
        assert await store.db.fetchval("select 2") == 2  # a fresh connection, not the stuck one again
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    finally:
        await store.close()
