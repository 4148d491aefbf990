"""The Telegram bot: python-telegram-bot handlers that turn chat messages into jobs.

Thin by design: it finds the photo (the message itself, or the one replied to),
downloads the bytes itself (file URLs contain the bot token and never leave here),
and hands a GenerationRequest to the engine. Rules live in ``bot/``.
"""

from __future__ import annotations

import logging
import re

from telegram import (BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message,
                      ReplyParameters, Update)
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import (AIORateLimiter, Application, ApplicationBuilder, CallbackQueryHandler,
                          CommandHandler, ContextTypes, MessageHandler, filters)

from bot import catalog
from bot.catalog import Params, ValidationError
from bot.commands import OPTION_HELP, effects_text, parse_animate
from bot.config import Settings
from bot.jobs import GenerationRequest, UserRef
from bot.service import Engine
from adapters.telegram_courier import TelegramCourier

log = logging.getLogger(__name__)

PLATFORM = "telegram"
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB to bots
PAGE_SIZE = 12  # effects per keyboard page (4 rows of 3)
CAPTION_COMMAND = re.compile(r"^/(effect|animate|avatar)(@\w+)?(\s|$)", re.IGNORECASE)

HELP = f"""I turn a photo into a short Kling AI video.

/effect hula: send a photo with this caption, or reply it to any photo. /effect alone, as a reply to a photo, shows a menu of effects.
/animate a cat dances: the same, with your own prompt. Options: {OPTION_HELP}
/avatar [prompt]: reply it to a photo, then answer my message with a voice note or audio file: the photo speaks it.

/effects: all effect names · /quota: your credits · /jobs: your jobs · /cancel N: cancel a queued job"""

COMMANDS = [
    BotCommand("effect", "Animate a photo with an effect, e.g. /effect hula"),
    BotCommand("animate", "Animate a photo from a prompt"),
    BotCommand("avatar", "Make a photo speak a voice note"),
    BotCommand("effects", "List the effects"),
    BotCommand("quota", "Your credits"),
    BotCommand("jobs", "Your jobs"),
    BotCommand("cancel", "Cancel a queued job"),
    BotCommand("help", "How to use the bot"),
]


class TelegramAdapter:
    """Owns the PTB Application; ``start``/``stop`` run it next to the other adapters."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.telegram
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
        await self.app.bot.set_my_commands(COMMANDS)
        await self.app.start()
        await self.app.updater.start_polling(allowed_updates=["message", "callback_query"])
        log.info("Telegram bot @%s is running", self.app.bot.username)

    async def stop(self) -> None:
        if self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- simple commands --------------------------------------------------------

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(HELP)

    async def _effects(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(effects_text())

    async def _quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(self.engine.balance(_user(update)).text())

    async def _jobs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        jobs = self.engine.jobs_of(_user(update))
        text = "\n".join(f"Job {job.id} ({job.label}): "
                         f"{f'queued, position {pos}' if pos else job.state.value}"
                         for job, pos in jobs) or "You have no jobs running."
        await update.effective_message.reply_text(text)

    async def _cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if len(context.args) != 1 or not context.args[0].lstrip("#").isdigit():
            await update.effective_message.reply_text("Usage: /cancel N (/jobs lists yours).")
            return
        text = await self.engine.cancel(_user(update), int(context.args[0].lstrip("#")))
        await update.effective_message.reply_text(text)

    async def _grant(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if update.effective_user.id not in self.settings.admins:
            await message.reply_text("Only the bot's admins can grant credits.")
            return
        target = message.reply_to_message.from_user if message.reply_to_message else None
        if target is None or len(context.args) != 1 or not context.args[0].lstrip("-").isdigit():
            await message.reply_text("Reply /grant N to a message of the person to give N credits.")
            return
        balance = self.engine.quota.grant(UserRef(PLATFORM, str(target.id), target.full_name),
                                          int(context.args[0]), by=f"telegram:{update.effective_user.id}")
        await message.reply_text(f"{target.full_name} now has {balance.total} credits.")

    # --- generation ---------------------------------------------------------------

    async def _effect_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._effect(update.effective_message, " ".join(context.args))

    async def _animate_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._animate(update.effective_message, " ".join(context.args))

    async def _avatar_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._avatar(update.effective_message, " ".join(context.args))

    async def _caption_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        match = CAPTION_COMMAND.match(message.caption or "")
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
            await message.reply_text("Reply /effect hula to a photo, or send a photo with that caption.")
            return
        if not name.strip():
            await message.reply_text(
                "Pick an effect:", reply_markup=self._effect_keyboard(message.from_user.id, 0),
                reply_parameters=ReplyParameters(photo.message_id, allow_sending_without_reply=True))
            return
        await self._start(message, photo, "effect", Params(effect=name))

    async def _animate(self, message: Message, text: str) -> None:
        photo = _photo_message(message)
        if photo is None:
            await message.reply_text("Reply /animate <prompt> to a photo, or send a photo with that caption.")
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
            await message.reply_text("Reply /avatar to a photo; I will then ask you for the voice note.")
            return
        ask = await message.reply_text(
            "Now reply to this message with a voice note or audio file "
            f"(up to {self.engine.settings.media.max_audio_seconds:g} s) and the photo will say it.")
        self.engine.store.put_ask(PLATFORM, ask.chat_id, ask.message_id, {
            "user": message.from_user.id, "photo_chat": photo.chat_id,
            "photo_message_id": photo.message_id, "photo": _file_of(photo), "prompt": prompt},
            self.engine.clock())

    async def _audio_answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        asked = message.reply_to_message
        ask = self.engine.store.ask(PLATFORM, asked.chat_id, asked.message_id)
        if ask is None or ask["user"] != message.from_user.id:
            return  # an ordinary reply, or someone else's voice note
        self.engine.store.drop_ask(PLATFORM, asked.chat_id, asked.message_id)
        await self._start(message, None, "avatar", Params(prompt=ask["prompt"] or None),
                          photo_file=ask["photo"], photo_message_id=ask["photo_message_id"],
                          audio_file=_file_of(message))

    async def _avatar_with_audio(self, message: Message, audio: Message, prompt: str) -> None:
        photo = message.reply_to_message if message.reply_to_message and _file_of(
            message.reply_to_message, images_only=True) else None
        if photo is None:
            await message.reply_text("Send the voice note as a reply to the photo, or reply "
                                     "/avatar to the photo first.")
            return
        await self._start(message, photo, "avatar", Params(prompt=prompt or None),
                          audio_file=_file_of(audio))

    def _effect_keyboard(self, user_id: int, page: int) -> InlineKeyboardMarkup:
        counts = self.engine.store.effect_counts()
        names = sorted(catalog.EFFECTS, key=lambda e: -counts.get(e, 0))  # stable: API order on ties
        chunk = names[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        rows = [[InlineKeyboardButton(n, callback_data=f"fx:{user_id}:{n}") for n in chunk[i:i + 3]]
                for i in range(0, len(chunk), 3)]
        nav = []
        if page > 0:
            nav.append(InlineKeyboardButton("‹ Back", callback_data=f"fxp:{user_id}:{page - 1}"))
        if (page + 1) * PAGE_SIZE < len(names):
            nav.append(InlineKeyboardButton("More ›", callback_data=f"fxp:{user_id}:{page + 1}"))
        return InlineKeyboardMarkup(rows + ([nav] if nav else []))

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        kind, owner, value = query.data.split(":", 2)
        if str(query.from_user.id) != owner:
            await query.answer("This menu belongs to whoever asked. Reply /effect to a photo "
                               "for your own.", show_alert=True)
            return
        if kind == "fxp":
            await query.answer()
            await query.edit_message_reply_markup(self._effect_keyboard(int(owner), int(value)))
            return
        photo = query.message.reply_to_message if query.message else None
        if photo is None or _file_of(photo, images_only=True) is None:
            await query.answer("I can no longer see that photo. Reply /effect to it again.", show_alert=True)
            return
        await query.answer(f"{value} it is!")
        status = await query.edit_message_text(f"Effect {value}: checking the photo…")
        await self._start(query.message, photo, "effect", Params(effect=value), status=status,
                          user=query.from_user)

    async def _start(self, message: Message, photo: Message | None, kind: str, params: Params, *,
                     model: str | None = None, status: Message | None = None, user=None,
                     photo_file: dict | None = None, photo_message_id: int | None = None,
                     audio_file: dict | None = None) -> None:
        """Download the media, hand the request to the engine, show its answer."""
        user = user or message.from_user
        if status is None:
            status = await message.reply_text("Checking the photo…")
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
            raise ValidationError(f"I could not find the {what}.")
        if ref.get("size") and ref["size"] > DOWNLOAD_LIMIT:
            raise ValidationError(f"The {what} is {ref['size'] / 1048576:.1f} MB; Telegram lets bots "
                                  "download files up to 20 MB. Send a smaller one.")
        try:
            file = await self.app.bot.get_file(ref["file_id"])
            # download_as_bytearray reads file.file_path, a URL holding the bot token: it
            # stays inside PTB and is never logged or forwarded.
            return bytes(await file.download_as_bytearray())
        except TelegramError as err:
            log.warning("download of a %s failed: %s", what, type(err).__name__)
            raise ValidationError(f"I could not download the {what} from Telegram. Try again?") from None

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("update handling failed: %s: %s", type(context.error).__name__, context.error)
        if isinstance(update, Update) and update.effective_message:
            try:
                await update.effective_message.reply_text("Sorry, something went wrong on my side.")
            except TelegramError:
                pass


def _quiet_token_loggers() -> None:
    """httpx logs every request URL at INFO and PTB logs its API URLs at DEBUG; both URLs
    contain the bot token, so those loggers never go below WARNING / INFO."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ptb = logging.getLogger("telegram")
    ptb.setLevel(max(logging.INFO, ptb.level))


def _user(update: Update) -> UserRef:
    user = update.effective_user
    return UserRef(PLATFORM, str(user.id), user.full_name)


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
