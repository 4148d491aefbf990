"""The bot's webhook listener: WaveSpeed POSTs a task's final state to it.

Each job is submitted with its own URL, ``{webhook_url}/wavespeed/jobs/{job_id}``, so
a delivery names its job even when the submit's answer was lost. Every delivery is
verified as WaveSpeed signs it: ``webhook-signature: v3,<hex>`` where hex is
HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` under the secret
(without its ``whsec_`` prefix). A missing or wrong signature, or a timestamp more
than five minutes off, gets 401; a valid one 200, duplicates included (the engine
acts on a job's result once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.wavespeed import Prediction

log = logging.getLogger(__name__)

TOLERANCE = 300  # seconds a delivery's timestamp may be off (replays are refused)
MAX_BODY = 1024 * 1024  # a prediction object is a few KB
PATH = "/wavespeed/jobs/{job_id}"

OnResult = Callable[[int, Prediction], Awaitable[None]]


def job_url(base: str, job_id: int) -> str:
    """The URL a job is submitted with: where WaveSpeed reports its end."""
    return base.rstrip("/") + PATH.format(job_id=job_id)


def signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC WaveSpeed puts after ``v3,``."""
    key = secret.removeprefix("whsec_").encode()
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verified(secret: str, headers: Any, body: bytes, now: float | None = None) -> bool:
    """Whether a delivery carries a valid, fresh signature (constant-time compare)."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (secret and webhook_id and timestamp.isascii() and timestamp.isdigit() and given):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE:
        return False
    expected = signature(secret, webhook_id, timestamp, body)
    # The header may list several space-separated "version,signature" pairs.
    candidates = [part.partition(",")[2] for part in given.split() if part.startswith("v3,")]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


class WebhookListener:
    """An aiohttp server on ``[wavespeed] webhook_listen`` that hands verified results on."""

    def __init__(self, listen: str, secret: str, on_result: OnResult):
        host, _, port = listen.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.secret = secret
        self.on_result = on_result
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._receive)
        return app

    async def start(self) -> int:
        """Listen; returns the port (useful when 0 was asked)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verified(self.secret, request.headers, body):
            log.warning("webhook refused: missing, wrong or stale signature (from %s)", request.remote)
            return web.json_response({"error": "invalid signature"}, status=401)
        try:
            job_id = int(request.match_info["job_id"])
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            data = data.get("data", data) if "code" in data and isinstance(data.get("data"), dict) else data
        except ValueError:
            return web.json_response({"error": "not a prediction"}, status=400)
        prediction = Prediction.from_data(data)
        if not prediction.id:
            return web.json_response({"error": "not a prediction"}, status=400)
        await self.on_result(job_id, prediction)
        return web.json_response({"ok": True})
