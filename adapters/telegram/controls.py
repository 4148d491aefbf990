"""The admins' controls as Telegram commands: /pause [reason], /resume, /ban, /unban,
/setcredits and /credits (show). Admins are the ids in ``[telegram] admins``, never an
anonymous admin (a message sent as the group hides who wrote it).

Whom a command is about: the sender of the message it replies to, or a user id typed
first (``/ban 123456 spam``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Message, Update
from telegram.ext import ContextTypes

from adapters.telegram.common import PLATFORM, args_of, message_of, sender, sender_ref
from adapters.text_commands import parse_whole_number
from bot import messages
from bot.config import TelegramSettings
from bot.engine import Engine
from bot.jobs import UserRef

ID_BOUND = 2**63  # Telegram's ids (users; negative: the chats a message is sent as) are smaller
MAX_CREDITS = 1_000_000_000  # credits /setcredits may set; far below SQLite's integers

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


class AdminCommands:
    """The handlers; ``handlers()`` names them by command for the adapter to register."""

    def __init__(self, settings: TelegramSettings, engine: Engine):
        self.settings = settings
        self.engine = engine

    def handlers(self) -> dict[str, Handler]:
        return {"pause": self._pause, "resume": self._resume, "ban": self._ban, "unban": self._unban,
                "setcredits": self._set_credits, "credits": self._credits}

    def _is_admin(self, message: Message) -> bool:
        return message.sender_chat is None and sender(message).id in self.settings.admins

    async def _admin_message(self, update: Update) -> Message | None:
        """The command's message when an admin sent it; else None, the sender told."""
        message = message_of(update)
        if not self._is_admin(message):
            await message.reply_text(messages.TELEGRAM_ADMIN_COMMAND_ONLY)
            return None
        return message

    @staticmethod
    def _target(message: Message, args: list[str]) -> tuple[UserRef | None, list[str]]:
        """Whom the command is about (the replied-to message's sender, else a user id typed
        first) and the arguments left."""
        if message.reply_to_message is not None:
            return sender_ref(message.reply_to_message), args
        if args and (user_id := parse_whole_number(args[0], signed=True)) is not None and abs(user_id) < ID_BOUND:
            # No name: an id says nothing of what the user is called (their row keeps theirs).
            return UserRef(PLATFORM, str(user_id)), args[1:]
        return None, args

    async def _pause(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        args = args_of(context)
        refund = "--refund" in args
        reason = " ".join(arg for arg in args if arg != "--refund")
        refunded = await self.engine.pause(reason, sender_ref(message).key, refund=refund)
        await message.reply_text(messages.now_paused(reason.strip(), len(refunded)))

    async def _resume(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        was = await self.engine.resume(sender_ref(message).key)
        await message.reply_text(messages.NOW_RESUMED if was else messages.NOT_PAUSED)

    async def _ban(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        target, rest = self._target(message, args_of(context))
        if target is None:
            await message.reply_text(messages.TELEGRAM_BAN_USAGE)
            return
        if refusal := self._unbannable(message, target, context):
            await message.reply_text(refusal)
            return
        fresh = await self.engine.ban(target.key, sender_ref(message).key, " ".join(rest))
        await message.reply_text(messages.now_banned(target.name or target.user_id, already=not fresh))

    def _unbannable(self, message: Message, target: UserRef, context: ContextTypes.DEFAULT_TYPE) -> str | None:
        """Why banning ``target`` would stop no one: a bot (this one, typed or replied to),
        or one of the admins; None when it may be banned."""
        replied = message.reply_to_message
        by_bot = replied is not None and replied.sender_chat is None and sender(replied).is_bot
        if by_bot or target.user_id == str(context.bot.id):
            return messages.BAN_A_BOT
        if target.user_id.lstrip("-").isdigit() and int(target.user_id) in self.settings.admins:
            return messages.ban_an_admin("telegram")
        return None

    async def _unban(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        target, rest = self._target(message, args_of(context))
        if target is None or rest:
            await message.reply_text(messages.TELEGRAM_UNBAN_USAGE)
            return
        was = await self.engine.unban(target.key)
        await message.reply_text(messages.now_unbanned(target.name or target.user_id, was))

    async def _set_credits(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        target, rest = self._target(message, args_of(context))
        amount = parse_whole_number(rest[0]) if len(rest) == 1 else None
        if target is None or amount is None or amount > MAX_CREDITS:
            await message.reply_text(messages.TELEGRAM_SET_USAGE)
            return
        balance = await self.engine.set_credits(target, amount, by=sender_ref(message).key)
        await message.reply_text(messages.now_has_credits(target.name or target.user_id, balance.total))

    async def _credits(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := await self._admin_message(update)) is None:
            return
        args = args_of(context)
        target, rest = self._target(message, args[1:] if args[:1] == ["show"] else args)
        if target is None or rest:
            await message.reply_text(messages.TELEGRAM_CREDITS_USAGE)
            return
        await message.reply_text(await self.engine.credits_report(target, target.name or target.user_id))
