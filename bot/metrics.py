"""The bot's Prometheus metrics: this process's own counters, and the database's figures.

Two kinds, kept apart so that several processes sharing one database never disagree:

- per process (``PROCESS``, a registry of its own): WaveSpeed request latency by
  endpoint, WaveSpeed errors by kind, webhook deliveries by outcome. The code that
  sees them calls the small hooks below (``wavespeed_trace``, ``wavespeed_error``,
  ``webhook_delivery``); Prometheus adds up the processes.
- from the database (``database_families``): jobs by model and state, queue depth,
  spend in USD, credits spent, reserved, refunded and granted, failures by kind;
  payments (#18) and their refunds by platform, credits purchased and taken back, Stars.
  Read at scrape time in one store read (``Store.metric_totals``), so every process
  reports the same totals.

``bot.ops_http`` serves both at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from yarl import URL

from bot.messages import METRIC_HELP as HELP

if TYPE_CHECKING:  # the store imports the WaveSpeed client, which counts through this module
    from bot.store.interface import MetricTotals

# No ``*_created`` series: they double every counter and no dashboard of the bot reads them.
disable_created_metrics()
PROCESS = CollectorRegistry(auto_describe=True)


def _family(kind: type[Any], name: str, **options: Any) -> Any:
    """A metric named ``name`` with its help text (``messages.METRIC_HELP``)."""
    return kind(name, HELP[name], **options)


WAVESPEED_SECONDS: Histogram = _family(Histogram, "kling_wavespeed_request_seconds", labelnames=["endpoint"],
                                       registry=PROCESS, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
WAVESPEED_ERRORS: Counter = _family(Counter, "kling_wavespeed_errors", labelnames=["kind"], registry=PROCESS)
WEBHOOK_DELIVERIES: Counter = _family(Counter, "kling_webhook_deliveries", labelnames=["outcome"], registry=PROCESS)

# WaveSpeed error kinds (``wavespeed_error``): an API answer's meaning, or no answer at all.
ERROR_KINDS = ("auth", "rate_limited", "moderated", "bad_request", "server", "timeout", "connection")
# A webhook answer's status -> the delivery's outcome.
DELIVERY_OUTCOMES = {200: "accepted", 400: "malformed", 401: "bad_signature", 408: "too_slow", 413: "too_large"}

for _kind in ERROR_KINDS:  # every kind shows, at 0 until it happens (a rate() of a missing series is nothing)
    WAVESPEED_ERRORS.labels(_kind)
for _outcome in DELIVERY_OUTCOMES.values():
    WEBHOOK_DELIVERIES.labels(_outcome)

# API paths (after /api/v3/) -> endpoint label; any other API path is a model: a submit.
_ENDPOINTS = {"predictions": "history", "model/price": "price", "models": "models", "balance": "balance",
              "account/balance": "balance", "media/upload/binary": "upload", "media/uploads": "upload",
              "webhook/secret": "webhook_secret"}


def endpoint_of(url: URL) -> str:
    """A bounded label for a WaveSpeed request: the API call it is, or "download"."""
    path = url.path
    if not path.startswith("/api/v3/"):
        return "download"  # a video (on WaveSpeed's CDN, or the simulator's /media)
    rest = path.removeprefix("/api/v3/").strip("/")
    if rest.startswith("predictions/") and rest.endswith("/result"):
        return "result"
    return _ENDPOINTS.get(rest, "submit")


def wavespeed_trace() -> aiohttp.TraceConfig:
    """Hooks for the WaveSpeed client's session: every request's latency, and requests
    that got no answer (timeouts, refused or cut connections) as errors."""
    trace = aiohttp.TraceConfig()

    async def started(_: aiohttp.ClientSession, context: SimpleNamespace, __: Any) -> None:
        context.started = time.monotonic()

    async def ended(_: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
                    ) -> None:
        WAVESPEED_SECONDS.labels(endpoint_of(params.url)).observe(time.monotonic() - context.started)

    async def failed(_: aiohttp.ClientSession, context: SimpleNamespace,
                     params: aiohttp.TraceRequestExceptionParams) -> None:
        WAVESPEED_SECONDS.labels(endpoint_of(params.url)).observe(time.monotonic() - context.started)
        wavespeed_error("timeout" if isinstance(params.exception, TimeoutError) else "connection")

    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    return trace


def wavespeed_error(kind: str) -> None:
    """Count a failed WaveSpeed request (``ERROR_KINDS``)."""
    WAVESPEED_ERRORS.labels(kind).inc()


def webhook_delivery(status: int) -> None:
    """Count a webhook delivery by the status it was answered with."""
    WEBHOOK_DELIVERIES.labels(DELIVERY_OUTCOMES.get(status, f"http_{status}")).inc()


def database_families(totals: MetricTotals) -> Iterable[Metric]:
    """The database's figures as Prometheus metric families (a custom collector's output)."""
    jobs = _family(GaugeMetricFamily, "kling_jobs", labels=["model", "state"])
    for (model, state), count in sorted(totals.jobs.items()):
        jobs.add_metric([model, state], count)
    yield jobs
    yield _family(GaugeMetricFamily, "kling_queue_depth", value=totals.queue_depth)
    spend = _family(GaugeMetricFamily, "kling_spend_usd", labels=["model"])
    for model, usd in sorted(totals.spend_usd.items()):
        spend.add_metric([model], float(usd))
    yield spend
    failures = _family(CounterMetricFamily, "kling_job_failures", labels=["kind"])
    for kind, count in sorted(totals.failures.items()):
        failures.add_metric([kind], count)
    yield failures
    yield _family(CounterMetricFamily, "kling_credits_spent", value=totals.credits_spent)
    yield _family(GaugeMetricFamily, "kling_credits_reserved", value=totals.credits_reserved)
    yield _family(CounterMetricFamily, "kling_credits_refunded", value=totals.credits_refunded)
    yield _family(CounterMetricFamily, "kling_credits_granted", value=totals.credits_granted)
    yield from _payment_families(totals)


PAYMENT_PLATFORMS = ("telegram", "discord")  # shown at 0 until a payment comes


def _payment_families(totals: MetricTotals) -> Iterable[Metric]:
    """Payments (#18): purchases and refunds by platform, credits bought and taken back, Stars."""
    for name, counts in (("kling_payments", totals.payments), ("kling_payment_refunds", totals.payment_refunds)):
        family = _family(CounterMetricFamily, name, labels=["platform"])
        for platform in sorted(set(PAYMENT_PLATFORMS) | set(counts)):
            family.add_metric([platform], counts.get(platform, 0))
        yield family
    yield _family(CounterMetricFamily, "kling_credits_purchased", value=totals.credits_purchased)
    yield _family(CounterMetricFamily, "kling_credits_taken_back", value=totals.credits_taken_back)
    yield _family(CounterMetricFamily, "kling_stars_received", value=totals.stars_received)


class DatabaseCollector:
    """A collector of figures read just before (the store is async, ``collect`` is not)."""

    def __init__(self, totals: MetricTotals):
        self.totals = totals

    def collect(self) -> Iterable[Metric]:
        return database_families(self.totals)
