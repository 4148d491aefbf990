"""Telegram delivery without receiving updates: what a ``--role worker`` process runs.

The Bot API is plain HTTPS, so a worker needs no Application, no Updater and never
calls getUpdates or getWebhookInfo: one bot object, initialized (getMe), with the rate
limiter the adapter's Application uses, sends the progress edits and videos from each
job's ``reply_to``. The chat adapter (``bot.py``) builds on the helpers here too;
nothing here imports it.
"""

from __future__ import annotations

import json
import logging

from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, TelegramError
from telegram.ext import AIORateLimiter, Defaults, ExtBot

from adapters.chat import register
from adapters.telegram.common import PLATFORM, bot_api_request
from adapters.telegram.courier import TelegramCourier
from adapters.telegram.menus import Menus
from adapters.telegram.updates import CannotListen, PollerBlocksWebhook, PollerElsewhere, WebhookFrontsRun
from bot import messages
from bot.config import Settings, TelegramSettings
from bot.engine import Engine

log = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 3  # a call Telegram answers "retry after" is tried again this often
CONNECTIONS = 256  # PTB's Application default: many chats' uploads and edits at once


def rate_limiter() -> AIORateLimiter:
    """PTB's limiter, as every role's bot uses it: spaces calls per chat and overall, and
    retries a call Telegram answers with RetryAfter."""
    return AIORateLimiter(max_retries=RATE_LIMIT_RETRIES)


def reply_defaults() -> Defaults:
    """Every role's defaults: a reply is sent even when the message it answers is gone (its
    sender or a group's moderator deleted it meanwhile), which the Bot API refuses otherwise;
    PTB's replies in groups (``reply_text``) quote the message they answer."""
    return Defaults(allow_sending_without_reply=True)


def http_bot(settings: TelegramSettings) -> ExtBot[int]:
    """A bot object for sending only: the configured API, the rate limiter, no updates."""
    return ExtBot(settings.token, base_url=settings.base_url, base_file_url=settings.base_file_url,
                  request=bot_api_request(CONNECTIONS),
                  # never polled; else PTB builds one, loading a TLS context of its own
                  get_updates_request=bot_api_request(1), rate_limiter=rate_limiter(),
                  defaults=reply_defaults())


class TelegramDelivery:
    """The Telegram courier on an HTTP-only bot; ``start``/``stop`` as a chat adapter's, so
    the composition root runs it in the adapter's place."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.telegram
        quiet_token_loggers()
        self.bot = http_bot(self.settings)
        self.started = False
        # The buttons under a video come with it, whichever process delivers it.
        self.courier = TelegramCourier(self.bot, self.settings, Menus(engine))
        register(engine, PLATFORM, self.courier)

    async def start(self) -> None:
        await self.bot.initialize()  # getMe: checks the token; nothing is received
        self.started = True
        log.info("Telegram bot @%s delivers (no updates received here)", self.bot.username)

    def ready(self) -> bool:
        """Logged in (getMe answered) and not stopped (``/readyz``)."""
        return self.started

    def start_problem(self, error: Exception) -> str | None:
        return start_problem(error, self.settings)

    async def stop(self) -> None:
        self.started = False
        await self.bot.shutdown()


def start_problem(error: Exception, settings: TelegramSettings) -> str | None:
    """Why the bot could not start, in one line, for the errors PTB raises at start; None for
    others. Never str(InvalidToken): PTB puts the token itself in that message."""
    if isinstance(error, TelegramError) and _not_json(error):  # e.g. an HTML page: not the Bot API
        return messages.not_a_bot_api(settings.base_url)
    if isinstance(error, PollerElsewhere):
        return messages.telegram_poller_running(str(error))
    if isinstance(error, WebhookFrontsRun):
        return messages.telegram_webhook_fronts_run(str(error))
    if isinstance(error, PollerBlocksWebhook):
        return messages.telegram_poller_blocks_webhook(str(error))
    if isinstance(error, Conflict):  # getUpdates at start: a poller on another database
        return messages.telegram_polled_elsewhere(str(error))
    if isinstance(error, CannotListen):
        return messages.telegram_cannot_listen(settings.webhook_listen, str(error))
    if isinstance(error, InvalidToken):
        return messages.TELEGRAM_TOKEN_REJECTED
    if isinstance(error, NetworkError) and not isinstance(error, BadRequest):
        return messages.cannot_reach("Telegram", settings.base_url, "[telegram] base_url", str(error))
    if isinstance(error, TelegramError):
        return messages.refused_at_start("Telegram", str(error))
    return None


def _not_json(error: TelegramError) -> bool:
    """Whether PTB failed to read the answer as JSON: the server is not a Bot API server
    (the real one answers even a wrong token or path with a JSON error)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, json.JSONDecodeError):
            return True
        cause = cause.__cause__
    return False


def quiet_token_loggers() -> None:
    """httpx logs every request URL at INFO and PTB logs its API URLs at DEBUG; both URLs
    contain the bot token, so those loggers never go below WARNING / INFO."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # A reply that is not JSON is logged there with a traceback and the whole body; PTB
    # raises it too, and that error is what is reported (one line at start).
    logging.getLogger("telegram.request.BaseRequest").setLevel(logging.CRITICAL)
    ptb = logging.getLogger("telegram")
    ptb.setLevel(max(logging.INFO, ptb.level))
