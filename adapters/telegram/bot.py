"""The Telegram bot: python-telegram-bot handlers that turn chat messages into jobs.

Thin by design: it finds the photo (the message itself, or the one replied to), asks
the engine whether the request can go ahead, downloads the bytes itself (file URLs
contain the bot token and never leave here), and hands a GenerationRequest to the
engine. Rules live in ``bot/``; keyboards in ``menus``, buttons and answers to the
bot's questions in ``flows``, checks and downloads in ``starter``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime

from telegram import Bot, BotCommand, Message, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.chat import jobs_text, register
from adapters.telegram.common import (
    PLATFORM,
    args_of,
    bot_api_request,
    file_of,
    force_reply,
    is_private,
    message_of,
    photo_message,
    sender,
    sender_first_name,
    sender_id,
    sender_ref,
)
from adapters.telegram.controls import AdminCommands
from adapters.telegram.courier import TelegramCourier
from adapters.telegram.delivery import CONNECTIONS, quiet_token_loggers, rate_limiter, reply_defaults, start_problem
from adapters.telegram.figures import Figures
from adapters.telegram.flows import ASK_AUDIO, Buttons, Replies
from adapters.telegram.menus import PATTERN, Menus
from adapters.telegram.payments import StarsPayments
from adapters.telegram.starter import JobStarter
from adapters.telegram.updates import Poller, PollsSeen, WebhookReceiver
from adapters.text_commands import cancel_job, parse_animate, parse_effect, parse_whole_number
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.config import Settings
from bot.engine import Engine, place_key_of
from bot.jobs import Press, UserRef

log = logging.getLogger(__name__)

HISTORY_LOOKBACK, HISTORY_SHOWN = 50, 10  # a user's jobs searched, and listed, by /history
MAX_GRANT = 1_000_000_000  # credits one /grant may give or take; far below SQLite's integers
CAPTION_COMMAND = re.compile(r"^/(effect|animate|avatar)(@\w+)?(\s|$)", re.IGNORECASE)

MENU_COMMANDS = ["effect", "animate", "avatar", "effects", "models", "history", "quota", "jobs", "cancel", "help"]
PAYMENT_COMMANDS = ["buy", "paysupport"]  # in the menu while packs are sold on Telegram


class TelegramAdapter:
    """Owns the PTB Application; ``start``/``stop`` run it next to the other adapters."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings.telegram
        self.media = settings.media
        self.engine = engine
        quiet_token_loggers()
        self.polls = PollsSeen()  # getUpdates' connection: tells /readyz whether polls are answered
        self.app: Application = (
            ApplicationBuilder().token(self.settings.token)
            .base_url(self.settings.base_url).base_file_url(self.settings.base_file_url)
            .rate_limiter(rate_limiter()).defaults(reply_defaults())
            .request(bot_api_request(CONNECTIONS)).get_updates_request(self.polls)
            .concurrent_updates(True)  # one user's download must not hold up the others
            .build())
        self.menus = Menus(engine)
        self.courier = TelegramCourier(self.app.bot, self.settings, self.menus)
        self.starter = JobStarter(self.app.bot, engine, self.courier, self.media)
        self.buttons = Buttons(self.app.bot, self.settings, engine, self.menus, self.starter, self.courier)
        self.replies = Replies(engine, self.starter)
        self.figures = Figures(self.app.bot, self.settings, engine)
        self.payments = StarsPayments(self.app.bot, self.settings, settings.payments, engine)
        self.starter.offer = self.payments.keyboard  # refusals for lack of credits carry the packs
        self.receiver: Poller | WebhookReceiver | None = None
        register(engine, PLATFORM, self.courier)
        self._add_handlers()

    def _add_handlers(self) -> None:
        # First: a payment's service message must reach its handler, not the catch-all ones below.
        self.payments.add_handlers(self.app)
        where = filters.Chat(chat_id=self.settings.allowed_chats) if self.settings.allowed_chats \
            else filters.ALL
        commands = {
            "start": self._welcome, "help": self._help, "effects": self._effects, "models": self._models,
            "quota": self._quota, "jobs": self._jobs, "cancel": self._cancel, "history": self._history,
            "effect": self._effect_command, "animate": self._animate_command,
            "avatar": self._avatar_command, "grant": self._grant,
            "stats": self.figures.stats, "balance": self.figures.balance,
            **AdminCommands(self.settings, self.engine).handlers(),
            **self.payments.commands(),
        }
        for name, callback in commands.items():
            self.app.add_handler(CommandHandler(name, callback, filters=where))
        media = filters.PHOTO | filters.Document.IMAGE | filters.VOICE | filters.AUDIO | filters.Document.AUDIO
        self.app.add_handler(MessageHandler(where & media & filters.CaptionRegex(CAPTION_COMMAND),
                                            self._caption_command))
        # Anything else sent in a private chat (a video, a sticker…) gets the pointer to /help.
        anything_private = filters.ChatType.PRIVATE & ~filters.StatusUpdate.ALL
        self.app.add_handler(MessageHandler(where & ~filters.COMMAND & (media | filters.TEXT | anything_private),
                                            self._on_message))
        self.app.add_handler(MessageHandler(where & filters.COMMAND & filters.ChatType.PRIVATE,
                                            self._unknown_command))
        self.app.add_handler(CallbackQueryHandler(self.buttons.on_button, pattern=PATTERN))
        self.app.add_error_handler(self._on_error)

    async def start(self) -> None:
        await self.app.initialize()
        selling = PAYMENT_COMMANDS if self.engine.packs_for(PLATFORM) else []
        await self.app.bot.set_my_commands(
            [BotCommand(name, messages.COMMANDS[name]) for name in MENU_COMMANDS + selling])
        # Updates come by webhook (any number of fronts) or by polling (one process per token).
        self.receiver = WebhookReceiver(self.app, self.engine, self.settings) if self.settings.webhook_url \
            else Poller(self.app, self.engine, self.settings, self.polls)
        await self.receiver.start()
        log.info("Telegram bot @%s is running (%s)", self.app.bot.username,
                 "webhook" if self.settings.webhook_url else "polling")

    def start_problem(self, error: Exception) -> str | None:
        return start_problem(error, self.settings)

    def ready(self) -> bool:
        """Receiving updates (``/readyz``): started, and polling answered or the webhook served."""
        return self.app.running and self.receiver is not None and self.receiver.ready()

    async def stop(self) -> None:
        if self.receiver is not None:
            await self.receiver.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- first contact and simple commands ---------------------------------------

    async def _welcome(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        await message.reply_text(messages.welcome(
            sender_first_name(message), (await self.engine.balance(sender_ref(message))).text(),
            self.engine.price_text(),
            messages.TELEGRAM_HOW_TO_START))

    async def _help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await message_of(update).reply_text(
            messages.telegram_help(self.engine.catalog.animate_options(), self.engine.price_text())
            + "\n" + messages.TELEGRAM_HELP_MORE
            + ("\n" + messages.TELEGRAM_HELP_BUY if self.engine.packs_for(PLATFORM) else ""))

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A message that is no command: an answer to a question of the bot's, a photo
        for the bot (the effect menu), or words in a private chat (a pointer to /help)."""
        message = message_of(update)
        if await self.replies.answer(message):
            return
        replied = message.reply_to_message
        if file_of(message) and not file_of(message, images_only=True) and file_of(replied, images_only=True):
            await self._avatar_with_audio(message, message, "")  # a voice note replying to a photo
            return
        if file_of(message, images_only=True):
            if is_private(message) or _addressed_to(message, context.bot):
                await self._photo_menu(message, message, first=True)
        elif is_private(message):
            await message.reply_text(messages.TEXT_POINTER)

    async def _unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        await message.reply_text(messages.unknown_command((message.text or "").split()[0]))

    async def _photo_menu(self, message: Message, photo: Message, *, first: bool = False) -> None:
        """The effect menu for a photo, as a reply to it, with what an effect costs."""
        cost, have = self.menus.effect_cost(), (await self.engine.balance(sender_ref(message))).total
        text = messages.telegram_first_photo(cost, have) if first else messages.pick_effect_priced(cost, have)
        await message.reply_text(text, reply_markup=await self.menus.effects("fx", sender_id(message)),
                                 reply_parameters=ReplyParameters(photo.message_id, allow_sending_without_reply=True))

    async def _models(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await message_of(update).reply_text(self.engine.models_text())

    async def _effects(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        photo = photo_message(message)
        if photo is not None:
            await self._photo_menu(message, photo)
            return
        cost, have = self.menus.effect_cost(), (await self.engine.balance(sender_ref(message))).total
        await message.reply_text(messages.telegram_effects_menu(len(catalog.EFFECTS), cost, have),
                                 reply_markup=await self.menus.effects("fxa", sender_id(message)))

    async def _quota(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await message_of(update).reply_text((await self.engine.balance(_user(update))).text())

    async def _jobs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        # In a group, a job made elsewhere is listed without its label (/history's rule).
        asker = Press.from_chat(sender_ref(message), str(message.chat_id))
        await message.reply_text(await jobs_text(self.engine, asker.user, asker, private=is_private(message)))

    async def _history(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
        # In a group, only the jobs made there (the rule its buttons follow): a private chat's
        # prompts stay private.
        asker = Press.from_chat(sender_ref(message), str(message.chat_id))
        jobs = [job for job in await self.engine.history(asker.user, HISTORY_LOOKBACK)
                if asker.may_post_again(job, private=is_private(message))]
        jobs = jobs[:HISTORY_SHOWN]
        text = messages.history_list([
            (job.id, job.label, job.state.value, datetime.fromtimestamp(job.finished_at or job.created_at, UTC))
            for job in jobs])
        for_chat = message.sender_chat.id if message.sender_chat is not None else None
        await message.reply_text(text, reply_markup=self.menus.history(jobs, for_chat))

    async def _cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = args_of(context)
        text = messages.TELEGRAM_CANCEL_USAGE if len(args) != 1 else await cancel_job(
            self.engine, _user(update), args[0], messages.TELEGRAM_CANCEL_USAGE)
        await message_of(update).reply_text(text)

    async def _grant(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, args = message_of(update), args_of(context)
        admin = sender_ref(message)  # an anonymous admin is the group: never one of the admins
        if message.sender_chat is not None or sender(message).id not in self.settings.admins:
            await message.reply_text(messages.TELEGRAM_ADMINS_ONLY)
            return
        target = sender_ref(message.reply_to_message) if message.reply_to_message else None
        amount = parse_whole_number(args[0], signed=True) if len(args) == 1 else None
        if target is None or amount is None or abs(amount) > MAX_GRANT:
            await message.reply_text(messages.TELEGRAM_GRANT_USAGE)
            return
        balance = await self.engine.grant(target, amount, by=admin.key)
        await message.reply_text(messages.now_has_credits(target.name, balance.total))

    # --- generation ---------------------------------------------------------------

    async def _effect_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._effect(message_of(update), " ".join(args_of(context)))

    async def _animate_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._animate(message_of(update), " ".join(args_of(context)))

    async def _avatar_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._avatar(message_of(update), " ".join(args_of(context)))

    async def _caption_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = message_of(update)
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
        photo = photo_message(message)
        if photo is None:
            await message.reply_text(messages.EFFECT_NEEDS_PHOTO)
        elif not name.strip():
            await self._photo_menu(message, photo)
        else:
            try:
                args = parse_effect(name, self.engine.catalog)
            except ValidationError as err:
                await message.reply_text(str(err))
                return
            await self.starter.start(message, photo, "effect", args.params, model=args.model)

    async def _animate(self, message: Message, text: str) -> None:
        photo = photo_message(message)
        if photo is None:
            await message.reply_text(messages.ANIMATE_NEEDS_PHOTO)
            return
        try:
            args = parse_animate(text, self.engine.catalog)
        except ValidationError as err:
            await message.reply_text(str(err))
            return
        await self.starter.start(message, photo, "animate", args.params, model=args.model)

    async def _avatar(self, message: Message, prompt: str) -> None:
        """Ask for the voice note, saying how long a clip the user can afford and what
        5 s cost; refuse at once when not even 5 s are affordable."""
        photo = photo_message(message)
        if photo is None:
            await message.reply_text(messages.AVATAR_NEEDS_PHOTO)
            return
        user = sender_ref(message)
        params = Params(prompt=prompt or None, has_audio=True)
        # This chat's [spend] cap too: refused now, not after the user recorded the voice note.
        if refusal := await self.engine.precheck(user, "avatar", None, params,
                                                 place=place_key_of(PLATFORM, {"chat_id": message.chat_id})):
            await message.reply_text(refusal.text)
            return
        ask = await message.reply_text(
            messages.ask_for_audio(await self.engine.audio_allowance(user), self.engine.quote("avatar", None, params)),
            reply_markup=force_reply(message.chat))
        await self.engine.remember_ask(PLATFORM, ask.chat_id, ask.message_id, {
            "kind": ASK_AUDIO, "user": sender_id(message), "photo_chat": photo.chat_id,
            "photo_message_id": photo.message_id, "photo": file_of(photo), "prompt": prompt})

    async def _avatar_with_audio(self, message: Message, audio: Message, prompt: str) -> None:
        photo = message.reply_to_message if message.reply_to_message and file_of(
            message.reply_to_message, images_only=True) else None
        if photo is None:
            await message.reply_text(messages.AVATAR_AUDIO_NEEDS_PHOTO)
            return
        await self.starter.start(message, photo, "avatar", Params(prompt=prompt or None),
                                 audio_file=file_of(audio))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("update handling failed: %s: %s", type(context.error).__name__, context.error)
        if not isinstance(update, Update):
            return
        with contextlib.suppress(TelegramError):
            if update.callback_query:  # a button: answer the presser, not the whole chat
                await update.callback_query.answer(messages.SOMETHING_WENT_WRONG, show_alert=True)
            elif update.effective_message:
                await update.effective_message.reply_text(messages.SOMETHING_WENT_WRONG)


def _user(update: Update) -> UserRef:
    """Whom a command counts for (``sender_ref``: an anonymous admin is the group)."""
    return sender_ref(message_of(update))


def _addressed_to(message: Message, bot: Bot) -> bool:
    """In a group: a photo whose caption mentions the bot, or that replies to the bot."""
    if f"@{bot.username}".lower() in (message.caption or "").lower():
        return True
    replied = message.reply_to_message
    return bool(replied and replied.from_user and replied.from_user.id == bot.id)
