"""/stats and /balance for the bot's admins (the ids in ``[telegram] admins``).

The figures name users and chats, so they always go to the admin's private chat: asked
in a group, the group only hears that they were sent (or how to let the bot write first).
/stats sends its text, then the chart of the last 14 days as a photo.
"""

from __future__ import annotations

import asyncio

from telegram import Bot, Message, Update
from telegram.error import Forbidden
from telegram.ext import ContextTypes

from adapters.telegram.common import is_private, message_of, sender
from bot import messages
from bot.config import TelegramSettings
from bot.engine import Engine


class Figures:
    """The handlers of /stats and /balance."""

    def __init__(self, bot: Bot, settings: TelegramSettings, engine: Engine):
        self.bot = bot
        self.settings = settings
        self.engine = engine

    def _admin(self, message: Message) -> bool:
        # An anonymous admin is the group itself: never one of the configured admins.
        return message.sender_chat is None and sender(message).id in self.settings.admins

    async def stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        if not self._admin(message):
            await message.reply_text(messages.TELEGRAM_FIGURES_ADMINS_ONLY)
            return
        figures = await self.engine.stats()
        chart = await asyncio.to_thread(figures.chart_png)  # drawing takes a moment: not on the event loop
        await self._privately(message, figures.text(), chart)

    async def balance(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        if not self._admin(message):
            await message.reply_text(messages.TELEGRAM_FIGURES_ADMINS_ONLY)
            return
        await self._privately(message, await self.engine.wavespeed_balance())

    async def _privately(self, message: Message, text: str, chart: bytes | None = None) -> None:
        """``text`` (and ``chart``) in the admin's private chat; in a group, a word that they went there."""
        admin = sender(message).id
        try:
            await self.bot.send_message(admin, text)
            if chart is not None:
                await self.bot.send_photo(admin, chart, filename=messages.STATS_CHART_FILENAME)
        except Forbidden:  # the admin never started a private chat with the bot (or blocked it)
            await message.reply_text(messages.TELEGRAM_FIGURES_NEED_PRIVATE_CHAT)
            return
        if not is_private(message):
            await message.reply_text(messages.TELEGRAM_FIGURES_SENT_PRIVATELY)
