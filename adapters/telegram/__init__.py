"""The Telegram adapter: ``TelegramAdapter`` runs a python-telegram-bot Application (a front,
or ``kling-bot run``); ``delivery.TelegramDelivery`` only sends, on a bare bot (a worker)."""

from adapters.telegram.bot import TelegramAdapter

__all__ = ["TelegramAdapter"]
