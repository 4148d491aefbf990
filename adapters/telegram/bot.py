"""The Telegram bot: python-telegram-bot handlers that turn chat messages into jobs.

Thin by design: it finds the photo (the message itself, or the one replied to),
downloads the bytes itself (file URLs contain the bot token and never leave here),
and hands a GenerationRequest to the engine. Rules live in ``bot/``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TypeVar

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update, User
from telegram.constants import ChatType
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    Updater,
    filters,
)

from adapters.chat import jobs_text
from adapters.telegram.courier import TelegramCourier
from adapters.text_commands import cancel_job, parse_animate, parse_whole_number
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.config import Settings, TelegramSettings
from bot.engine import Engine
from bot.jobs import GenerationRequest, UserRef

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB to bots
PAGE_SIZE = 12  # effects per keyboard page (4 rows of 3)
MAX_GRANT = 1_000_000_000  # credits one /grant may give or take; far below SQLite's integers
CAPTION_COMMAND = re.compile(r"^/(effect|animate|avatar)(@\w+)?(\s|$)", re.IGNORECASE)

MENU_COMMANDS = ["effect", "animate", "avatar", "effects", "quota", "jobs", "cancel", "help"]


class TelegramAdapter:
    """Owns the PTB Application; ``start``/``stop`` run it next to the other adapters."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.telegram
        self.media = settings.media
        self.engine = engine
        _quiet_token_loggers()
        self.app: Application = (
            ApplicationBuilder().token(self.settings.token)
            .base_url(self.settings.base_url).base_file_url(self.settings.base_file_url)
            .rate_limiter(AIORateLimiter(max_retries=3))
            .concurrent_updates(True)  # one user's download must not hold up the others
            .build())
        self.courier = TelegramCourier(self.app.bot, self.settings)
        engine.register(PLATFORM, self.courier)
        self._add_handlers()

    def _add_handlers(self) -> None:
        where = filters.Chat(chat_id=self.settings.allowed_chats) if self.settings.allowed_chats \
            else filters.ALL
        commands = {
            "start": self._help, "help": self._help, "effects": self._effects,
            "quota": self._quota, "jobs": self._jobs, "cancel": self._cancel,
            "effect": self._effect_command, "animate": self._animate_command,
            "avatar": self._avatar_command, "grant": self._grant,
        }
        for name, callback in commands.items():
            self.app.add_handler(CommandHandler(name, callback, filters=where))
        media = filters.PHOTO | filters.Document.IMAGE | filters.VOICE | filters.AUDIO
        self.app.add_handler(MessageHandler(where & media & filters.CaptionRegex(CAPTION_COMMAND),
                                            self._caption_command))
        self.app.add_handler(MessageHandler(where & filters.REPLY & (filters.VOICE | filters.AUDIO),
                                            self._audio_answer))
        self.app.add_handler(CallbackQueryHandler(self._on_button, pattern=r"^fxp?:"))
        self.app.add_error_handler(self._on_error)

    async def start(self) -> None:
        await self.app.initialize()
        await self.app.bot.set_my_commands(
            [BotCommand(name, messages.COMMANDS[name]) for name in MENU_COMMANDS])
        await self.app.start()
        await _updater(self.app).start_polling(allowed_updates=["message", "callback_query"])
        log.info("Telegram bot @%s is running", self.app.bot.username)

    def start_problem(self, error: Exception) -> str | None:
        return start_problem(error, self.settings)

    async def stop(self) -> None:
        updater = _updater(self.app)
        if updater.running:
            await updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- simple commands --------------------------------------------------------

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _message(update).reply_text(messages.telegram_help(catalog.animate_options()))

    async def _effects(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _message(update).reply_text(messages.effects_list(catalog.EFFECTS))

    async def _quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _message(update).reply_text(self.engine.balance(_user(update)).text())

    async def _jobs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _message(update).reply_text(jobs_text(self.engine, _user(update)))

    async def _cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = _args(context)
        text = messages.TELEGRAM_CANCEL_USAGE if len(args) != 1 else await cancel_job(
            self.engine, _user(update), args[0], messages.TELEGRAM_CANCEL_USAGE)
        await _message(update).reply_text(text)

    async def _grant(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, args = _message(update), _args(context)
        if _effective_user(update).id not in self.settings.admins:
            await message.reply_text(messages.TELEGRAM_ADMINS_ONLY)
            return
        target = message.reply_to_message.from_user if message.reply_to_message else None
        amount = parse_whole_number(args[0], signed=True) if len(args) == 1 else None
        if target is None or amount is None or abs(amount) > MAX_GRANT:
            await message.reply_text(messages.TELEGRAM_GRANT_USAGE)
            return
        balance = self.engine.grant(UserRef(PLATFORM, str(target.id), target.full_name),
                                    amount, by=f"telegram:{_effective_user(update).id}")
        await message.reply_text(messages.now_has_credits(target.full_name, balance.total))

    # --- generation ---------------------------------------------------------------

    async def _effect_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._effect(_message(update), " ".join(_args(context)))

    async def _animate_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._animate(_message(update), " ".join(_args(context)))

    async def _avatar_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._avatar(_message(update), " ".join(_args(context)))

    async def _caption_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = _message(update)
        match = CAPTION_COMMAND.match(message.caption or "")
        assert match is not None  # the CaptionRegex filter only lets matching captions through
        mention = (match.group(2) or "").lstrip("@")
        if mention and mention.lower() != (context.bot.username or "").lower():
            return  # a command for another bot in the group
        rest = (message.caption or "")[match.end():].strip()
        command = match.group(1).lower()
        if command == "avatar" and (message.voice or message.audio):
            await self._avatar_with_audio(message, message, rest)
            return
        handler = {"effect": self._effect, "animate": self._animate, "avatar": self._avatar}[command]
        await handler(message, rest)

    async def _effect(self, message: Message, name: str) -> None:
        photo = _photo_message(message)
        if photo is None:
            await message.reply_text(messages.EFFECT_NEEDS_PHOTO)
            return
        if not name.strip():
            await message.reply_text(
                messages.PICK_EFFECT, reply_markup=self._effect_keyboard(_sender(message).id, 0),
                reply_parameters=ReplyParameters(photo.message_id, allow_sending_without_reply=True))
            return
        await self._start(message, photo, "effect", Params(effect=name))

    async def _animate(self, message: Message, text: str) -> None:
        photo = _photo_message(message)
        if photo is None:
            await message.reply_text(messages.ANIMATE_NEEDS_PHOTO)
            return
        try:
            args = parse_animate(text)
        except ValidationError as err:
            await message.reply_text(str(err))
            return
        await self._start(message, photo, "animate", args.params, model=args.model)

    async def _avatar(self, message: Message, prompt: str) -> None:
        photo = _photo_message(message)
        if photo is None:
            await message.reply_text(messages.AVATAR_NEEDS_PHOTO)
            return
        ask = await message.reply_text(messages.ask_for_audio(self.media.max_audio_seconds))
        self.engine.remember_ask(PLATFORM, ask.chat_id, ask.message_id, {
            "user": _sender(message).id, "photo_chat": photo.chat_id,
            "photo_message_id": photo.message_id, "photo": _file_of(photo), "prompt": prompt})

    async def _audio_answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = _message(update)
        asked = message.reply_to_message
        assert asked is not None  # the handler's filters.REPLY guarantees it
        ask = self.engine.pending_ask(PLATFORM, asked.chat_id, asked.message_id)
        if ask is None or ask["user"] != _sender(message).id:
            return  # an ordinary reply, or someone else's voice note
        self.engine.forget_ask(PLATFORM, asked.chat_id, asked.message_id)
        await self._start(message, None, "avatar", Params(prompt=ask["prompt"] or None),
                          photo_file=ask["photo"], photo_message_id=ask["photo_message_id"],
                          audio_file=_file_of(message))

    async def _avatar_with_audio(self, message: Message, audio: Message, prompt: str) -> None:
        photo = message.reply_to_message if message.reply_to_message and _file_of(
            message.reply_to_message, images_only=True) else None
        if photo is None:
            await message.reply_text(messages.AVATAR_AUDIO_NEEDS_PHOTO)
            return
        await self._start(message, photo, "avatar", Params(prompt=prompt or None),
                          audio_file=_file_of(audio))

    def _effect_keyboard(self, user_id: int, page: int) -> InlineKeyboardMarkup:
        names = self.engine.popular_effects()
        chunk = names[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        rows = [[InlineKeyboardButton(n, callback_data=f"fx:{user_id}:{n}") for n in chunk[i:i + 3]]
                for i in range(0, len(chunk), 3)]
        nav = []
        if page > 0:
            nav.append(InlineKeyboardButton(messages.MENU_BACK, callback_data=f"fxp:{user_id}:{page - 1}"))
        if (page + 1) * PAGE_SIZE < len(names):
            nav.append(InlineKeyboardButton(messages.MENU_MORE, callback_data=f"fxp:{user_id}:{page + 1}"))
        return InlineKeyboardMarkup(rows + ([nav] if nav else []))

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None  # the handler's pattern matched the data
        kind, owner, value = query.data.split(":", 2)
        # Buttons pass no message filter: the chat is checked here (a menu may predate the list).
        chat = query.message.chat.id if query.message else None
        if self.settings.allowed_chats and chat not in self.settings.allowed_chats:
            await query.answer(messages.CHAT_NOT_ALLOWED, show_alert=True)
            return
        if str(query.from_user.id) != owner:
            await query.answer(messages.MENU_NOT_YOURS, show_alert=True)
            return
        if kind == "fxp":
            await query.answer()
            await query.edit_message_reply_markup(self._effect_keyboard(int(owner), int(value)))
            return
        # the menu message itself; an InaccessibleMessage once it is too old for the Bot API
        message = query.message if isinstance(query.message, Message) else None
        photo = message.reply_to_message if message else None
        if message is None or photo is None or _file_of(photo, images_only=True) is None:
            await query.answer(messages.PHOTO_GONE, show_alert=True)
            return
        await query.answer(messages.effect_chosen_toast(value))
        status = await query.edit_message_text(messages.effect_checking(value))
        assert isinstance(status, Message)  # True comes back only for inline messages
        await self._start(message, photo, "effect", Params(effect=value), status=status,
                          user=query.from_user)

    async def _start(self, message: Message, photo: Message | None, kind: catalog.Kind, params: Params, *,
                     model: str | None = None, status: Message | None = None, user: User | None = None,
                     photo_file: dict | None = None, photo_message_id: int | None = None,
                     audio_file: dict | None = None) -> None:
        """Download the media, hand the request to the engine, show its answer."""
        user = user or _sender(message)
        if status is None:
            status = await message.reply_text(messages.CHECKING_PHOTO)
        try:
            image = await self._download(photo_file or _file_of(photo), "photo")
            audio = await self._download(audio_file, "audio") if audio_file else None
        except ValidationError as err:
            await self.courier.edit(status.chat_id, status.message_id, str(err))
            return
        request = GenerationRequest(
            UserRef(PLATFORM, str(user.id), user.full_name), kind, image, params, model=model,
            audio=audio, reply_to={
                "chat_id": status.chat_id, "status_message_id": status.message_id,
                "photo_message_id": photo.message_id if photo else photo_message_id,
                "group": status.chat.type != ChatType.PRIVATE if status.chat else False})
        answer = await self.engine.accept(request)
        # through the courier: its edits of this message are kept in order
        await self.courier.edit(status.chat_id, status.message_id, answer.text)

    async def _download(self, ref: dict | None, what: str) -> bytes:
        if not ref:
            raise ValidationError(messages.cannot_find(what))
        self._check_size(ref.get("size"), what)
        try:
            file = await self.app.bot.get_file(ref["file_id"])
            self._check_size(file.file_size, what)  # the message may not have said
            # download_as_bytearray reads file.file_path, a URL holding the bot token: it
            # stays inside PTB and is never logged or forwarded.
            return bytes(await file.download_as_bytearray())
        except TelegramError as err:
            log.warning("download of a %s failed: %s", what, type(err).__name__)
            raise ValidationError(messages.download_failed(what, "Telegram")) from None

    def _check_size(self, size: int | None, what: str) -> None:
        """Refuse a file over what the Bot API serves or ``[media] max_download_mb``."""
        limit = int(self.media.max_download_mb * 1024 * 1024)
        if size and size > DOWNLOAD_LIMIT:
            raise ValidationError(messages.telegram_file_too_large(what, size))
        if size and size > limit:
            raise ValidationError(messages.media_too_large(what, size, limit))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("update handling failed: %s: %s", type(context.error).__name__, context.error)
        if isinstance(update, Update) and update.effective_message:
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text(messages.SOMETHING_WENT_WRONG)


def start_problem(error: Exception, settings: TelegramSettings) -> str | None:
    """Why the bot could not start, in one line, for the errors PTB raises at start; None for
    others. Never str(InvalidToken): PTB puts the token itself in that message."""
    if isinstance(error, InvalidToken):
        return messages.TELEGRAM_TOKEN_REJECTED
    if isinstance(error, NetworkError) and not isinstance(error, BadRequest):
        return messages.cannot_reach("Telegram", settings.base_url, "[telegram] base_url", str(error))
    if isinstance(error, TelegramError):
        return messages.refused_at_start("Telegram", str(error))
    return None


def _quiet_token_loggers() -> None:
    """httpx logs every request URL at INFO and PTB logs its API URLs at DEBUG; both URLs
    contain the bot token, so those loggers never go below WARNING / INFO."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ptb = logging.getLogger("telegram")
    ptb.setLevel(max(logging.INFO, ptb.level))


def _user(update: Update) -> UserRef:
    user = _effective_user(update)
    return UserRef(PLATFORM, str(user.id), user.full_name)


# PTB types these as optional because some update types lack them; the handlers above
# only receive updates that have them, so a missing one is a bug worth an error.

def _present(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the update carries no {what}")
    return value


def _message(update: Update) -> Message:
    return _present(update.effective_message, "message")


def _effective_user(update: Update) -> User:
    return _present(update.effective_user, "user")


def _sender(message: Message) -> User:
    return _present(message.from_user, "sender")  # set for every message outside channels


def _args(context: ContextTypes.DEFAULT_TYPE) -> list[str]:
    return _present(context.args, "command arguments")  # CommandHandler always sets them


def _updater(app: Application) -> Updater:
    return _present(app.updater, "updater")  # ApplicationBuilder builds one unless told not to


def _photo_message(message: Message) -> Message | None:
    """The message holding the photo: this one (photo + caption) or the one replied to."""
    for candidate in (message, message.reply_to_message):
        if candidate is not None and _file_of(candidate, images_only=True):
            return candidate
    return None


def _file_of(message: Message | None, images_only: bool = False) -> dict | None:
    """The file id and size of a message's photo, image document, voice note or audio."""
    if message is None:
        return None
    if message.photo:
        largest = message.photo[-1]
        return {"file_id": largest.file_id, "size": largest.file_size}
    document = message.document
    if document and (document.mime_type or "").startswith("image/"):
        return {"file_id": document.file_id, "size": document.file_size}
    if images_only:
        return None
    for media in (message.voice, message.audio):
        if media:
            return {"file_id": media.file_id, "size": media.file_size}
    if document and (document.mime_type or "").startswith("audio/"):
        return {"file_id": document.file_id, "size": document.file_size}
    return None
