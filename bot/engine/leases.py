"""Named leases in the shared store: one process at a time does something (polls Telegram
for one bot), however many processes share the database, and a holder that dies does not
block the next one for longer than a lease.

A lease is kept like a job's claim (``[storage] lease_seconds``): its holder renews it
every third of that; a process that finds it held watches it until its holder renews it
(alive: the newcomer is refused) or it lapses (the holder is gone: taken over). The
holder's name and deadline are kept with the chats' questions (``PendingAsks``), which
every store backend keeps, so no backend needs a table of its own for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bot.store import Store

log = logging.getLogger(__name__)

LEASES = "lease"  # the ``platform`` the store keeps leases under, apart from every chat's
HOLDER = "holder"


class Lease:
    """One named lease for this process (``owner``): ``acquire``, then ``release``."""

    def __init__(self, store: Store, name: str, owner: str, seconds: float,
                 clock: Callable[[], float], on_lost: Callable[[str], None] | None = None):
        self.store = store
        self.name = name
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        self.on_lost = on_lost
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> str | None:
        """Take the lease and keep renewing it until ``release``: None when it is this
        process's, else the name of the live process that holds it. A lease held by
        another is watched for up to one lease: renewed meanwhile, its holder is alive."""
        first_seen: dict[str, Any] | None = None
        while True:
            holder = await self._take()
            if holder is None:
                self._renewer = asyncio.create_task(self._keep_renewed(), name=f"lease {self.name}")
                return None
            if first_seen is None:
                first_seen = holder
                log.info("%s is held by %s: waiting to see whether it is renewed", self.name, holder["owner"])
            elif holder != first_seen:  # renewed, or taken by a third process: alive either way
                return str(holder["owner"])
            await asyncio.sleep(min(self.seconds / 10, max(0.0, float(holder["until"]) - self.clock()) + 0.05))

    async def release(self) -> None:
        """Stop renewing and hand the lease over at once (a clean stop)."""
        if self._renewer is None:
            return
        self._renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewer
        self._renewer = None
        try:
            async with self.store.transaction():
                await self.store.lock_user(f"{LEASES}:{self.name}")
                if (await self._holder()).get("owner") == self.owner:
                    await self.store.asks.drop(LEASES, self.name, HOLDER)
        except Exception as err:  # the database is gone: the lease lapses by itself
            log.info("%s not released: %s: %s", self.name, type(err).__name__, err)

    async def _holder(self) -> dict[str, Any]:
        return await self.store.asks.get(LEASES, self.name, HOLDER) or {}

    async def _take(self) -> dict[str, Any] | None:
        """The lease made (or kept) this process's, in one transaction: None; or, when
        another process's still holds, that holder (its owner and deadline)."""
        async with self.store.transaction():
            await self.store.lock_user(f"{LEASES}:{self.name}")  # one taker at a time, on any machine
            holder, now = await self._holder(), self.clock()
            if holder and holder.get("owner") != self.owner and float(holder.get("until", 0)) >= now:
                return holder
            await self.store.asks.put(LEASES, self.name, HOLDER,
                                      {"owner": self.owner, "until": now + self.seconds}, now)
            return None

    async def _keep_renewed(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                holder = await self._take()
            except Exception as err:  # e.g. the database busy for long: the next turn tries again
                log.warning("%s not renewed: %s: %s", self.name, type(err).__name__, err)
                continue
            if holder is not None:  # this process stalled past its lease and another took it
                log.error("%s was taken over by %s", self.name, holder["owner"])
                if self.on_lost is not None:
                    self.on_lost(str(holder["owner"]))
                return
