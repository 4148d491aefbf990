"""A fake Telegram Bot API server: enough of it for python-telegram-bot to run against.

It serves getMe, getUpdates (long polling over a queue the test fills), sendMessage,
editMessageText, sendVideo, sendPhoto, getFile and file downloads, and records every call.
getUpdates follows Telegram's rules on conflicts: a newer call ends a pending one with 409
("terminated by other getUpdates request"), and every call is 409 while a webhook is set.
setWebhook / deleteWebhook / getWebhookInfo keep a webhook; while one is set, pushed updates
are POSTed to it (``deliver``) with the X-Telegram-Bot-Api-Secret-Token header, as Telegram
does. ``FakeTelegram(token)`` answers setWebhook like api.telegram.org (https only, ports 443,
80, 88 and 8443); ``local=True`` like a self-hosted Bot API server in ``--local`` mode,
which accepts an http URL on any port (how the tests point Telegram at 127.0.0.1).
``flood_next`` answers a method with 429 + retry_after, like Telegram's flood control.
``blocked`` (users who blocked the bot, or never started it) and ``no_video_rights``
(chats where the bot may not post videos) refuse calls the way the Bot API does.
As the Bot API does, getFile refuses a file over 20 MB ("file is too big": bots can
download files of up to 20 MB), and a message that replies to a message that is not there
(``user_deletes``) is refused unless it allows sending without the reply
(``reply_parameters.allow_sending_without_reply``).

Telegram Stars payments: createInvoiceLink and sendInvoice refuse an invoice in Stars that
breaks the Bot API's rules for one (a provider token, not exactly one price, tips, an amount
that is no positive whole number; a currency other than XTR without a provider token);
``pre_checkout`` queues a user's pre-checkout query, whose answers (``checkout_answers``) are
refused with QUERY_ID_INVALID when a query is answered twice or after ``answer_window``
seconds (Telegram's 10); ``paid`` and ``refunded`` queue the service messages with
``successful_payment`` and ``refunded_payment``; refundStarPayment refunds a charge ``paid``
made, once, for its own user (``refunds`` records each refund Telegram made).
Telegram sends only the update types the last getUpdates or setWebhook asked for
(``allowed_updates``): an update of another type is dropped, as Telegram never sends it.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from PIL import Image

from tests import spec_check
from tests.doors import Doors
from tests.helpers import checked

# The placeholder senders Telegram puts in ``from`` of messages sent on behalf of a chat
# (an anonymous group admin: the group itself; a channel: that channel), with ``sender_chat``.
ANONYMOUS_ADMIN = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel", "username": "Channel_Bot"}
BOT_USER = {"id": 777000, "is_bot": True, "first_name": "Kling", "username": "kling_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False}
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile: "bots can download files of up to 20MB in size"
WEBHOOK_PORTS = (443, 80, 88, 8443)  # the only ports api.telegram.org delivers to (setWebhook docs)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
STARS = "XTR"  # the currency of Telegram Stars
ANSWER_WINDOW = 10.0  # seconds a bot has to answer a pre_checkout_query
# What Telegram sends when allowed_updates is empty or never given ("all update types except
# chat_member, message_reaction, and message_reaction_count").
NOT_BY_DEFAULT = {"chat_member", "message_reaction", "message_reaction_count"}
_THE_WEBHOOKS = object()  # deliver(): the secret token setWebhook was given


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)


class FakeTelegram(Doors):
    def __init__(self, token: str, *, local: bool = False):
        self.token = token
        # Telegram's bot id is the token's first part (getMe, and ``from`` of the bot's messages).
        prefix = token.split(":")[0]
        self.bot_user = {**BOT_USER, "id": int(prefix)} if prefix.isdigit() else dict(BOT_USER)
        self.local = local  # a self-hosted Bot API server in --local mode: http webhooks on any port
        self.webhook: dict[str, Any] | None = None  # setWebhook's parameters, while one is set
        self.deliveries: list[dict[str, Any]] = []  # {"update_id", "to", "status"} of each POST to a webhook
        self.conflicts = 0  # getUpdates calls answered 409
        self.calls: list[dict[str, Any]] = []  # {"method", "params", "files", "at", "door"}
        self.paths: list[str] = []
        self.files: dict[str, bytes] = {}
        self.sizes: dict[str, int] = {}  # a file's true size where a test says it is not its bytes' length
        # Files Telegram tells no size of (file_size is optional, in messages and getFile):
        # served in chunks without Content-Length; ``streamed`` counts the bytes actually sent.
        self.unsized: set[str] = set()
        self.streamed: dict[str, int] = {}
        self.download_delay = 0.0  # seconds each file download waits before its bytes (a slow Telegram)
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.floods: dict[str, list[float]] = {}
        self.blocked: set[int] = set()  # private chats whose user blocked the bot: every call is 403
        self.no_video_rights: set[int] = set()  # chats where sendVideo is 400 "not enough rights"
        # Calls the real Bot API would refuse or ignore (tests/spec_check.py); asserted empty after
        # each test. A test that sends bad calls on purpose checks and clears them, or sets check_specs.
        self.violations: list[str] = []
        self.check_specs = True
        spec_check.watch(self)
        # Payments: invoice links made, pre-checkout queries asked (id -> query, asked_at,
        # answers), charges paid (charge id -> user, amount, refunded) and refunds made.
        self.invoice_links: list[dict[str, Any]] = []
        self.checkouts: dict[str, dict[str, Any]] = {}
        self.answer_window = ANSWER_WINDOW
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: list[dict[str, Any]] = []
        self.allowed_updates: list[str] = []  # the last getUpdates' or setWebhook's (empty: the default)
        self.dropped: list[dict[str, Any]] = []  # updates Telegram would not send (allowed_updates)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._file_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._poll: object | None = None  # the latest getUpdates call: it ends any earlier one
        self._sending: set[asyncio.Task[int]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.base = ""
        # door(): more addresses of this same fake, so a test tells which process made a request.
        self._init_doors()

    # --- test side ----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[self._by_door])
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        if self._session is not None:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"{self.base}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.base}/file/bot"

    def add_file(self, data: bytes) -> dict[str, Any]:
        file_id = f"file-{next(self._file_ids)}"
        self.files[file_id] = data
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(data)}

    def add_unsized_file(self, data: bytes) -> dict[str, Any]:
        """A file whose size Telegram does not tell (no file_size, no Content-Length)."""
        info = self.add_file(data)
        self.unsized.add(info["file_id"])
        del info["file_size"]
        return info

    def user_message(self, chat_id: int, user_id: int, *, text: str | None = None,
                     caption: str | None = None, photo: bytes | None = None,
                     document: tuple[bytes, str] | None = None, voice: bytes | None = None,
                     reply_to: dict[str, Any] | None = None, push: bool = True,
                     file_size: int | None = None, voice_seconds: int = 2,
                     sender_chat: dict[str, Any] | None = None, unsized: bool = False) -> dict[str, Any]:
        """A message a user sends; queued as an update for the bot unless push=False.
        ``sender_chat``: sent on behalf of that chat (an anonymous admin of this group, or a
        channel), so ``from`` is Telegram's placeholder user. ``unsized``: its photo has no size."""
        sent_by: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
        if sender_chat is not None:
            sent_by = ANONYMOUS_ADMIN if sender_chat["id"] == chat_id else CHANNEL_BOT
        message: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": int(time.time()),
            "chat": _chat(chat_id), "from": sent_by}
        if sender_chat is not None:
            message["sender_chat"] = sender_chat
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                length = len(text.split()[0])
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        if caption is not None:
            message["caption"] = caption
        if photo is not None:
            info = self.add_unsized_file(photo) if unsized else self.add_file(photo)
            if file_size:
                info["file_size"] = self.sizes[info["file_id"]] = file_size
            message["photo"] = [{**info, "file_id": info["file_id"], "width": 90, "height": 90},
                                {**info, "width": 800, "height": 600}]
        if document is not None:
            data, mime = document
            message["document"] = {**self.add_file(data), "mime_type": mime, "file_name": "f"}
        if voice is not None:
            message["voice"] = {**self.add_file(voice), "duration": voice_seconds, "mime_type": "audio/ogg"}
        if reply_to is not None:
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        self.messages[(chat_id, message["message_id"])] = message
        if push:
            self.push({"message": message})
        return message

    def user_deletes(self, chat_id: int, message_id: int) -> None:
        """A user (or a group's admin, or another bot) deletes a message: it is gone for the
        bot too, its files stay downloadable, and a reply to it needs allow_sending_without_reply."""
        del self.messages[(chat_id, message_id)]

    def press_button(self, user_id: int, message: dict[str, Any], data: str, *,
                     push: bool = True) -> dict[str, Any]:
        """A user presses a button of a message: the update, pushed unless push=False."""
        content = {"callback_query": {
            "id": str(next(self._update_ids)), "from": {"id": user_id, "is_bot": False,
                                                       "first_name": f"User{user_id}"},
            "chat_instance": "ci", "data": data, "message": message}}
        return self.push(content) if push else self.new_update(content)

    def new_update(self, content: dict[str, Any]) -> dict[str, Any]:
        """An update with the next update_id, not sent anywhere (``deliver`` sends it)."""
        return {"update_id": next(self._update_ids), **content}

    def push(self, content: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates or, while a webhook is set, POST it there; the update."""
        update = self.new_update(content)
        if not self._sends(update):
            self.dropped.append(update)
            return update
        if self.webhook is not None:
            task = asyncio.get_running_loop().create_task(self.deliver(update))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            self._updates.append(update)
            self._new_update.set()
        return update

    async def deliver(self, update: dict[str, Any], *, to: str | None = None,
                      secret_token: Any = _THE_WEBHOOKS) -> int:
        """POST an update as Telegram delivers it to the webhook: JSON, with the secret token
        setWebhook was given in its header. ``to``: another address (the front a load balancer
        in front of the webhook's address picked); ``secret_token``: another header (None:
        none). The HTTP status the bot answered (0: no answer). Telegram would retry a
        delivery that did not get a 2xx later; tests deliver again themselves."""
        assert self.webhook is not None or to is not None, "no webhook is set"
        url = to or (self.webhook or {})["url"]
        secret = (self.webhook or {}).get("secret_token") if secret_token is _THE_WEBHOOKS else secret_token
        headers = {"Content-Type": "application/json", **({SECRET_HEADER: secret} if secret is not None else {})}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(url, data=json.dumps(update), headers=headers) as answer:
                status = answer.status
        except aiohttp.ClientError:
            status = 0
        self.deliveries.append({"update_id": update["update_id"], "to": url, "status": status})
        return status

    def _sends(self, update: dict[str, Any]) -> bool:
        """Whether Telegram sends this update to a bot that asked for ``allowed_updates``."""
        kind = next(key for key in update if key != "update_id")
        return kind in self.allowed_updates if self.allowed_updates else kind not in NOT_BY_DEFAULT

    # --- payments, the test side ---------------------------------------------------

    def pre_checkout(self, user_id: int, *, total_amount: int, invoice_payload: str,
                     currency: str = STARS, push: bool = True) -> dict[str, Any]:
        """A user pressed Pay on an invoice: the pre_checkout_query update (pushed unless
        push=False); its answers are kept under ``checkouts[query id]``."""
        query = {"id": f"pcq-{next(self._update_ids)}", "from": _user(user_id), "currency": currency,
                 "total_amount": total_amount, "invoice_payload": invoice_payload}
        self.checkouts[query["id"]] = {"query": query, "asked_at": time.monotonic(), "answers": []}
        content = {"pre_checkout_query": query}
        return self.push(content) if push else self.new_update(content)

    def checkout_answers(self, query_id: str) -> list[dict[str, Any]]:
        """The bot's answerPreCheckoutQuery calls for a query: params, ``at`` (seconds after
        the query was asked) and ``accepted`` (whether Telegram took the answer)."""
        return self.checkouts[query_id]["answers"]

    def paid(self, user_id: int, *, charge_id: str, total_amount: int, invoice_payload: str,
             currency: str = STARS, provider_charge_id: str = "", chat_id: int | None = None,
             push: bool = True) -> dict[str, Any]:
        """Telegram took the user's payment: the service message with ``successful_payment``
        in the user's chat with the bot (pushed unless push=False); the charge can be refunded."""
        payment = {"currency": currency, "total_amount": total_amount, "invoice_payload": invoice_payload,
                   "telegram_payment_charge_id": charge_id, "provider_payment_charge_id": provider_charge_id}
        self.charges.setdefault(charge_id, {"user_id": user_id, "total_amount": total_amount, "refunded": False})
        return self._service_message(chat_id or user_id, user_id, {"successful_payment": payment}, push)

    def refunded(self, user_id: int, *, charge_id: str, total_amount: int, invoice_payload: str,
                 chat_id: int | None = None, push: bool = True) -> dict[str, Any]:
        """Telegram refunded a payment (its support did, or anyone but the bot): the service
        message with ``refunded_payment`` (pushed unless push=False)."""
        payment = {"currency": STARS, "total_amount": total_amount, "invoice_payload": invoice_payload,
                   "telegram_payment_charge_id": charge_id}
        if charge_id in self.charges:
            self.charges[charge_id]["refunded"] = True
        return self._service_message(chat_id or user_id, user_id, {"refunded_payment": payment}, push)

    def _service_message(self, chat_id: int, user_id: int, content: dict[str, Any], push: bool) -> dict[str, Any]:
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": _chat(chat_id),
                   "from": _user(user_id), **content}
        self.messages[(chat_id, message["message_id"])] = message
        if push:
            self.push({"message": message})
        return message

    def flood_next(self, method: str, retry_after: float = 1) -> None:
        self.floods.setdefault(method, []).append(retry_after)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["method"] == method]

    async def wait_for(self, check, timeout: float = 20.0):
        async with asyncio.timeout(timeout):
            while not (found := await checked(check())):
                await asyncio.sleep(0.02)
        return found

    # --- server side --------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"},
                                     status=401)
        method = request.match_info["method"]
        params, files = await _read_params(request)
        if method != "getUpdates":
            self.calls.append({"method": method, "params": params, "files": files, "at": time.monotonic(),
                               "door": self.door_of(request)})
        if refusal := spec_check.telegram_refusal(self, method, params, files):
            raise refusal
        if self.floods.get(method):
            retry = self.floods[method].pop(0)
            return web.json_response({
                "ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry}",
                "parameters": {"retry_after": retry}}, status=429)
        if refused := self._refused(method, params) or self._reply_target_missing(params):
            return refused
        handler = getattr(self, f"_m_{method}", None)
        result = handler(params, files) if handler else True
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if request.match_info["token"] != self.token:
            raise web.HTTPUnauthorized()
        file_id = request.match_info["path"].split("/")[-1]
        if file_id not in self.files:
            raise web.HTTPNotFound()
        if self.download_delay:
            await asyncio.sleep(self.download_delay)
        if file_id in self.unsized:
            return await self._stream(request, file_id)
        return web.Response(body=self.files[file_id])

    async def _stream(self, request: web.Request, file_id: str) -> web.StreamResponse:
        """A file sent chunked, counting what the reader took before it hung up."""
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        data, chunk = self.files[file_id], 64 * 1024
        self.streamed[file_id] = 0
        try:
            for start in range(0, len(data), chunk):
                await response.write(data[start:start + chunk])
                self.streamed[file_id] += len(data[start:start + chunk])
            await response.write_eof()
        except ConnectionError:
            pass  # the reader hung up (a cancelled handler keeps its count too)
        return response

    def _refused(self, method: str, params: dict[str, Any]) -> web.Response | None:
        """The Bot API's answers when a chat refuses the bot (texts as Telegram sends them)."""
        chat = params.get("chat_id")
        chat = int(chat) if isinstance(chat, int | str) and str(chat).lstrip("-").isdigit() else None
        if chat in self.blocked:
            return web.json_response({"ok": False, "error_code": 403,
                                      "description": "Forbidden: bot was blocked by the user"}, status=403)
        if method == "sendVideo" and chat in self.no_video_rights:
            return web.json_response({"ok": False, "error_code": 400, "description":
                                      "Bad Request: not enough rights to send videos to the chat"}, status=400)
        return None

    def _reply_target_missing(self, params: dict[str, Any]) -> web.Response | None:
        """A send that replies to a message not (or no longer) in its chat: refused as the Bot
        API does, unless it allows sending without the reply (ReplyParameters, or the older
        top-level reply_to_message_id / allow_sending_without_reply parameters)."""
        reply = params.get("reply_parameters")
        reply = reply if isinstance(reply, dict) else {}
        message_id = reply.get("message_id") or params.get("reply_to_message_id")
        if not message_id or "chat_id" not in params:
            return None
        allowed = reply.get("allow_sending_without_reply", params.get("allow_sending_without_reply"))
        chat = reply.get("chat_id") or params["chat_id"]
        if not str(chat).lstrip("-").isdigit():
            return None
        # ReplyParameters: allow_sending_without_reply is "always False for replies in another chat"
        if allowed in (True, "true", "True") and str(chat) == str(params["chat_id"]):
            return None
        if (int(chat), int(message_id)) in self.messages:
            return None
        return _error(400, "Bad Request: message to be replied not found")

    def _m_getMe(self, params, files):
        return self.bot_user

    def _m_setWebhook(self, params, files):
        url = params["url"]
        if not url:
            self.webhook = None
            return True
        parts = urlsplit(url)
        if not self.local and parts.scheme != "https":
            return _error(400, "Bad Request: bad webhook: HTTPS url must be provided for webhook")
        if not self.local and (parts.port or 443) not in WEBHOOK_PORTS:
            return _error(400, "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return _error(400, "Bad Request: bad webhook: Wrong HTTP URL specified")
        self.webhook = dict(params)
        if params.get("allowed_updates") is not None:
            self.allowed_updates = list(params["allowed_updates"])
        self._poll = None
        self._new_update.set()  # a pending getUpdates ends (409 below)
        queued, self._updates = self._updates, []
        if params.get("drop_pending_updates") not in (True, "true", "True", 1):
            for update in queued:  # updates not yet fetched go to the webhook now
                task = asyncio.get_running_loop().create_task(self.deliver(update))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
        return True

    def _m_deleteWebhook(self, params, files):
        self.webhook = None
        if params.get("drop_pending_updates") in (True, "true", "True", 1):
            self._updates = []
        return True

    def _m_getWebhookInfo(self, params, files):
        info: dict[str, Any] = {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                                "pending_update_count": len(self._updates)}
        if self.webhook is not None:
            info["max_connections"] = int(self.webhook.get("max_connections") or 40)
            if self.webhook.get("allowed_updates") is not None:
                info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _m_getUpdates(self, params, files):
        if self.webhook is not None:
            self.conflicts += 1
            return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                               "use deleteWebhook to delete the webhook first")
        if params.get("allowed_updates") is not None:  # kept for later calls, as Telegram does
            self.allowed_updates = list(params["allowed_updates"])
        call = self._poll = object()
        self._new_update.set()  # an earlier call still waiting ends: Telegram answers it 409
        offset = int(params.get("offset") or 0)
        # Like Telegram: asking with an offset confirms (forgets) every earlier update.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        wait = min(float(params.get("timeout") or 0), 0.5)
        pending = [u for u in self._updates if u["update_id"] >= offset]
        if not pending and wait:
            self._new_update.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._new_update.wait()
            except TimeoutError:
                pass
            pending = [u for u in self._updates if u["update_id"] >= offset]
        if self._poll is not call:  # another getUpdates (or a webhook) came meanwhile
            self.conflicts += 1
            if self.webhook is not None:
                return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                                   "use deleteWebhook to delete the webhook first")
            return _error(409, "Conflict: terminated by other getUpdates request; "
                               "make sure that only one bot instance is running")
        return pending

    def _bot_message(self, params, **content) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message = {"message_id": next(self._message_ids), "date": int(time.time()),
                   "chat": _chat(chat_id), "from": self.bot_user, **content}
        reply = params.get("reply_parameters") or {}
        replied = self.messages.get((chat_id, int(reply.get("message_id") or params.get("reply_to_message_id") or 0)))
        if replied:
            message["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        # Messages carry inline keyboards only; a ForceReply or reply keyboard is not echoed.
        if "inline_keyboard" in (params.get("reply_markup") or {}):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _m_sendMessage(self, params, files):
        return self._bot_message(params, text=params["text"])

    def _m_editMessageText(self, params, files):
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: message to edit not found"}, status=400)
        if message.get("text") == params["text"]:
            return web.json_response({"ok": False, "error_code": 400, "description":
                                      "Bad Request: message is not modified"}, status=400)
        message["text"] = params["text"]
        message.pop("reply_markup", None)
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    def _m_editMessageReplyMarkup(self, params, files):
        message = self.messages[(int(params["chat_id"]), int(params["message_id"]))]
        message["reply_markup"] = params.get("reply_markup")
        return message

    def _m_deleteMessage(self, params, files):
        if self.messages.pop((int(params["chat_id"]), int(params["message_id"])), None) is None:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: message to delete not found"}, status=400)
        return True

    def _m_sendVideo(self, params, files):
        video = files.get("video", b"")
        return self._bot_message(params, caption=params.get("caption", ""), video={
            **self.add_file(video), "width": 320, "height": 320, "duration": 2})

    def _m_sendPhoto(self, params, files):
        """As Telegram answers: the photo in sizes (the largest last); one it cannot read as an
        image, over 10 MB, or over 10000 px in width and height together is refused."""
        photo = files.get("photo", b"")
        try:
            with Image.open(io.BytesIO(photo)) as image:
                width, height = image.size
        except (OSError, ValueError):
            return _error(400, "Bad Request: IMAGE_PROCESS_FAILED")
        if len(photo) > 10 * 1024 * 1024 or width + height > 10000 or max(width, height) > 20 * min(width, height):
            return _error(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        sizes = [{**self.add_file(photo), "width": width, "height": height, "file_size": len(photo)}]
        return self._bot_message(params, caption=params.get("caption", ""), photo=sizes)

    def _m_getFile(self, params, files):
        file_id = params["file_id"]
        if file_id not in self.files:
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": "Bad Request: invalid file_id"}, status=400)
        size = self.sizes.get(file_id, len(self.files[file_id]))
        if size > DOWNLOAD_LIMIT:  # Telegram names no path for it: the bot cannot download it
            return _error(400, "Bad Request: file is too big")
        file = {"file_id": file_id, "file_unique_id": f"u{file_id}",
                "file_size": size, "file_path": f"documents/{file_id}"}
        if file_id in self.unsized:
            del file["file_size"]
        return file

    # --- payments, the server side -------------------------------------------------

    def _m_createInvoiceLink(self, params, files):
        if refused := _stars_invoice_refusal(params):
            return refused
        link = f"https://t.me/$inv{len(self.invoice_links) + 1}"
        self.invoice_links.append({"link": link, "params": params})
        return link

    def _m_sendInvoice(self, params, files):
        if refused := _stars_invoice_refusal(params):
            return refused
        total = sum(price["amount"] for price in params["prices"])
        return self._bot_message(params, invoice={
            "title": str(params["title"]), "description": str(params["description"]),
            "start_parameter": str(params.get("start_parameter") or ""), "currency": params["currency"],
            "total_amount": total})

    def _m_answerPreCheckoutQuery(self, params, files):
        """Once per query, within ``answer_window`` seconds of it; ok=False needs a reason."""
        checkout = self.checkouts.get(str(params["pre_checkout_query_id"]))
        at = time.monotonic()
        answer = {"params": params, "at": at - checkout["asked_at"] if checkout else None, "accepted": False}
        if checkout is not None:
            checkout["answers"].append(answer)
        if checkout is None or len(checkout["answers"]) > 1 or answer["at"] > self.answer_window:
            return _error(400, "Bad Request: QUERY_ID_INVALID")
        if params["ok"] in (False, "false", "False", 0) and not params.get("error_message"):
            return _error(400, "Bad Request: ERROR_MESSAGE_EMPTY")
        answer["accepted"] = True
        return True

    def _m_refundStarPayment(self, params, files):
        """A charge ``paid`` made, for its own user, once."""
        charge_id = str(params["telegram_payment_charge_id"])
        if not charge_id:
            return _error(400, "Bad Request: CHARGE_ID_EMPTY")
        charge = self.charges.get(charge_id)
        if charge is None or str(charge["user_id"]) != str(params["user_id"]):
            return _error(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge["refunded"]:
            return _error(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        charge["refunded"] = True
        self.refunds.append({"user_id": int(params["user_id"]), "telegram_payment_charge_id": charge_id,
                             "at": time.monotonic()})
        return True


def _stars_invoice_refusal(params: dict[str, Any]) -> web.Response | None:
    """Telegram's answer to an invoice it refuses: in Stars (XTR) no provider token, exactly
    one price and no tips; another currency needs a payment provider's token; every amount a
    positive whole number (the spec check has already refused wrong types and lengths)."""
    prices = params.get("prices")
    amounts = [price.get("amount") for price in prices] if isinstance(prices, list) else []
    if any(type(amount) is not int or amount <= 0 for amount in amounts) or not amounts:
        return _error(400, "Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID")
    # Any text but the empty one is a token (also "[]", which PTB sends for "" under Defaults).
    token = params.get("provider_token") not in (None, "")
    if params.get("currency") != STARS:
        return None if token else _error(400, "Bad Request: PAYMENT_PROVIDER_INVALID")
    if token or len(amounts) != 1 or params.get("max_tip_amount") or params.get("suggested_tip_amounts"):
        return _error(400, "Bad Request: STARS_INVOICE_INVALID")
    return None


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}


def chat_of(chat_id: int, title: str = "Test group", kind: str = "supergroup") -> dict[str, Any]:
    """A group or channel as a message's ``sender_chat``."""
    return {"id": chat_id, "type": kind, "title": title}


def _chat(chat_id: int) -> dict[str, Any]:
    if chat_id < 0:
        return {"id": chat_id, "type": "supergroup", "title": "Test group"}
    return {"id": chat_id, "type": "private", "first_name": "User"}


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            data = await part.read()
            if part.filename:
                files[part.name] = bytes(data)
            else:
                params[part.name] = _value(data.decode())
    elif request.content_type == "application/json":
        params = await request.json()
    else:
        form = await request.post()
        params = {k: _value(v) for k, v in form.items()}
    # PTB may pass a file as attach://name
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            files[key] = files.pop(value.removeprefix("attach://"), b"")
    return params, files


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
