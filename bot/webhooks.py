"""The bot's webhook listener: WaveSpeed POSTs a task's final state to it.

Each job is submitted with its own URL, ``{webhook_url}/wavespeed/jobs/{job_id}``, so
a delivery names its job even when the submit's answer was lost. Every delivery is
verified as WaveSpeed signs it: ``webhook-signature: v3,<hex>`` where hex is
HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` under the secret
(without its ``whsec_`` prefix). A missing or wrong signature, or a timestamp more
than five minutes off, gets 401; a valid one 200, duplicates included (the engine
acts on a job's result once).

The listener faces the internet, so it spends nothing on what cannot be a delivery:
the signature headers' shape and the timestamp are checked before the body is read
(401), a body over ``MAX_BODY`` is refused (413) without being read, a connection must
send its whole request within ``READ_DEADLINE`` seconds of connecting, and at most
``MAX_CONNECTIONS`` are held at once (past that, the oldest one still sending from the
address holding the most is dropped for the newcomer: a flood from one address cannot push
out another's delivery). Each connection carries one request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from bot import metrics
from bot.wavespeed import Prediction

log = logging.getLogger(__name__)

TOLERANCE = 300  # seconds a delivery's timestamp may be off (replays are refused)
MAX_BODY = 256 * 1024  # a prediction object is a few KB
MAX_CONNECTIONS = 64  # connections held at once: far below the process's file descriptors
READ_DEADLINE = 5.0  # seconds from connecting to the request's last byte (slow senders are cut off)
MAX_ID_LENGTH = 256  # webhook-id: WaveSpeed's are "msg_" and a few dozen characters
MAX_TIMESTAMP_DIGITS = 12  # unix seconds (10 digits until the year 2286)
MAX_SIGNATURE_HEADER = 1024  # a few "version,signature" pairs
_V3_SIGNATURE = re.compile(r"v3,[0-9a-fA-F]{64}")
PATH = "/wavespeed/jobs/{job_id}"

OnResult = Callable[[int, Prediction], Awaitable[None]]


def job_url(base: str, job_id: int) -> str:
    """The URL a job is submitted with: where WaveSpeed reports its end."""
    return base.rstrip("/") + PATH.format(job_id=job_id)


def signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC WaveSpeed puts after ``v3,``."""
    key = secret.removeprefix("whsec_").encode()
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def well_formed(headers: Any) -> bool:
    """Whether the signature headers are present and shaped as WaveSpeed sends them
    (checked before the body is read: anything else is not worth reading)."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (0 < len(webhook_id) <= MAX_ID_LENGTH and webhook_id.isascii() and webhook_id.isprintable()):
        return False
    if not (0 < len(timestamp) <= MAX_TIMESTAMP_DIGITS and timestamp.isascii() and timestamp.isdigit()):
        return False
    return len(given) <= MAX_SIGNATURE_HEADER and given.isascii() and bool(_v3_signatures(given))


def fresh(headers: Any, now: float | None = None) -> bool:
    """Whether a well-formed delivery's timestamp is within ``TOLERANCE`` of now."""
    return abs((time.time() if now is None else now) - int(headers["webhook-timestamp"])) <= TOLERANCE


def _v3_signatures(given: str) -> list[str]:
    # The header may list several space-separated "version,signature" pairs.
    return [part[3:].lower() for part in given.split() if _V3_SIGNATURE.fullmatch(part)]


def verified(secret: str, headers: Any, body: bytes, now: float | None = None) -> bool:
    """Whether a delivery carries a valid, fresh signature (constant-time compare)."""
    if not (secret and well_formed(headers) and fresh(headers, now)):
        return False
    expected = signature(secret, headers["webhook-id"], headers["webhook-timestamp"], body)
    return any(hmac.compare_digest(expected, candidate) for candidate in _v3_signatures(headers["webhook-signature"]))


class _TooLarge(Exception):
    """A body went past ``MAX_BODY`` while being read."""


class ConnectionGate:
    """The listener's protocol factory: bounds the connections held at once and the time
    each may take to send its request. Past ``limit``, the oldest connection still sending
    from the address that holds the most such connections is dropped for the newcomer (a
    flood from one address evicts its own connections, not another sender's delivery); a
    connection still sending ``deadline`` seconds after connecting is dropped."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, limit: int, deadline: float):
        self._factory = factory
        self.limit = limit
        self.deadline = deadline
        self._open: set[asyncio.BaseTransport] = set()
        # connections that have not sent their whole request yet, oldest first: their deadline
        self._sending: dict[asyncio.BaseTransport, tuple[float, asyncio.TimerHandle]] = {}
        self._peers: dict[asyncio.BaseTransport, str] = {}  # the address each connection came from

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self, self._factory())

    def opened(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._open.add(transport)
        peer = transport.get_extra_info("peername")
        self._peers[transport] = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(self._open) > self.limit:
            victim = self._victim()
            if victim is None:  # all are being answered: the newcomer waits for none of them
                self._drop(transport)
                return
            self._drop(victim)
        until = loop.time() + self.deadline
        self._sending[transport] = (until, loop.call_at(until, self._expire, transport))

    def closed(self, transport: asyncio.BaseTransport) -> None:
        self._open.discard(transport)
        self._peers.pop(transport, None)
        self.received(transport)

    def _victim(self) -> asyncio.BaseTransport | None:
        """The oldest connection still sending of the address with the most such connections."""
        counts = Counter(self._peers.get(transport, "") for transport in self._sending)
        if not counts:
            return None
        busiest = max(counts, key=counts.__getitem__)  # ties: the address seen first (oldest)
        return next(transport for transport in self._sending if self._peers.get(transport, "") == busiest)

    def received(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection's request has arrived whole: no deadline any more."""
        if transport is not None and (entry := self._sending.pop(transport, None)) is not None:
            entry[1].cancel()

    def deadline_of(self, transport: asyncio.BaseTransport | None) -> float:
        """When (loop time) the connection must have sent its request by."""
        entry = self._sending.get(transport) if transport is not None else None
        return entry[0] if entry else asyncio.get_running_loop().time()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if transport in self._sending:
            self._drop(transport)

    def _drop(self, transport: asyncio.BaseTransport) -> None:
        self.received(transport)
        self._open.discard(transport)
        self._peers.pop(transport, None)
        transport.abort()  # type: ignore[attr-defined]  # frees the descriptor at once


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the gate told when it opens and closes."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol):
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._gate.opened(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._gate.closed(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class PeerErrorsAtDebug(logging.LoggerAdapter):
    """aiohttp's server log, where a request aiohttp cannot parse (which anyone on the
    internet may send, as often as they like) is a debug line, not an error traceback;
    the listener's own failures stay errors."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        level = logging.DEBUG if isinstance(exc_info, HttpProcessingError) else logging.ERROR
        self.log(level, msg, *args, exc_info=exc_info, **kwargs)


class GatedServer:
    """An aiohttp application served behind a ConnectionGate: at most ``limit`` connections,
    each sending its whole request within ``deadline``; a refused body is not drained,
    idle connections go, and malformed requests are debug lines."""

    def __init__(self, app: web.Application, *, limit: int, deadline: float, logger: logging.Logger):
        self.app, self.limit, self.deadline, self.logger = app, limit, deadline, logger
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.gate: ConnectionGate | None = None  # what a handler asks for its request's deadline

    async def start(self, host: str | None, port: int) -> int:
        """Listen; the port (useful when 0 was asked). An OSError when the bind fails."""
        self._runner = web.AppRunner(self.app, access_log=None, lingering_time=0, keepalive_timeout=self.deadline,
                                     logger=cast(logging.Logger, PeerErrorsAtDebug(self.logger, {})))
        await self._runner.setup()
        assert self._runner.server is not None
        self.gate = ConnectionGate(self._runner.server, limit=self.limit, deadline=self.deadline)
        try:
            self._server = await asyncio.get_running_loop().create_server(self.gate, host, port, reuse_address=True)
        except OSError:
            await self.stop()
            raise
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class GatedListener:
    """A listener on ``listen`` (host:port; an IPv6 host in brackets, ``[::1]:8080``; no
    host: 127.0.0.1) serving the application ``app()`` builds behind a GatedServer."""

    def __init__(self, listen: str, *, max_connections: int, read_deadline: float, logger: logging.Logger):
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.removeprefix("[").removesuffix("]") or "127.0.0.1", int(port)
        self.max_connections = max_connections
        self.read_deadline = read_deadline
        self.logger = logger
        self._server: GatedServer | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> int:
        """Listen; the port (useful when 0 was asked). An OSError when the bind fails."""
        self._server = GatedServer(self.app(), limit=self.max_connections, deadline=self.read_deadline,
                                   logger=self.logger)
        self.port = await self._server.start(self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


class WebhookListener(GatedListener):
    """An aiohttp server on ``[wavespeed] webhook_listen`` that hands verified results on."""

    def __init__(self, listen: str, secret: str, on_result: OnResult, *,
                 max_connections: int = MAX_CONNECTIONS, read_deadline: float = READ_DEADLINE):
        super().__init__(listen, max_connections=max_connections, read_deadline=read_deadline, logger=log)
        self.secret = secret
        self.on_result = on_result

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        if not (well_formed(request.headers) and fresh(request.headers)):
            log.warning("webhook refused: missing, malformed or stale signature (from %s)", request.remote)
            return _answer({"error": "invalid signature"}, 401)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _answer({"error": "body too large"}, 413)
        gate = self._server.gate if self._server is not None else None
        assert gate is not None
        try:
            async with asyncio.timeout_at(gate.deadline_of(request.transport)):
                body = await _read_capped(request)
        except _TooLarge:
            return _answer({"error": "body too large"}, 413)
        except TimeoutError:
            return _answer({"error": "request too slow"}, 408)
        except (ConnectionError, RequestPayloadError):  # gone, or a broken chunked body
            return _answer({"error": "incomplete body"}, 400)
        gate.received(request.transport)
        if not verified(self.secret, request.headers, body):
            log.warning("webhook refused: wrong signature (from %s)", request.remote)
            return _answer({"error": "invalid signature"}, 401)
        try:
            job_id = int(request.match_info["job_id"])
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            data = data.get("data", data) if "code" in data and isinstance(data.get("data"), dict) else data
        except ValueError:
            return _answer({"error": "not a prediction"}, 400)
        prediction = Prediction.from_data(data)
        if not prediction.id:
            return _answer({"error": "not a prediction"}, 400)
        await self.on_result(job_id, prediction)
        return _answer({"ok": True}, 200)


async def _read_capped(request: web.Request) -> bytes:
    """The body, or _TooLarge as soon as it passes ``MAX_BODY`` (chunked bodies included)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(data: dict[str, Any], status: int) -> web.Response:
    """A JSON answer that closes its connection: one request per connection (counted
    for /metrics by its outcome)."""
    metrics.webhook_delivery(status)
    response = web.json_response(data, status=status)
    response.force_close()
    return response
