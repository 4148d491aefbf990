"""Webhook deliveries as WaveSpeed makes them: signed, retried, and broken on demand.

Each event (a task that ended) is POSTed as its bare prediction object, with
``webhook-id`` (one per event, kept across retries), ``webhook-timestamp`` (unix
seconds of each send) and ``webhook-signature: v3,<hex>``, hex being HMAC-SHA256
of ``"{id}.{timestamp}.{raw body}"`` keyed with the secret minus its ``whsec_``.
A receiver that answers non-2xx or cannot be reached gets up to 3 attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from bot.devtools.faults import Fault

log = logging.getLogger(__name__)

STALE_SECONDS = 600  # how old a "stale" fault's timestamp is (receivers refuse > 300 s)
SEND_TIMEOUT = 5.0


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one send."""
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v3,{digest}"


class WebhookSender:
    """POSTs signed webhook events in the background, recording every attempt in ``sent``."""

    def __init__(self, sent: list[dict[str, Any]]) -> None:
        self.sent = sent  # per attempt: url, webhook_id, timestamp, status (None: unreachable), body, time
        self._pending: set[asyncio.Task[None]] = set()

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (a wait for a task's end, then its delivery) until done or ``close()``."""
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery crashed", exc_info=task.exception())

    async def close(self) -> None:
        """Cancel the deliveries still waiting or under way."""
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def deliver(self, url: str, event: dict[str, Any], fault: Fault | None, *, secret: str,
                      retry_delays: tuple[float, ...]) -> None:
        """Send one event, retried after each of ``retry_delays`` while it fails.

        ``fault`` (kind drop, duplicate, bad_signature or stale) breaks it on purpose.
        """
        kind = fault.kind if fault else None
        if kind == "drop":
            log.debug("webhook %s for %s dropped", url, event.get("id"))
            return
        webhook_id = f"msg_{secrets.token_hex(12)}"
        body = json.dumps(event).encode()
        if kind == "bad_signature":
            secret = "whsec_not-the-secret"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT)) as session:
            for _ in range(2 if kind == "duplicate" else 1):
                for delay in (*retry_delays, None):
                    timestamp = int(time.time()) - (STALE_SECONDS if kind == "stale" else 0)
                    sent_at = time.monotonic()
                    status = await self._send(session, url, body, {
                        "webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
                        "webhook-signature": signature(secret, webhook_id, timestamp, body)})
                    self.sent.append({"url": url, "webhook_id": webhook_id, "timestamp": timestamp,
                                      "status": status, "body": event, "time": sent_at})
                    if (status is not None and 200 <= status < 300) or delay is None:
                        break
                    await asyncio.sleep(delay)

    @staticmethod
    async def _send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        """One POST; the HTTP status, or None when the receiver cannot be reached."""
        try:
            async with session.post(url, data=body, allow_redirects=False,
                                    headers={**headers, "Content-Type": "application/json"}) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            log.debug("webhook %s unreachable: %r", url, err)
            return None
