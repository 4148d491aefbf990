"""The live catalog: WaveSpeed's model listing, read at start and then daily, kept in the
store so every process (and a restart without network) builds the same catalog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bot import catalog
from bot.catalog import Catalog
from bot.config import Settings
from bot.store import Store, StoreOffline
from bot.wavespeed import WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

RETRY_SECONDS = 600.0  # a failed refresh is tried again this much later
START_WAIT = 10.0  # at start, the listing is waited for this long; then the cached or built-in one serves


class LiveCatalog:
    """Holds the current ``Catalog``; ``refresh`` reads the listing, ``keep_fresh`` repeats it."""

    def __init__(self, settings: Settings, store: Store, client: WaveSpeedClient,
                 clock: Callable[[], float]):
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self.fetched_at: float | None = None
        self.current: Catalog = self._build(None)
        self._listeners: list[Callable[[Catalog], None]] = []

    def on_change(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener`` with each new catalog (prices quoted for the old one go stale)."""
        if listener not in self._listeners:  # an engine started again registers again
            self._listeners.append(listener)

    def _build(self, listing: list[dict[str, Any]] | None) -> Catalog:
        return catalog.build_catalog(listing, self.settings.models.choice, self.settings.quota.credit_usd)

    def _use(self, listing: list[dict[str, Any]] | None, fetched_at: float | None) -> None:
        before = {m.id for m in self.current.offered}
        self.current = self._build(listing)
        self.fetched_at = fetched_at
        after = {m.id for m in self.current.offered}
        if before != after:
            log.info("models on offer: %s", ", ".join(m.key for m in self.current.offered))
        for withdrawn in sorted(before - after):
            log.warning("model %s is no longer offered", withdrawn)
        names = {n.lower() for m in self.current.models for n in (m.key, m.id, *m.aliases)}
        for unknown in sorted(k for k in self.settings.costs if k.lower() not in names):
            log.warning("[costs] %s: no such model in the catalog; it costs what WaveSpeed quotes", unknown)
        for listener in self._listeners:
            listener(self.current)

    async def start(self) -> None:
        """Use the stored listing, then read a fresh one if it is due (waiting at most START_WAIT)."""
        with contextlib.suppress(StoreOffline):
            if (stored := await self.store.model_listing()) is not None:
                self._use(*stored)
        if self._due():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), START_WAIT)

    def _due(self) -> bool:
        every = self.settings.models.refresh_hours * 3600
        return self.fetched_at is None or self.clock() - self.fetched_at >= every

    async def refresh(self) -> bool:
        """Read WaveSpeed's listing, keep it in the store, rebuild; False (and one log line) when unreadable."""
        try:
            listing = await self.client.models()
        except (WaveSpeedError, OSError, TimeoutError) as err:
            log.warning("could not read WaveSpeed's model list (%s); keeping the %s one", err,
                        "stored" if self.fetched_at is not None else "built-in")
            return False
        if not catalog.build_catalog(listing).models_of("animate"):
            log.warning("WaveSpeed's model list has no Kling photo model; keeping the one before")
            return False
        now = self.clock()
        with contextlib.suppress(StoreOffline):
            await self.store.save_model_listing(listing, now)
        self._use(listing, now)
        return True

    async def keep_fresh(self) -> None:
        """Refresh every ``[models] refresh_hours`` (sooner again after a failure), until cancelled."""
        every = self.settings.models.refresh_hours * 3600
        while True:
            last = self.fetched_at or self.clock()
            await asyncio.sleep(max(1.0, last + every - self.clock()))
            with contextlib.suppress(StoreOffline):  # another process may have read it meanwhile
                if (stored := await self.store.model_listing()) is not None and stored[1] > (self.fetched_at or 0):
                    self._use(*stored)
            if self._due() and not await self.refresh():
                await asyncio.sleep(RETRY_SECONDS)
