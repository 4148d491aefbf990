"""The questions a chat asked a user, and its one-use menus, kept in the store so that an
answer or a press still works after a restart or in another process. ``Engine``
inherits these, so adapters still ask everything of the one facade."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.store import Store


class Asks:
    """What a chat adapter keeps of the questions and menus it posted."""

    store: Store
    clock: Callable[[], float]

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
