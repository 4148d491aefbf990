"""The Discord adapter: ``DiscordAdapter`` runs a discord.py client next to the engine (a
front, or ``kling-bot run``); ``delivery.DiscordDelivery`` delivers over REST alone (a worker)."""

from adapters.discord.bot import DiscordAdapter

__all__ = ["DiscordAdapter"]
