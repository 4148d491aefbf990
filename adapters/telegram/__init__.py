"""The Telegram adapter: ``TelegramAdapter`` runs a python-telegram-bot Application."""

from adapters.telegram.bot import TelegramAdapter

__all__ = ["TelegramAdapter"]
