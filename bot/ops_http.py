"""The operations listener (``[http] listen``): ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 "ok" while the process's event loop runs (a liveness probe).
- ``/readyz``: 200 "ready" only when the database answers a trivial query and every
  chat platform this process serves says it is connected (``ready_checks``, one per
  platform, registered by the composition root); else 503, one line per problem.
- ``/metrics``: Prometheus text: this process's counters (``bot.metrics.PROCESS``) and
  the database's figures, read at scrape time (``Store.metric_totals``), so every
  process on one database reports the same totals.

It faces the operator's network, not users: still, it is served behind the webhook
listener's connection gate (a bounded number of connections, each with a deadline).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from bot import messages
from bot.metrics import PROCESS, DatabaseCollector
from bot.store.interface import OpsReads
from bot.webhooks import GatedListener

log = logging.getLogger(__name__)

# A platform's readiness: True when connected (a plain function or a coroutine function).
ReadyCheck = Callable[[], bool | Awaitable[bool]]

# The classic text format generate_latest writes, which every Prometheus reads (newer
# prometheus-client releases announce 1.0.0 as their latest, which older servers refuse).
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DATABASE_TIMEOUT = 3.0  # seconds the database has to answer a probe: a probe must not hang
MAX_CONNECTIONS = 16  # probes and scrapes: a handful at once
READ_DEADLINE = 10.0  # seconds from connecting to a request's last byte


class OpsListener(GatedListener):
    """An aiohttp server on ``listen`` (host:port) answering probes and scrapes."""

    def __init__(self, listen: str, store: OpsReads, ready_checks: dict[str, ReadyCheck] | None = None,
                 *, database_timeout: float = DATABASE_TIMEOUT, credit_usd: Decimal = Decimal("0.25")):
        super().__init__(listen, max_connections=MAX_CONNECTIONS, read_deadline=READ_DEADLINE, logger=log)
        self.store = store
        self.ready_checks: dict[str, ReadyCheck] = dict(ready_checks or {})
        self.database_timeout = database_timeout
        self.credit_usd = credit_usd  # an unquoted job's spend: its credits at ``[quota] credit_usd``

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def problems(self) -> list[str]:
        """What keeps this process from being ready, one line each (none: ready)."""
        found = []
        try:
            await asyncio.wait_for(self.store.check_alive(), self.database_timeout)
        except Exception as err:
            found.append(messages.database_not_answering(type(err).__name__))
        for name, check in self.ready_checks.items():
            try:
                answer = check()
                connected = await answer if inspect.isawaitable(answer) else answer
            except Exception as err:
                log.info("readiness check of %s failed: %s: %s", name, type(err).__name__, err)
                connected = False
            if not connected:
                found.append(messages.platform_not_connected(name))
        return found

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text=messages.ALIVE)

    async def _readyz(self, _: web.Request) -> web.Response:
        if problems := await self.problems():
            return web.Response(text=messages.not_ready(problems), status=503)
        return web.Response(text=messages.READY)

    async def _metrics(self, _: web.Request) -> web.Response:
        scrape = CollectorRegistry(auto_describe=False)
        try:
            totals = await asyncio.wait_for(self.store.metric_totals(credit_usd=self.credit_usd), self.database_timeout)
        except Exception as err:
            # This process's own counters still count; the database's figures are absent, not zero.
            log.warning("metrics: the database did not answer: %s: %s", type(err).__name__, err)
            up = 0
        else:
            scrape.register(DatabaseCollector(totals))
            up = 1
        scrape.register(_Constant(GaugeMetricFamily("kling_database_up", messages.METRIC_HELP["kling_database_up"],
                                                    value=up)))
        body = generate_latest(PROCESS) + generate_latest(scrape)
        return web.Response(body=body, headers={"Content-Type": METRICS_TYPE})


class _Constant:
    """A collector of one metric family made beforehand."""

    def __init__(self, family: GaugeMetricFamily):
        self.family = family

    def collect(self) -> list[GaugeMetricFamily]:
        return [self.family]
