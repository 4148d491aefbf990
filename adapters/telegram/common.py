"""Small helpers every part of the Telegram adapter shares: who sent a message, which
file it holds, and where a job started from a message should answer."""

from __future__ import annotations

import functools
import ssl
from dataclasses import replace
from typing import Any, TypeVar

import httpx
from telegram import CallbackQuery, Chat, ForceReply, Message, Update, User
from telegram.constants import ChatType
from telegram.ext import Application, ContextTypes, Updater
from telegram.request import HTTPXRequest

from bot.jobs import Press, UserRef

PLATFORM = "telegram"
T = TypeVar("T")


def user_ref(user: User) -> UserRef:
    return UserRef(PLATFORM, str(user.id), user.full_name)


def press_of(query: CallbackQuery) -> Press:
    """Who pressed, in which chat, and whether the pressed message (as Telegram has it, not
    as the client says) carries a button with exactly this data: callback data alone is
    the client's word, and the message may hold no such button. A forwarded copy is not
    the bot's own message, whatever buttons it shows."""
    message = query.message
    markup = message.reply_markup if isinstance(message, Message) and message.forward_origin is None else None
    carried = markup is not None and any(
        button.callback_data == query.data for row in markup.inline_keyboard for button in row)
    place = str(message.chat.id) if message else ""
    return Press.of_button(replace(user_ref(query.from_user), chat=place), place, carried=carried)


def menu_owner(key: int) -> tuple[UserRef, bool]:
    """Who a menu keyed ``key`` (see ``sender_id``) was made for, and whether that is a
    chat speaking as itself (``Press.for_menu_of``): chat ids are negative, user ids positive."""
    return UserRef(PLATFORM, str(key)), key < 0


def reply_to(status: Message, photo_message_id: int | None) -> dict[str, Any]:
    """A job's ``reply_to``: its status message, the message its video answers, the chat kind."""
    return {"chat_id": status.chat_id, "status_message_id": status.message_id,
            "photo_message_id": photo_message_id,
            "group": status.chat.type != ChatType.PRIVATE if status.chat else False}


def is_private(message: Message) -> bool:
    return message.chat.type == ChatType.PRIVATE


def force_reply(chat: Chat) -> ForceReply:
    """Opens the reply field for the answer a question waits for; in a group only for the
    sender of the message the question replies to (everyone else may go on chatting)."""
    return ForceReply(selective=chat.type != ChatType.PRIVATE)


# PTB types these as optional because some update types lack them; the handlers only
# receive updates that have them, so a missing one is a bug worth an error.

def present(value: T | None, what: str) -> T:
    if value is None:
        raise RuntimeError(f"the update carries no {what}")
    return value


def message_of(update: Update) -> Message:
    return present(update.effective_message, "message")


def effective_user(update: Update) -> User:
    return present(update.effective_user, "user")


def sender(message: Message) -> User:
    """The ``from`` user; a placeholder for a message sent on behalf of a chat: never key
    anything by it (``sender_id``, ``sender_ref``)."""
    return present(message.from_user, "sender")  # set for every message outside channels


def sender_id(message: Message) -> int:
    """Who sent a message, as one id: the user, or the chat it was sent on behalf of (an
    anonymous admin's message is the group's, a channel's the channel's). Telegram puts
    one placeholder user in ``from`` for all of those, so its id would merge unrelated
    groups into one user. Group and channel ids are negative, user ids positive."""
    return message.sender_chat.id if message.sender_chat is not None else sender(message).id


def sender_ref(message: Message) -> UserRef:
    """The user a message counts for (credits, /jobs, /cancel): see ``sender_id``."""
    chat, where = message.sender_chat, str(message.chat.id)  # where: for [telegram.chats]
    if chat is not None:
        return UserRef(PLATFORM, str(chat.id), chat.effective_name or "", chat=where)
    return replace(user_ref(sender(message)), chat=where)


def sender_first_name(message: Message) -> str:
    """How to greet the sender: a user's first name, a group's or channel's title."""
    chat = message.sender_chat
    return (chat.effective_name or "") if chat is not None else sender(message).first_name


def args_of(context: ContextTypes.DEFAULT_TYPE) -> list[str]:
    return present(context.args, "command arguments")  # CommandHandler always sets them


def updater_of(app: Application) -> Updater:
    return present(app.updater, "updater")  # ApplicationBuilder builds one unless told not to


def photo_message(message: Message) -> Message | None:
    """The message holding the photo: this one (photo + caption) or the one replied to."""
    for candidate in (message, message.reply_to_message):
        if candidate is not None and file_of(candidate, images_only=True):
            return candidate
    return None


def file_of(message: Message | None, images_only: bool = False) -> dict | None:
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
        if media:  # Telegram tells the length: the price is known before the download
            # (read raw: PTB's .duration turns from int into timedelta in a coming version)
            return {"file_id": media.file_id, "size": media.file_size, "seconds": media.to_dict().get("duration")}
    if document and (document.mime_type or "").startswith("audio/"):
        return {"file_id": document.file_id, "size": document.file_size}
    return None


@functools.cache
def _verifying_tls() -> ssl.SSLContext:
    # httpx's default (certifi's roots, or SSL_CERT_FILE), loaded once: each client would
    # load it anew, about 35 ms of CPU each, and a process builds two or three of them.
    return httpx.create_ssl_context()


def bot_api_options() -> dict[str, Any]:
    """``HTTPXRequest``'s ``httpx_kwargs`` for every Bot API connection of the process: one
    TLS context, verifying as httpx's default does."""
    return {"verify": _verifying_tls()}


def bot_api_request(connections: int) -> HTTPXRequest:
    """A Bot API connection pool of ``connections``, on the process's TLS context."""
    return HTTPXRequest(connection_pool_size=connections, httpx_kwargs=bot_api_options())
