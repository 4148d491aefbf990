"""Discord delivery without the gateway: what a ``--role worker`` process runs.

A worker posts progress and videos the way the courier always has, from each job's
``reply_to``: interaction follow-ups by their token (``discord.Webhook.partial``),
channel messages by id (``get_partial_messageable``), DMs by the user's id
(``create_dm`` with a ``discord.Object``). None of these needs the gateway's cache, so
a plain ``discord.Client`` that only logs in over REST is enough: it never connects,
and receives no event. The gateway client (``bot.py``) builds on the helpers here
too; nothing here imports it.
"""

from __future__ import annotations

import logging

import aiohttp
import discord
import yarl

from adapters.chat import register
from adapters.discord.courier import DiscordCourier
from adapters.discord.kit import PLATFORM
from bot import messages
from bot.config import DiscordSettings, Settings
from bot.engine import Engine

log = logging.getLogger(__name__)


def point_at(settings: DiscordSettings) -> None:
    """Aim discord.py at the configured REST API (and gateway): it reads both addresses
    from class attributes, so this holds for every client of the process."""
    discord.http.Route.BASE = settings.api_base_url.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def quiet_voice() -> None:
    """The bot never joins voice: no warning on stderr that voice libraries are missing."""
    discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False


def start_problem(error: Exception, settings: DiscordSettings) -> str | None:
    """Why the bot could not start, in one line, for the errors discord.py raises at start
    (login, command sync); None for others."""
    if isinstance(error, discord.LoginFailure):
        return messages.DISCORD_TOKEN_REJECTED
    if isinstance(error, (aiohttp.ClientConnectionError, TimeoutError)):
        return messages.cannot_reach("Discord", settings.api_base_url, "[discord] api_base_url",
                                     str(error) or type(error).__name__)
    if isinstance(error, discord.DiscordException):
        return messages.refused_at_start("Discord", str(error))
    return None


class DiscordDelivery:
    """The Discord courier on a client logged in for HTTP only; ``start``/``stop`` as a
    chat adapter's, so the composition root runs it in the adapter's place."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.discord
        quiet_voice()
        # Intents only matter to a gateway session, which this client never opens; guilds
        # keeps discord.py from warning that its (unused) cache would miss servers.
        self.client = discord.Client(intents=discord.Intents(guilds=True))
        self.courier = DiscordCourier(self.client, self.settings, engine)
        register(engine, PLATFORM, self.courier)

    async def start(self) -> None:
        point_at(self.settings)
        await self.client.login(self.settings.token)  # REST only: never connect()
        log.info("Discord bot %s delivers (no gateway connection)", self.client.user)

    def start_problem(self, error: Exception) -> str | None:
        return start_problem(error, self.settings)

    def ready(self) -> bool:
        """Logged in over REST and not closed (``/readyz``)."""
        return self.client.user is not None and not self.client.is_closed()

    async def stop(self) -> None:
        await self.client.close()
