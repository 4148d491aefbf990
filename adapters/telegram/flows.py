"""What happens when a button is pressed, or a question of the bot's is answered.

Buttons carry all they need in their callback data (see ``menus``) and questions are
kept in the database (``engine.remember_ask``), so both work after a restart. Every
callback query is answered once: a toast, or an alert for a refusal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from telegram import (
    Bot,
    CallbackQuery,
    Chat,
    ForceReply,
    InaccessibleMessage,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from adapters.telegram.common import PLATFORM, file_of, force_reply, menu_owner, press_of, sender_id, sender_ref
from adapters.telegram.courier import TelegramCourier
from adapters.telegram.menus import KEY, PAGES, PROBE_PROMPT, ButtonData, Menus, parse
from adapters.telegram.starter import JobStarter
from bot import catalog, messages
from bot.catalog import Params
from bot.config import TelegramSettings
from bot.engine import Engine, place_key_of
from bot.jobs import Accepted, DeliveryRefused, Press, Rejected

log = logging.getLogger(__name__)

TOAST_LIMIT = 200  # characters Telegram shows in a callback answer
ASK_PHOTO, ASK_PROMPT, ASK_AUDIO = "photo", "prompt", "audio"  # what a question waits for
OWNED_MENUS = ("fx", "fxp", "fxa", "fxap")  # effect menus keyed by the user they were made for


def _toast(text: str) -> str:
    """A callback answer's text within Telegram's 200 characters (counted in UTF-16 units)."""
    while len(text.encode("utf-16-le")) > 2 * TOAST_LIMIT:
        text = text[:-2] + "…"
    return text


def _reply(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id, allow_sending_without_reply=True) if message_id else None


class Buttons:
    """Callback queries: effect menus, result buttons, /history."""

    def __init__(self, bot: Bot, settings: TelegramSettings, engine: Engine, menus: Menus,
                 starter: JobStarter, courier: TelegramCourier):
        self.bot, self.settings, self.engine = bot, settings, engine
        self.menus, self.starter, self.courier = menus, starter, courier

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None  # the handler's pattern matched the data
        press = parse(query.data)
        if press is None or query.message is None:
            await query.answer()
            return
        # Buttons pass no message filter: the chat is checked here (a menu may predate the list).
        if self.settings.allowed_chats and query.message.chat.id not in self.settings.allowed_chats:
            await query.answer(messages.CHAT_NOT_ALLOWED, show_alert=True)
            return
        # Callback data is the client's word: a menu acts only from the message that carries
        # the very button pressed, a menu made for someone for them (``Press.for_menu_of``);
        # a button naming a job is checked against it by the engine (``Press.may_use``).
        where = press_of(query)
        acting = _acting(where, press)
        if acting is None:
            await query.answer(messages.no_such_job(press.key) if press.kind == "hist" else messages.MENU_NOT_YOURS,
                               show_alert=True)
            return
        if press.kind in PAGES and not where.on_its_message:  # a job's menu: as if expired
            await query.answer(messages.SOURCE_GONE, show_alert=True)
            return
        if press.kind in PAGES:
            await query.answer()
            with contextlib.suppress(BadRequest):  # "not modified": a double tap on the same page
                menu = await self.menus.effects(PAGES[press.kind], press.key, press.page)
                await query.edit_message_reply_markup(menu)
            return
        handler = {"fx": self._photo_effect, "fxa": self._ask_photo, "fxj": self._rerun, "again": self._rerun,
                   "other": self._other_effect, "ask": self._ask_prompt, "hist": self._history}[press.kind]
        await handler(query, press, acting)

    async def _refuse(self, query: CallbackQuery, refusal: Rejected) -> None:
        """A refusal as an alert; one for lack of credits is followed by the packs to buy,
        under the pressed message (an alert carries no buttons)."""
        await query.answer(_toast(refusal.text), show_alert=True)
        await self.starter.offer_packs(_chat_id(query), refusal, reply_to=_message_id(query))

    async def _refusal(self, acting: Press, kind: catalog.Kind, params: Params,
                 source: int | None = None) -> Rejected | None:
        """Why a press cannot start a job, before any menu, question or status message:
        the result's photo is no longer kept (or not the presser's to use), or the
        settings or credits of whoever the press acts for."""
        gone = await self.engine.rerun_refusal(acting, source) if source is not None else None
        # The chat's [spend] cap too: refused as a toast now, the menu kept for another day.
        place = place_key_of(PLATFORM, {"chat_id": acting.place}) if acting.place else ""
        return gone or await self.engine.precheck(acting.user, kind, None, params, place=place)

    async def _photo_effect(self, query: CallbackQuery, press: ButtonData, acting: Press) -> None:
        """A tap in the menu under a photo: that effect on that photo."""
        # the menu message itself; an InaccessibleMessage once it is too old for the Bot API
        message = query.message if isinstance(query.message, Message) else None
        photo = message.reply_to_message if message else None
        if message is None or photo is None or file_of(photo, images_only=True) is None:
            await query.answer(messages.PHOTO_GONE, show_alert=True)
            return
        if refusal := await self._refusal(acting, "effect", Params(effect=press.effect)):
            await self._refuse(query, refusal)
            return
        if not await self.engine.claim_menu(PLATFORM, message.chat_id, message.message_id):
            await query.answer(messages.ALREADY_STARTED)  # a double tap: the first one is on its way
            return
        title = catalog.effect_title(press.effect)
        await query.answer(messages.effect_chosen_toast(title))
        status = await query.edit_message_text(messages.effect_checking(title))
        assert isinstance(status, Message)  # True comes back only for inline messages
        await self.starter.start(message, photo, "effect", Params(effect=press.effect), status=status,
                                 user=acting.user)

    async def _ask_photo(self, query: CallbackQuery, press: ButtonData, acting: Press) -> None:
        """A tap in the /effects menu: ask for the photo (its reply starts the job)."""
        if refusal := await self._refusal(acting, "effect", Params(effect=press.effect)):
            await self._refuse(query, refusal)
            return
        title = catalog.effect_title(press.effect)
        await query.answer(messages.effect_chosen_toast(title))
        menu = query.message if isinstance(query.message, Message) else None
        command = menu.reply_to_message if menu else None  # the /effects message: ForceReply targets its sender
        ask = await self.bot.send_message(
            _chat_id(query), messages.telegram_send_photo_for(title),
            reply_parameters=_reply(command.message_id if command else None),
            reply_markup=force_reply(_chat(query)))
        await self.engine.remember_ask(PLATFORM, ask.chat_id, ask.message_id,
                                 {"kind": ASK_PHOTO, "user": int(acting.user.user_id), "effect": press.effect})

    async def _other_effect(self, query: CallbackQuery, press: ButtonData, acting: Press) -> None:
        """"Another effect" under a video: a menu of effects for that job's photo."""
        if refusal := await self._refusal(acting, "effect", Params(effect=catalog.EFFECTS[0]), press.key):
            await self._refuse(query, refusal)
            return
        await query.answer()
        have = (await self.engine.balance(acting.user)).total
        await self.bot.send_message(
            _chat_id(query), messages.pick_effect_priced(self.menus.effect_cost(), have),
            reply_parameters=_reply(_message_id(query)), reply_markup=await self.menus.effects("fxj", press.key))

    async def _rerun(self, query: CallbackQuery, press: ButtonData, acting: Press) -> None:
        """"Again", or an effect from a video's menu: a new job from the job's kept photo,
        its status a new reply to the video; charged to whoever pressed."""
        effect = press.effect if press.kind == "fxj" else None
        if refusal := await self.engine.rerun_precheck(acting, press.key, effect=effect):
            await self._refuse(query, refusal)
            return
        video = _message_id(query)
        if effect and isinstance(query.message, Message) and query.message.reply_to_message:
            video = query.message.reply_to_message.message_id  # the menu replies to the video
        status = await self.bot.send_message(_chat_id(query), messages.CHECKING_PHOTO,
                                             reply_parameters=_reply(video))
        answer = await self.starter.rerun(acting, press.key, status, video, keep_refusal=False,
                                          effect=effect)
        # Telegram refuses an answer that comes too late: the job is queued and charged all
        # the same, and its status message says so; that must not read "something went wrong".
        with contextlib.suppress(BadRequest):
            await query.answer(_toast(answer.text), show_alert=isinstance(answer, Rejected))
        if isinstance(answer, Rejected):
            await self.starter.offer_packs(_chat_id(query), answer, reply_to=video)

    async def _ask_prompt(self, query: CallbackQuery, press: ButtonData, acting: Press) -> None:
        """"Animate with a prompt": ask the presser for the prompt (its reply starts the job)."""
        if refusal := await self._refusal(acting, "animate", Params(prompt=PROBE_PROMPT), press.key):
            await self._refuse(query, refusal)
            return
        await query.answer()
        video, presser = _message_id(query), query.from_user
        if _chat(query).type == ChatType.PRIVATE:
            text, mention = messages.ASK_PROMPT, None
        else:  # addressed to the presser, whose reply field alone opens (a selective ForceReply)
            text, name = messages.ask_prompt_for(presser.first_name), messages.echo(presser.first_name)
            mention = [MessageEntity(MessageEntity.TEXT_MENTION, 0, _utf16_length(name), user=presser)]
        ask = await self.bot.send_message(_chat_id(query), text, reply_parameters=_reply(video), entities=mention,
                                          reply_markup=ForceReply(selective=mention is not None))
        await self.engine.remember_ask(PLATFORM, ask.chat_id, ask.message_id, {
            "kind": ASK_PROMPT, "user": query.from_user.id, "job": press.key, "video": video})

    async def _history(self, query: CallbackQuery, press: ButtonData, where: Press) -> None:
        """A /history button: that video posted again, with its result buttons; only the
        owner's own (the presser, or the chat identity the list was made for), and in a
        group only one made there (``Press.may_post_again``)."""
        job = await self.engine.job_to_post_again(where, press.key, private=_chat(query).type == ChatType.PRIVATE)
        if job is None:
            await query.answer(messages.no_such_job(press.key), show_alert=True)
            return
        await query.answer(messages.progress("downloading"))
        video = await self.engine.fetch_video(where.user, press.key)
        if isinstance(video, Rejected):
            await self.bot.send_message(_chat_id(query), video.text, reply_parameters=_reply(_message_id(query)))
            return
        try:  # posted where the button is, as if it were that job's first delivery
            await self.courier.show(dataclasses.replace(job, reply_to={
                "chat_id": _chat_id(query), "photo_message_id": _message_id(query)}), video)
        except DeliveryRefused as refusal:  # e.g. a group that takes no videos from the bot
            log.info("job %s: not posted again here (%s)", job.id, refusal)
            with contextlib.suppress(TelegramError):
                await self.bot.send_message(_chat_id(query), messages.REPOST_REFUSED,
                                            reply_parameters=_reply(_message_id(query)))
        finally:
            video.path.unlink(missing_ok=True)


class Replies:
    """Answers to the bot's questions: a voice note for /avatar, a photo for an effect
    picked from /effects, a prompt for a video's "animate with a prompt"."""

    def __init__(self, engine: Engine, starter: JobStarter):
        self.engine, self.starter = engine, starter

    async def answer(self, message: Message) -> bool:
        """Handle ``message`` if it answers a pending question; False when it does not."""
        asked = message.reply_to_message
        if asked is None:
            return False
        ask = await self.engine.pending_ask(PLATFORM, asked.chat_id, asked.message_id)
        if ask is None:
            return False
        if not _may_answer(ask["user"], message):
            await message.reply_text(messages.QUESTION_NOT_YOURS)
            return True
        kind = ask.get("kind", ASK_AUDIO)  # questions from before kinds were kept asked for audio
        if kind == ASK_AUDIO and file_of(message) and not file_of(message, images_only=True):
            answer = await self.starter.start(message, None, "avatar", Params(prompt=ask["prompt"] or None),
                                              photo_file=ask["photo"], photo_message_id=ask["photo_message_id"],
                                              audio_file=file_of(message))
        elif kind == ASK_PHOTO and file_of(message, images_only=True):
            answer = await self.starter.start(message, message, "effect", Params(effect=ask["effect"]))
        elif kind == ASK_PROMPT and message.text:
            status = await message.reply_text(messages.CHECKING_PHOTO)
            # The question was asked after a press that could use the job: its answer may too.
            press = Press.from_chat(sender_ref(message), str(message.chat_id))
            answer = await self.starter.rerun(press, ask["job"], status, ask["video"], prompt=message.text)
        else:
            return False
        if isinstance(answer, Accepted):  # a refused answer may be followed by a better one
            await self.engine.forget_ask(PLATFORM, asked.chat_id, asked.message_id)
        return True


def _acting(where: Press, press: ButtonData) -> Press | None:
    """Who a press acts for: the presser; on a menu, or a /history list made for a chat
    identity (its buttons name it), whoever ``Press.for_menu_of`` says; None: refused."""
    if press.kind in OWNED_MENUS:
        owner = press.key
    elif press.kind == "hist" and press.value:
        if not KEY.fullmatch(press.value):
            return None
        owner = int(press.value)
    else:
        return where
    user, made_for_chat = menu_owner(owner)
    return where.for_menu_of(user, made_for_chat=made_for_chat)


def _may_answer(asked: int, message: Message) -> bool:
    """Whether ``message`` may answer a question asked of ``asked`` (a user or chat id):
    sent by them, or sent as the very chat it is asked in (an anonymous admin of it).
    Telegram names the person in a press but hides them in a message, so an anonymous admin
    who pressed can answer only as the chat, and the bot cannot tell which admin writes.
    A message sent as another chat (a member's own channel, a linked channel) is no one the
    question was asked of. Either way the answer acts, and pays, as whoever sends it
    (``sender_ref``): no one else's credits."""
    sent_as = message.sender_chat
    return asked == sender_id(message) or (sent_as is not None and sent_as.id == message.chat_id)


def _utf16_length(text: str) -> int:
    """A text's length as Telegram counts entity offsets: in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _chat(query: CallbackQuery) -> Chat:
    assert query.message is not None  # on_button answers queries without a message itself
    return query.message.chat


def _chat_id(query: CallbackQuery) -> int:
    return _chat(query).id


def _message_id(query: CallbackQuery) -> int:
    """The pressed message (a video, a menu…), also when it is an InaccessibleMessage."""
    assert isinstance(query.message, Message | InaccessibleMessage)
    return query.message.message_id
