"""The Discord adapter: ``DiscordAdapter`` runs a discord.py client next to the engine."""

from adapters.discord.bot import DiscordAdapter

__all__ = ["DiscordAdapter"]
