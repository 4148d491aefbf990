"""Starts jobs from chat messages and buttons: checks first, downloads second.

Every refusal that needs no media (effect name, options, credits, too many jobs) is
given before anything is downloaded or a status message is posted. File URLs hold
the bot token: the bytes are fetched here and never leave as a URL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from telegram import Bot, File, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest, TelegramError

from adapters.downloads import read_capped
from adapters.telegram.common import PLATFORM, file_of, reply_to, sender_ref
from adapters.telegram.courier import TelegramCourier
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.config import MediaSettings
from bot.engine import Engine, place_key_of
from bot.jobs import Accepted, GenerationRequest, Press, Rejected, UserRef

log = logging.getLogger(__name__)

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB to bots
# The words of getFile's refusal of a file over DOWNLOAD_LIMIT ("Bad Request: file is too big").
TOO_BIG = {"too", "big"}
# A photo or a voice note of at most 20 MB: a minute is plenty, and a stalled server ends sooner.
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_read=20)


class JobStarter:
    def __init__(self, bot: Bot, engine: Engine, courier: TelegramCourier, media: MediaSettings):
        self.bot, self.engine, self.courier, self.media = bot, engine, courier, media
        # The packs' buy buttons (adapters.telegram.payments), for refusals for lack of credits.
        self.offer: Callable[[], Awaitable[InlineKeyboardMarkup | None]] | None = None

    async def start(self, message: Message, photo: Message | None, kind: catalog.Kind, params: Params, *,
                    model: str | None = None, status: Message | None = None, user: UserRef | None = None,
                    photo_file: dict | None = None, photo_message_id: int | None = None,
                    audio_file: dict | None = None) -> Accepted | Rejected:
        """Check, download the media, hand the request to the engine, show its answer."""
        who = user or sender_ref(message)  # a menu's presser, else whoever sent the message
        refusal = await self.engine.precheck(who, kind, model, replace(params, has_audio=audio_file is not None),
                                       audio_seconds=(audio_file or {}).get("seconds"),
                                       place=place_key_of(PLATFORM, {"chat_id": message.chat_id}))
        if refusal is not None:
            if status is None:
                await message.reply_text(refusal.text, reply_markup=await self._offer(refusal))
            else:
                await self.courier.edit(status.chat_id, status.message_id, refusal.text)
                await self._offer_under(status, refusal)
            return refusal
        if status is None:
            status = await message.reply_text(messages.CHECKING_PHOTO)
        try:
            image = await self.download(photo_file or file_of(photo), "photo")
            audio = await self.download(audio_file, "audio") if audio_file else None
        except ValidationError as err:
            await self.courier.edit(status.chat_id, status.message_id, str(err))
            return Rejected(str(err))
        request = GenerationRequest(
            who, kind, image, params, model=model, audio=audio,
            reply_to=reply_to(status, photo.message_id if photo else photo_message_id))
        answer = await self.engine.accept(request)
        # through the courier: its edits of this message are kept in order
        await self.courier.edit(status.chat_id, status.message_id, answer.text)
        if isinstance(answer, Rejected):
            await self._offer_under(status, answer)
        return answer

    async def offer_packs(self, chat_id: int, refusal: Rejected, *, reply_to: int | None) -> None:
        """After a refusal shown where no buttons go (a button's alert): the packs to buy, as
        a message in the chat, when the engine offers them with the refusal."""
        if (buttons := await self._offer(refusal)) is not None:
            reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
            with contextlib.suppress(TelegramError):  # the refusal itself is shown already
                await self.bot.send_message(chat_id, self.engine.buy_text(PLATFORM), reply_markup=buttons,
                                            reply_parameters=reply)

    async def _offer(self, refusal: Rejected) -> InlineKeyboardMarkup | None:
        """The buy buttons when the engine offers packs with a refusal (out of credits)."""
        return await self.offer() if self.offer is not None and refusal.offer_packs else None

    async def _offer_under(self, status: Message, refusal: Rejected) -> None:
        """The buy buttons under a status message that now says the refusal."""
        if (buttons := await self._offer(refusal)) is not None:
            with contextlib.suppress(TelegramError):  # the refusal itself is shown already
                await self.bot.edit_message_reply_markup(status.chat_id, status.message_id, reply_markup=buttons)

    async def rerun(self, press: Press, job_id: int, status: Message, answers: int, *,
                    effect: str | None = None, prompt: str | None = None,
                    keep_refusal: bool = True) -> Accepted | Rejected:
        """A new job from a delivered one (a result button), charged to the presser. ``status``
        becomes its status message, ``answers`` the message its video replies to; a refusal
        is written there, or (``keep_refusal=False``) the status message is deleted and the
        caller shows the refusal."""
        answer = await self.engine.rerun(press, job_id, reply_to=reply_to(status, answers),
                                         effect=effect, prompt=prompt)
        if isinstance(answer, Rejected) and not keep_refusal:
            with contextlib.suppress(TelegramError):
                await status.delete()
        else:
            await self.courier.edit(status.chat_id, status.message_id, answer.text)
        return answer

    async def download(self, ref: dict | None, what: str) -> bytes:
        """A file's bytes; refused over the size limit, also when Telegram tells no size."""
        if not ref:
            raise ValidationError(messages.cannot_find(what))
        self._check_size(ref.get("size"), what)
        try:
            file = await self.bot.get_file(ref["file_id"])
        except BadRequest as err:
            # A message need not tell a file's size; getFile then refuses one over 20 MB.
            if TOO_BIG.issubset(err.message.lower().split()):
                raise ValidationError(messages.telegram_file_over_limit(what)) from None
            log.warning("download of a %s failed: %s", what, type(err).__name__)
            raise ValidationError(messages.download_failed(what, "Telegram")) from None
        except TelegramError as err:
            log.warning("download of a %s failed: %s", what, type(err).__name__)
            raise ValidationError(messages.download_failed(what, "Telegram")) from None
        self._check_size(file.file_size, what)  # the message may not have said
        return await self._read_capped(file, what)

    async def _read_capped(self, file: File, what: str) -> bytes:
        """The file's bytes, read no further than the limit: ``file_size`` is optional in
        messages and in getFile's answer, and PTB's downloads read a body whole. The URL
        holds the bot token: it is never logged, forwarded or put in an error (aiohttp's
        errors name their URL, so only their type is logged)."""
        cap = self._limit()
        url = _encoded_url(file.file_path or "")
        if not url.startswith(("https://", "http://")):
            raise ValidationError(messages.download_failed(what, "Telegram"))
        try:
            async with aiohttp.ClientSession(timeout=DOWNLOAD_TIMEOUT) as session:
                return await read_capped(session, url, what, cap,
                                         check_announced=lambda size: self._check_size(size, what))
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("download of a %s failed: %s", what, type(err).__name__)
            raise ValidationError(messages.download_failed(what, "Telegram")) from None

    def _limit(self) -> int:
        """The most bytes a file may have: ``[media] max_download_mb``, and what the Bot API serves."""
        return min(self.media.max_download_bytes, DOWNLOAD_LIMIT)

    def _check_size(self, size: int | None, what: str) -> None:
        """Refuse a file over what the Bot API serves or ``[media] max_download_mb``."""
        limit = self.media.max_download_bytes
        if size and size > DOWNLOAD_LIMIT:
            raise ValidationError(messages.telegram_file_too_large(what, size))
        if size and size > limit:
            raise ValidationError(messages.media_too_large(what, size, limit))


def _encoded_url(file_path: str) -> str:
    """The download URL as PTB builds it: any non-ASCII character of the path quoted."""
    parts = urlsplit(file_path)
    return urlunsplit(parts._replace(path=quote(parts.path)))
