"""The questions a chat asked a user, and its one-use menus, kept in the store so that an
answer or a press still works after a restart or in another process. ``Engine``
inherits these, so adapters still ask everything of the one facade. So are the marks that
make a chat update delivered twice (a retry, or to two fronts) handled once, and the named
leases that let one process only do something (poll Telegram for a bot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.config import Settings
from bot.engine.leases import HOLDER, LEASES, Lease
from bot.store import Store


class Asks:
    """What a chat adapter keeps of the questions and menus it posted."""

    store: Store
    clock: Callable[[], float]
    settings: Settings
    owner: str

    async def remember_ask(self, platform: str, chat: object, message_id: object,
                     data: dict[str, Any]) -> None:
        """Keep a question asked in a chat, so its answer still works after a restart."""
        await self.store.asks.put(platform, chat, message_id, data, self.clock())

    async def claim_menu(self, platform: str, chat: object, message_id: object) -> bool:
        """A one-use menu's first press (True), or a repeat (a double tap; any process)."""
        return await self.store.asks.claim(platform, chat, message_id, self.clock())

    async def pending_ask(self, platform: str, chat: object, message_id: object) -> dict[str, Any] | None:
        return await self.store.asks.get(platform, chat, message_id)

    async def forget_ask(self, platform: str, chat: object, message_id: object) -> None:
        await self.store.asks.drop(platform, chat, message_id)

    async def first_delivery(self, platform: str, source: object, delivery_id: object) -> bool:
        """Whether a chat's delivery (a Telegram update, by its id at ``source``: the bot) is
        seen here first, by any process sharing the store; a repeat (Telegram retrying, or
        the same update routed to another front) is False. Marks last a day."""
        return await self.store.asks.claim(platform, f"delivery:{source}", delivery_id, self.clock())

    def lease(self, name: str, on_lost: Callable[[str], None] | None = None) -> Lease:
        """A named lease for this process, as long as a job's (``[storage] lease_seconds``):
        ``await lease.acquire()`` is None when taken (renewed until ``release``), else the
        live holder's name. ``on_lost`` hears of another process taking it over."""
        return Lease(self.store, name, self.owner, self.settings.storage.lease_seconds, self.clock, on_lost)

    async def announce(self, name: str) -> None:
        """Say that a process doing ``name`` is alive, for one lease: unlike a lease, any
        number of processes may announce the same name (every webhook front does)."""
        now = self.clock()
        await self.store.asks.put(LEASES, name, HOLDER,
                                  {"owner": self.owner, "until": now + self.settings.storage.lease_seconds}, now)

    async def announced(self, name: str) -> str | None:
        """The process that last announced ``name``, while that lasts (a lease); else None."""
        mark = await self.store.asks.get(LEASES, name, HOLDER) or {}
        return str(mark["owner"]) if float(mark.get("until", 0)) >= self.clock() else None

    async def unannounce(self, name: str) -> None:
        """Take back this process's announcement of ``name`` (when it was the last one made)."""
        async with self.store.transaction():
            await self.store.lock_user(f"{LEASES}:{name}")
            if (await self.store.asks.get(LEASES, name, HOLDER) or {}).get("owner") == self.owner:
                await self.store.asks.drop(LEASES, name, HOLDER)
