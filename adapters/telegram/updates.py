"""How updates reach the Telegram bot: one poller per bot token, or a webhook listener on
every front.

Polling (no ``[telegram] webhook_url``): Telegram serves ``getUpdates`` to one caller at a
time and answers the other 409 Conflict, so two pollers of one token would fight (each
losing updates to the other). A poller therefore first takes the store's lease
"telegram-poller:bot-<id>" (a second process on the same database sees it live and
refuses; one that was killed lets it lapse), then holds a getUpdates open for
``conflict_check_seconds``: a poller on another database ends it with 409, and this one
refuses to start instead.

Webhook mode: Telegram POSTs every update to ``webhook_url``, which may be a load balancer
in front of any number of fronts, each listening on its ``webhook_listen``. This is an
aiohttp handler of the bot's own rather than PTB's ``start_webhook``, which needs tornado,
compares the secret with ``!=``, caps no body and hands every update on before anyone could
tell a repeat. Here the ``X-Telegram-Bot-Api-Secret-Token`` header is compared in constant
time before the body is read (a missing or wrong one: 401, nothing read or handled), a body
over ``MAX_UPDATE_BYTES`` is refused (413), at most ``MAX_CONNECTIONS`` connections are
held and each must send its whole request within ``READ_DEADLINE`` seconds of connecting
(``bot.webhooks.ConnectionGate``, as for WaveSpeed's listener: anyone can reach this one
too), each connection carries one request, and an update is handled by the first front it
reaches only (``Engine.first_delivery``, shared by every process on the database): Telegram
retrying it, or the balancer routing it twice, handles nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from telegram import Update
from telegram.error import Conflict, TelegramError
from telegram.ext import Application
from telegram.request import HTTPXRequest

from adapters.telegram.common import PLATFORM, bot_api_options, updater_of
from bot.config import TelegramSettings
from bot.engine import Engine
from bot.webhooks import GatedServer

log = logging.getLogger(__name__)

UPDATE_TYPES = ["message", "callback_query", "pre_checkout_query"]  # what the bot's handlers take
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few KB (a message, the one it replies to, entities)
READ_DEADLINE = 10.0  # seconds from connecting to a delivery's last byte (slow senders are cut off)
MAX_CONNECTIONS = 64  # held at once; Telegram opens up to setWebhook's max_connections (40)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class PollerElsewhere(Exception):
    """Another process on this database polls Telegram for the bot (its name is the arg)."""


class CannotListen(Exception):
    """The webhook listener could not bind ``webhook_listen`` (the reason is the arg)."""


class WebhookFrontsRun(Exception):
    """Webhook fronts on this database take the bot's updates: polling would delete their
    webhook (the arg: the one that last said it is alive)."""


class PollerBlocksWebhook(Exception):
    """A process on this database polls for the bot: a webhook would end its getUpdates
    with 409 for as long as it runs (the arg: its name)."""


def poller_lease(bot_id: int) -> str:
    """The name of the lease a process holds while it polls Telegram for one bot."""
    return f"telegram-poller:bot-{bot_id}"


def webhook_fronts(bot_id: int) -> str:
    """The name every webhook front of one bot announces itself under, while it runs."""
    return f"telegram-webhook-fronts:bot-{bot_id}"


class Poller:
    """getUpdates for one bot token, by one process at a time (see the module's docstring)."""

    def __init__(self, app: Application, engine: Engine, settings: TelegramSettings,
                 polls: PollsSeen | None = None):
        self.app = app
        self.engine = engine
        self.settings = settings
        self.polls = polls  # the app's getUpdates connection, if it is one that tells
        self._lease = engine.lease(poller_lease(app.bot.id), on_lost=self._lost)
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the lease, check for a poller elsewhere, then poll; PollerElsewhere or
        telegram's Conflict when another one polls."""
        holder = await self._lease.acquire()
        if holder is not None:
            raise PollerElsewhere(holder)
        try:
            # Telegram keeps a webhook set until it is deleted: one that stopped fronts left is
            # deleted here, one that running fronts serve is not (they would get nothing more).
            if (front := await self.engine.announced(webhook_fronts(self.app.bot.id))) is not None:
                raise WebhookFrontsRun(front)
            await self.app.bot.delete_webhook()  # getUpdates is refused (409) while a webhook is set
            await self._listen_for_another_poller()
            await self.app.start()
            await updater_of(self.app).start_polling(allowed_updates=UPDATE_TYPES, error_callback=_polling_failed)
        except BaseException:
            await self._lease.release()
            raise

    async def stop(self) -> None:
        updater = updater_of(self.app)
        if updater.running:
            await updater.stop()
        await self._lease.release()

    def ready(self) -> bool:
        """Polling, and the last getUpdates did not fail (when ``polls`` watches them)."""
        return updater_of(self.app).running and not (self.polls is not None and self.polls.failing)

    async def _listen_for_another_poller(self) -> None:
        """Hold getUpdates open for ``conflict_check_seconds``: another poller's next call
        ends it with 409 Conflict (raised). Nothing is confirmed: no offset is sent."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.settings.conflict_check_seconds
        while (left := end - loop.time()) > 0:
            if await self.app.bot.get_updates(timeout=math.ceil(left), limit=1):
                return  # updates wait for a poller: nobody else is taking them

    def _lost(self, holder: str) -> None:
        """Another process took the lease over (this one stalled past it): it polls now."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop_polling())

    async def _stop_polling(self) -> None:
        with contextlib.suppress(RuntimeError):  # stopped meanwhile
            await updater_of(self.app).stop()


def _polling_failed(error: TelegramError) -> None:
    """One line per failed getUpdates (PTB retries it); PTB's default logs a traceback."""
    if isinstance(error, Conflict):  # a poller that started meanwhile elsewhere
        log.warning("Telegram refused getUpdates: %s", error)
    else:
        log.warning("polling Telegram failed: %s: %s", type(error).__name__, error)


class PollsSeen(HTTPXRequest):
    """The connection getUpdates goes through, remembering whether its last call failed
    (no answer, or not 200) until one is answered: PTB retries a failing poll quietly, so
    this is how ``/readyz`` tells a bot that receives from one that only keeps trying."""

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1, httpx_kwargs=bot_api_options())  # as PTB's getUpdates'
        self.failing = False

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        try:
            status, payload = await super().do_request(*args, **kwargs)
        except asyncio.CancelledError:  # a poll stopped by the bot itself says nothing of Telegram
            raise
        except BaseException:
            self.failing = True
            raise
        self.failing = status != 200
        return status, payload


class WebhookReceiver:
    """This front's listener for Telegram's deliveries, and the webhook set at start."""

    def __init__(self, app: Application, engine: Engine, settings: TelegramSettings):
        self.app = app
        self.engine = engine
        self.settings = settings
        self.listener = UpdateListener(settings.webhook_listen, urlsplit(settings.webhook_url).path or "/",
                                       settings.secret_token, self._on_update)
        self._announcer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Say this front runs (a poller starting on the database then refuses), check that
        none polls, listen, tell Telegram where updates go (every front sets the same
        webhook), then handle them (updates taken meanwhile wait in the queue): a failure
        comes before PTB's application starts, and is one line."""
        name = webhook_fronts(self.app.bot.id)
        await self.engine.announce(name)  # before the check: of a front and a poller starting at once, one refuses
        try:
            poller = self.engine.lease(poller_lease(self.app.bot.id))
            if (holder := await poller.acquire()) is not None:
                raise PollerBlocksWebhook(holder)
            await poller.release()
            await self.listener.start()
        except BaseException:
            await self.engine.unannounce(name)
            raise
        self._announcer = asyncio.create_task(self._keep_announced(name), name=f"announce {name}")
        await self.app.bot.set_webhook(self.settings.webhook_url, secret_token=self.settings.secret_token,
                                       allowed_updates=UPDATE_TYPES, drop_pending_updates=False)
        await self.app.start()

    async def stop(self) -> None:
        """Stop listening. The webhook stays set: other fronts may still be serving it (so
        this front's announcement lapses rather than being withdrawn)."""
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        await self.listener.stop()

    def ready(self) -> bool:
        """Listening for Telegram's deliveries."""
        return self.listener.serving

    async def _keep_announced(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.engine.settings.storage.lease_seconds / 3)
            try:
                await self.engine.announce(name)
            except Exception as err:  # e.g. the database busy for long: the next turn tries again
                log.warning("%s not renewed: %s: %s", name, type(err).__name__, err)

    async def _on_update(self, data: dict[str, Any]) -> bool:
        """Hand a delivered update to the handlers unless a front already took it; False
        when it is no update at all."""
        try:
            update = Update.de_json(data, self.app.bot)
        except (AttributeError, KeyError, OverflowError, RecursionError, TypeError, ValueError):
            return False  # e.g. a field of the wrong type, a date past time_t: never readable
        if await self.engine.first_delivery(PLATFORM, self.app.bot.id, update.update_id):
            await self.app.update_queue.put(update)
        else:
            log.info("Telegram update %s was delivered before: not handled again", update.update_id)
        return True


class UpdateListener:
    """An aiohttp server taking Telegram's POSTs at ``path`` on ``listen`` (host:port)."""

    def __init__(self, listen: str, path: str, secret: str,
                 on_update: Callable[[dict[str, Any]], Awaitable[bool]]):
        host, _, port = listen.rpartition(":")
        self.listen = listen
        self.host, self.port = host.removeprefix("[").removesuffix("]"), int(port)
        self.path = path
        self.secret = secret.encode()
        self.on_update = on_update
        self._server: GatedServer | None = None

    async def start(self) -> int:
        """Listen; the port (useful when 0 was asked). CannotListen when the bind fails."""
        app = web.Application(client_max_size=MAX_UPDATE_BYTES)
        app.router.add_post(self.path, self._receive)
        self._server = GatedServer(app, limit=MAX_CONNECTIONS, deadline=READ_DEADLINE, logger=log)
        try:
            self.port = await self._server.start(self.host or None, self.port)
        except OSError as err:
            raise CannotListen(str(err.strerror or err)) from None
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode(errors="replace")
        if not hmac.compare_digest(given, self.secret):  # constant time: no guessing it byte by byte
            log.warning("Telegram update refused: missing or wrong secret token (from %s)", request.remote)
            return _answer(401)
        if request.content_length is not None and request.content_length > MAX_UPDATE_BYTES:
            return _answer(413)
        gate = self._server.gate if self._server is not None else None
        assert gate is not None
        try:
            async with asyncio.timeout_at(gate.deadline_of(request.transport)):
                body = await request.read()
            gate.received(request.transport)
            data = json.loads(body)
        except web.HTTPRequestEntityTooLarge:  # a chunked body past client_max_size
            return _answer(413)
        except TimeoutError:
            return _answer(408)
        except (ConnectionError, RequestPayloadError, ValueError, RecursionError):  # RecursionError: deep nesting
            return _answer(400)
        if not (isinstance(data, dict) and type(data.get("update_id")) is int):
            return _answer(400)
        try:
            handled = await self.on_update(data)
        except Exception as err:  # e.g. the database unreachable: Telegram delivers it again later
            log.error("Telegram update not taken: %s: %s", type(err).__name__, err)
            return _answer(500)
        return _answer(200 if handled else 400)


def _answer(status: int) -> web.Response:
    """An empty answer that closes its connection: one request per connection, so each one's
    deadline covers all it sends."""
    response = web.Response(status=status)
    response.force_close()
    return response
