"""A fake Discord REST API for discord.py (via ``Route.BASE``), plus interaction payloads.

It records every request; answers login, command sync, interaction callbacks,
webhook (followup) messages, channel messages and attachment downloads; and can
treat an interaction token as expired ("Invalid Webhook Token", code 50027).
``refuse_channels`` makes a channel refuse the bot's messages (403 with Discord's code
and message, e.g. 50013 Missing Permissions); ``closed_dms`` users refuse direct messages.

The gateway shards as Discord's does (tests/specs/discord-gateway-sharding.md): an
IDENTIFY may carry ``"shard": [id, count]``; that session's READY names it and lists the
servers (``guild``) on it, (guild_id >> 22) % count == id, each then sent as GUILD_CREATE;
an event of a server reaches only the sessions of its shard, one without a server (a
direct message) only those of shard 0; an invalid shard closes the socket with 4010, more
than 2,500 servers on one session with 4011 (sharding required). ``GET /gateway/bot``
recommends ``recommended_shards``.

Every REST answer carries Discord's rate limit headers (X-RateLimit-Limit, -Remaining,
-Reset, -Reset-After, -Bucket) and ``Via``, counted per route and major parameter (channel,
server, webhook or interaction); a request over ``rate_limit`` (requests per window) is
answered 429 with ``retry_after``, as Discord answers a client that ignores the headers.
An interaction callback is answered 204 without ``?with_response=true``, and 200 with the
interaction callback response (the interaction and the message it made) with it.

As Discord does, a message is read only through its own channel (another channel answers
"Unknown Message"), a channel the bot cannot view answers "Missing Access", and the
message of a component or form interaction is in the interaction's channel; messages an
interaction's answers make are in that interaction's channel.

Premium apps (docs: resources/entitlement, monetization): ``purchase`` is a user buying a
consumable SKU in the store (an entitlement of type PURCHASE, or TEST_MODE_PURCHASE,
dispatched as ENTITLEMENT_CREATE; Discord lets a user hold one unconsumed entitlement of a
consumable SKU at a time), ``refund`` is Discord refunding it (deleted, ENTITLEMENT_DELETE).
The REST routes list entitlements (user_id, sku_ids, guild_id, before, after, limit,
exclude_ended, exclude_deleted with Discord's defaults; ascending ids), get one, consume one
(204; 404 Unknown Entitlement 10029; a SKU that is not consumable 400 40018), and create
(owner_type 2: a user; 40074 while the user holds one unconsumed) and delete (only test
ones, 40019) test entitlements. Discord documents no answer for consuming an entitlement
twice: the fake answers ``consumed_again`` (a 400 by default), so a client must not rely on
it. ``refuse_consume`` makes the next consumes of an entitlement fail (e.g. a 500), and
``refuse_listing`` the next listings (a 503, a 429 with its retry_after).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from datetime import datetime
from typing import Any

from aiohttp import web

from tests import spec_check
from tests.doors import Doors

APP_ID = 900000000000000001
BOT_ID = 900000000000000002
GUILD = 800000000000000001
CHANNEL = 700000000000000001
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011  # gateway close codes
MAX_GUILDS_PER_SHARD = 2500
MAJOR_PARAMETERS = ("cid", "guild", "app", "iid", "token")
PURCHASE, TEST_MODE_PURCHASE = 1, 4  # entitlement types (docs: Entitlement Types)
USER_OWNER = 2  # a test entitlement's owner_type for a user
UNKNOWN_ENTITLEMENT = {"code": 10029, "message": "Unknown Entitlement"}  # route parts that get a bucket of their own
RATE_LIMIT = (50, 1.0)  # requests per window (seconds) per bucket: generous, the tests' bots are busy


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord sends a server's events to."""
    return (guild_id >> 22) % shard_count


def _reply(body: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly "application/json",
    # as Discord sends it (aiohttp's json_response would add a charset).
    return web.Response(body=json.dumps(body).encode(), status=status,
                        headers={"Content-Type": "application/json"})


class RateLimits:
    """Discord's per-route rate limits: a bucket per route (its hash in X-RateLimit-Bucket)
    and major parameters, ``limit`` requests per ``window`` seconds."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.windows: dict[tuple[str, str], tuple[float, int]] = {}  # (bucket, major) -> (resets at, used)
        self.refused: list[str] = []  # "METHOD path" of each request answered 429
        self.emptied = 0  # requests that took a bucket's last one (Remaining: 0): the client must wait

    def take(self, request: web.Request) -> tuple[bool, dict[str, str]]:
        """Count one request: whether it may go through, and the headers of its answer."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        bucket = hashlib.sha1(f"{request.method} {route}".encode()).hexdigest()[:16]
        major = "/".join(request.match_info.get(name, "") for name in MAJOR_PARAMETERS)
        now = time.time()
        resets_at, used = self.windows.get((bucket, major), (0.0, 0))
        if now >= resets_at:
            resets_at, used = now + self.window, 0
        allowed = used < self.limit
        used += 1 if allowed else 0
        self.emptied += 1 if allowed and used == self.limit else 0
        self.windows[(bucket, major)] = (resets_at, used)
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.limit - used),
                   "X-RateLimit-Reset": f"{resets_at:.3f}", "X-RateLimit-Reset-After": f"{resets_at - now:.3f}",
                   "X-RateLimit-Bucket": bucket, "Via": "1.1 google"}
        if not allowed:
            self.refused.append(f"{request.method} {request.path}")
            headers["X-RateLimit-Scope"] = "user"
            headers["Retry-After"] = str(max(1, round(resets_at - now + 0.5)))
        return allowed, headers


def _user(user_id: int, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0",
            "global_name": f"User {user_id}", "avatar": None, "bot": bot}


class FakeDiscord(Doors):
    def __init__(self, token: str):
        self.token = token
        self.calls: list[dict[str, Any]] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.originals: dict[str, int] = {}  # interaction token -> its response message
        self.interaction_messages: dict[str, int] = {}  # component interaction token -> its message
        self.interaction_channels: dict[str, int] = {}  # interaction token -> the channel it happened in
        self.hidden_channels: set[int] = set()  # channels the bot cannot view
        self.attachments: dict[int, bytes] = {}
        self.streamed: set[int] = set()  # attachments served chunked, without a Content-Length
        self.expired_tokens: set[str] = set()
        self.refuse_channels: dict[int, tuple[int, str]] = {}  # channel -> (code, message) of its 403
        self.closed_dms: set[int] = set()  # users whose DMs refuse the bot (50007)
        self.dm_channels: dict[int, int] = {}  # DM channel -> its user
        self.identify: dict[str, Any] | None = None  # what the client sent to log in (the latest)
        self.identifies: list[dict[str, Any]] = []  # every IDENTIFY, in order
        self.guilds: dict[int, dict[str, Any]] = {}  # the servers the bot is in (``guild``)
        self.recommended_shards = 1  # GET /gateway/bot's "shards"
        self.entitlements: dict[int, dict[str, Any]] = {}  # premium apps: id -> entitlement
        self.consumable_skus: set[int] = set()  # SKUs that are consumables (``purchase`` adds them)
        self.consumes: list[int] = []  # each entitlement id a consume request succeeded for
        # entitlement id -> answers (status, body) its next consume requests get instead
        self.refuse_consume: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self.consumed_again: tuple[int, dict[str, Any]] = (400, {"code": 0, "message": "Entitlement already consumed"})
        self.refuse_listing: list[tuple[int, dict[str, Any]]] = []  # answers the next listings get instead
        self.rate_limits = RateLimits(*RATE_LIMIT)  # set another to make the limits bite
        # Requests real Discord would refuse (tests/spec_check.py); asserted empty after each test.
        # A test that sends bad requests on purpose checks and clears them, or sets check_specs.
        self.violations: list[str] = []
        self.check_specs = True
        self.spec = spec_check.DiscordRules()  # acknowledged interactions, upload limits
        spec_check.watch(self)
        self._sockets: list[web.WebSocketResponse] = []
        self._shards: dict[web.WebSocketResponse, tuple[int, int]] = {}  # a sharded session's [id, count]
        self._seq = itertools.count(1)
        self._ids = itertools.count(500000000000000001)
        self._runner: web.AppRunner | None = None
        self.base = ""
        # door(): more addresses of this same fake, so a test tells which process made a request.
        self._init_doors()

    async def start(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[self._by_door, self._rate_limited])
        api = "/api/v10"
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_post(f"{api}/users/@me/channels", self._create_dm)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._app_info)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._sync)
        app.router.add_put(f"{api}/applications/{{app}}/guilds/{{guild}}/commands", self._sync)
        app.router.add_post(f"{api}/interactions/{{iid}}/{{token}}/callback", self._callback)
        app.router.add_route("*", f"{api}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._webhook_message)
        app.router.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        app.router.add_post(f"{api}/channels/{{cid}}/messages", self._channel_message)
        app.router.add_get(f"{api}/channels/{{cid}}/messages/{{mid}}", self._get_message)
        app.router.add_get("/attachments/{aid}/{name}", self._attachment)
        app.router.add_get(f"{api}/gateway/bot", self._gateway_bot)
        app.router.add_get(f"{api}/applications/{{app}}/entitlements", self._list_entitlements)
        app.router.add_post(f"{api}/applications/{{app}}/entitlements", self._create_test_entitlement)
        app.router.add_get(f"{api}/applications/{{app}}/entitlements/{{eid}}", self._get_entitlement)
        app.router.add_delete(f"{api}/applications/{{app}}/entitlements/{{eid}}", self._delete_test_entitlement)
        app.router.add_post(f"{api}/applications/{{app}}/entitlements/{{eid}}/consume", self._consume)
        app.router.add_get("/gateway", self._gateway)
        # A handler still open at the end (a gateway socket of a second client) holds no test for a minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _rate_limited(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The REST API's rate limits: headers on every answer, 429 over the limit."""
        if not request.path.startswith("/api/"):
            return await handler(request)  # the gateway and the CDN (attachments) have none
        allowed, headers = self.rate_limits.take(request)
        if not allowed:
            retry_after = float(headers["X-RateLimit-Reset-After"])
            answer = _reply({"message": "You are being rate limited.", "retry_after": retry_after,
                             "global": False}, status=429)
        else:
            try:
                answer = await handler(request)
            except web.HTTPException as refused:  # spec_check's refusals: the headers too
                refused.headers.update(headers)
                raise
        answer.headers.update(headers)
        return answer

    @property
    def gateway_url(self) -> str:
        return f"{self.base.replace('http://', 'ws://')}/gateway"

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event (e.g. INTERACTION_CREATE) to every connected session that
        Discord would send it to: a server's event to the sessions of its shard, any
        other to those of shard 0 (and to every session that does not shard)."""
        self.spec.saw_event(event, data)
        guild = data.get("guild_id") or (data.get("id") if event.startswith("GUILD_") else None)
        for socket in self._sockets:
            if self._receives(socket, int(guild) if guild else None):
                await socket.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

    def _receives(self, socket: web.WebSocketResponse, guild_id: int | None) -> bool:
        if socket not in self._shards:
            return True
        shard_id, shard_count = self._shards[socket]
        return shard_id == (shard_of(guild_id, shard_count) if guild_id is not None else 0)

    def sessions(self, guild_id: int | None = None) -> list[tuple[int, int] | None]:
        """The [id, count] of each connected session that receives ``guild_id``'s events (None: unsharded)."""
        return [self._shards.get(socket) for socket in self._sockets if self._receives(socket, guild_id)]

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})  # HELLO
        async for frame in socket:
            message = json.loads(frame.data)
            if message["op"] == 2:  # IDENTIFY
                self.identify = message["d"]
                self.identifies.append(message["d"])
                shard = message["d"].get("shard")
                if shard is not None and not _valid_shard(shard):
                    await socket.close(code=INVALID_SHARD, message=b"Invalid shard.")
                    break
                guilds = [g for g in self.guilds if shard is None or shard_of(g, shard[1]) == shard[0]]
                if len(guilds) > MAX_GUILDS_PER_SHARD:
                    await socket.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
                    break
                ready = {"v": 10, "user": _user(BOT_ID, bot=True), "session_id": f"fake-{next(self._ids)}",
                         "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
                         "resume_gateway_url": self.gateway_url, "private_channels": [],
                         "application": {"id": str(APP_ID), "flags": 0}}
                if shard is not None:
                    ready["shard"] = shard
                    self._shards[socket] = (shard[0], shard[1])
                await socket.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
                for guild in guilds:  # then each server of the session, as it becomes available
                    await socket.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq),
                                            "d": self.guilds[guild]})
                self._sockets.append(socket)
            elif message["op"] == 1:  # heartbeat
                await socket.send_json({"op": 11})
        if socket in self._sockets:
            self._sockets.remove(socket)
        self._shards.pop(socket, None)
        return socket

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return await self._json(request, {"message": "401: Unauthorized", "code": 0}, status=401)
        return await self._json(request, {
            "url": self.gateway_url, "shards": self.recommended_shards,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86400000, "max_concurrency": 1}})

    @property
    def api_base_url(self) -> str:
        return f"{self.base}/api/v10"

    # --- what the test sends ------------------------------------------------------

    def attachment(self, data: bytes, filename: str = "cat.jpg", content_type: str = "image/jpeg",
                   size: int | None = None, *, streamed: bool = False) -> dict[str, Any]:
        """An uploaded file; ``size`` is what Discord reports (default: the true size),
        ``streamed`` serves it chunked, so only reading it tells how large it is."""
        aid = next(self._ids)
        self.attachments[aid] = data
        if streamed:
            self.streamed.add(aid)
        return {"id": str(aid), "filename": filename, "size": size or len(data),
                "url": f"{self.base}/attachments/{aid}/{filename}",
                "proxy_url": f"{self.base}/attachments/{aid}/{filename}",
                "content_type": content_type, "width": 640, "height": 480}

    def guild(self, guild_id: int, channel: int = CHANNEL) -> dict[str, Any]:
        """A server the bot is in, with one text channel: listed in READY (on its shard)."""
        self.guilds[guild_id] = {
            "id": str(guild_id), "name": f"Server {guild_id}", "icon": None, "owner_id": str(1),
            "unavailable": False, "large": False, "member_count": 1, "joined_at": "2024-01-01T00:00:00+00:00",
            "roles": [{"id": str(guild_id), "name": "@everyone", "permissions": "0", "position": 0, "color": 0,
                       "hoist": False, "managed": False, "mentionable": False, "flags": 0}],
            "channels": [{"id": str(channel), "type": 0, "name": "general", "position": 0,
                          "permission_overwrites": [], "nsfw": False}],
            "emojis": [], "stickers": [], "features": [], "members": [], "voice_states": [], "presences": [],
            "threads": [], "stage_instances": [], "guild_scheduled_events": [], "premium_tier": 0,
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "preferred_locale": "en-US",
            "system_channel_flags": 0, "premium_progress_bar_enabled": False}
        return self.guilds[guild_id]

    def interaction(self, kind: int, data: dict[str, Any], *, user: int, permissions: str = "0",
                    nsfw: bool = False, size_limit: int = 25 * 1024 * 1024,
                    message: dict[str, Any] | None = None, dm: int | None = None,
                    channel: int | None = None, guild: int = GUILD,
                    entitlements: list[dict[str, Any]] = ()) -> dict[str, Any]:
        """An interaction in ``channel`` (by default the message's, else ``CHANNEL``) of ``guild``."""
        iid = next(self._ids)
        channel = channel or (int(message["channel_id"]) if message is not None else None) or dm or CHANNEL
        if message is not None:  # Discord sends the message the component is on, in its own channel
            assert int(message["channel_id"]) == channel, "a component's message is in the interaction's channel"
        payload = {
            "id": str(iid), "application_id": str(APP_ID), "type": kind, "token": f"itoken-{iid}",
            "version": 1, "guild_id": str(guild), "channel_id": str(channel),
            "channel": {"id": str(channel), "type": 0, "guild_id": str(guild), "name": "general",
                        "nsfw": nsfw, "position": 0, "permission_overwrites": []},
            "member": {"user": _user(user), "roles": [], "permissions": permissions,
                       "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                       "flags": 0},
            "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US", "entitlements": list(entitlements),
            "authorizing_integration_owners": {"0": str(guild)}, "context": 0,
            "attachment_size_limit": size_limit, "data": data,
        }
        if message is not None:
            payload["message"] = message
            self.interaction_messages[payload["token"]] = int(message["id"])
        if dm:  # a direct message: no server, the user instead of a member
            for key in ("guild_id", "member"):
                payload.pop(key)
            payload.update(user=_user(user), channel_id=str(dm), context=1,
                           channel={"id": str(dm), "type": 1, "recipients": [_user(user)]},
                           authorizing_integration_owners={"1": str(user)})
        self.interaction_channels[payload["token"]] = channel
        self.spec.saw_event("INTERACTION_CREATE", payload)  # its upload limit, for the checks
        return payload

    def slash(self, name: str, options: list[dict[str, Any]], *, user: int,
              attachments: list[dict[str, Any]] = (), subcommand: str | None = None,
              **kw: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"id": "1", "name": name, "type": 1, "options": options}
        if subcommand:
            data["options"] = [{"name": subcommand, "type": 1, "options": options}]
        if attachments:
            data["resolved"] = {"attachments": {a["id"]: a for a in attachments}}
        if "users" in kw:
            data.setdefault("resolved", {})["users"] = {str(u): _user(u) for u in kw.pop("users")}
        return self.interaction(2, data, user=user, **kw)

    def user_message(self, user: int, attachments: list[dict[str, Any]] = (),
                     embeds: list[dict[str, Any]] = (), *, mentions_bot: bool = False,
                     **fields: Any) -> dict[str, Any]:
        """A user's message (``fields``: e.g. content, guild_id, channel_id for a DM)."""
        if mentions_bot:
            fields.update(mentions=[_user(BOT_ID, bot=True)], content=f"<@{BOT_ID}> {fields.get('content', '')}")
        return self._message(author=_user(user), attachments=list(attachments), embeds=list(embeds), **fields)

    async def purchase(self, user: int, sku_id: int, *, test: bool = False, dispatch: bool = True) -> dict[str, Any]:
        """``user`` buys the consumable SKU ``sku_id`` in the app's store: an entitlement of
        type PURCHASE (TEST_MODE_PURCHASE with ``test``), sent as ENTITLEMENT_CREATE."""
        self.consumable_skus.add(sku_id)
        assert self._unconsumed(user, sku_id) is None, "Discord sells no second one before the first is consumed"
        entitlement = self._entitlement(user, sku_id, TEST_MODE_PURCHASE if test else PURCHASE)
        if dispatch:
            await self.dispatch("ENTITLEMENT_CREATE", entitlement)
        return entitlement

    async def refund(self, entitlement_id: int) -> dict[str, Any]:
        """Discord refunds a purchase: the entitlement is deleted, sent as ENTITLEMENT_DELETE."""
        entitlement = self.entitlements[entitlement_id]
        entitlement["deleted"] = True
        await self.dispatch("ENTITLEMENT_DELETE", entitlement)
        return entitlement

    def webhook_tokens_expire(self, token: str) -> None:
        self.expired_tokens.add(token)

    def to(self, path_part: str, method: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.calls if path_part in c["path"] and (method is None or c["method"] == method)]

    # --- server side --------------------------------------------------------------

    def _message(self, **fields: Any) -> dict[str, Any]:
        message = {"id": str(next(self._ids)), "channel_id": str(CHANNEL), "type": 0, "content": "",
                   "author": _user(BOT_ID, bot=True), "attachments": [], "embeds": [], "mentions": [],
                   "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
                   "timestamp": "2026-11-21T20:00:00+00:00", "edited_timestamp": None, "flags": 0,
                   "components": [], **fields}
        self.messages[int(message["id"])] = message
        return message

    def _entitlement(self, user: int, sku_id: int, kind: int) -> dict[str, Any]:
        entitlement_id = next(self._ids)
        self.entitlements[entitlement_id] = {
            "id": str(entitlement_id), "sku_id": str(sku_id), "application_id": str(APP_ID), "user_id": str(user),
            "type": kind, "deleted": False, "starts_at": None, "ends_at": None, "consumed": False,
            "gift_code_flags": 0, "promotion_id": None}
        return self.entitlements[entitlement_id]

    def _unconsumed(self, user: int, sku_id: int) -> dict[str, Any] | None:
        return next((e for e in self.entitlements.values() if e["user_id"] == str(user)
                     and e["sku_id"] == str(sku_id) and not e["deleted"] and not e["consumed"]), None)

    async def _record(self, request: web.Request) -> dict[str, Any]:
        call: dict[str, Any] = {"method": request.method, "path": request.path, "query": dict(request.query),
                                "headers": dict(request.headers), "json": None, "files": {}, "at": time.monotonic(),
                                "door": self.door_of(request)}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()
                if part.name == "payload_json":
                    call["json"] = json.loads(data)
                else:
                    call["files"][part.filename] = bytes(data)
        elif request.can_read_body:
            text = await request.text()
            call["json"] = json.loads(text) if text else None
        self.calls.append(call)
        if refusal := spec_check.discord_refusal(self, self.spec, request.method, request.path, call["json"],
                                                 call["files"].values(), call["query"]):
            raise refusal
        return call

    async def _json(self, request: web.Request, body: Any, status: int = 200) -> web.Response:
        await self._record(request)
        return _reply(body, status=status)

    async def _me(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {self.token}":  # as Discord answers a bad token
            return await self._json(request, {"message": "401: Unauthorized", "code": 0}, status=401)
        return await self._json(request, _user(BOT_ID, bot=True))

    async def _app_info(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bot {self.token}":  # as Discord answers a bad token
            return await self._json(request, {"message": "401: Unauthorized", "code": 0}, status=401)
        return await self._json(request, {
            "id": str(APP_ID), "name": "Kling", "icon": None, "description": "", "rpc_origins": [],
            "bot_public": True, "bot_require_code_grant": False, "owner": _user(1),
            "summary": "", "verify_key": "00", "team": None, "flags": 0, "bot": _user(BOT_ID, bot=True)})

    async def _sync(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        return _reply([{"description": "", **c, "id": str(next(self._ids)), "application_id": str(APP_ID),
                                   "version": "1", "type": c.get("type", 1)} for c in call["json"]])

    async def _callback(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        body = call["json"] or {}
        kind = body.get("type")
        token = request.match_info["token"]
        answer: dict[str, Any] = {"interaction": {"id": request.match_info["iid"], "type": 2}}
        if kind in (4, 5):  # a message, or "thinking…" that becomes one
            data = body.get("data") or {}
            message = self._message(content=data.get("content", ""), flags=data.get("flags", 0),
                                    components=data.get("components", []), channel_id=self._channel_of(token))
            self.originals[token] = int(message["id"])
            answer["interaction"].update(response_message_id=message["id"],
                                         response_message_loading=kind == 5,
                                         response_message_ephemeral=bool(data.get("flags", 0) & 64))
            answer["resource"] = {"type": kind, "message": message}
        elif kind == 7:  # update the component's message
            message = self.messages.get(self.interaction_messages.get(token, 0))
            if message is not None:
                data = body.get("data") or {}
                message.update({k: v for k, v in data.items() if k in ("content", "components")})
            answer["resource"] = {"type": 7}
        if request.query.get("with_response", "").lower() not in ("true", "1"):
            return web.Response(status=204)  # the OpenAPI's 204: no body unless asked for
        return _reply(answer)

    def _expired(self, token: str) -> web.Response | None:
        if token in self.expired_tokens:
            return _reply({"code": 50027, "message": "Invalid Webhook Token"}, status=401)
        return None

    async def _webhook_message(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        token = request.match_info["token"]
        if refused := self._expired(token):
            return refused
        mid = request.match_info["mid"]
        message_id = self.originals.get(token) if mid == "@original" else int(mid)
        message = self.messages.get(message_id or 0)
        if message is None:
            return _reply({"code": 10008, "message": "Unknown Message"}, status=404)
        if request.method == "DELETE":
            self.messages.pop(message_id)
            return web.Response(status=204)
        if request.method == "PATCH":
            message.update({k: v for k, v in (call["json"] or {}).items() if k in ("content", "components")})
        return _reply(message)

    async def _followup(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        if refused := self._expired(request.match_info["token"]):
            return refused
        body = call["json"] or {}
        message = self._message(content=body.get("content", ""), flags=body.get("flags", 0),
                                components=body.get("components", []),
                                channel_id=self._channel_of(request.match_info["token"]),
                                attachments=[{"id": str(next(self._ids)), "filename": name, "size": len(data),
                                              "url": "", "proxy_url": ""} for name, data in call["files"].items()])
        return _reply(message)

    async def _create_dm(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        user = int(call["json"]["recipient_id"])
        channel = next((c for c, u in self.dm_channels.items() if u == user), None) or next(self._ids)
        self.dm_channels[channel] = user
        return _reply({"id": str(channel), "type": 1, "last_message_id": None, "flags": 0,
                       "recipients": [_user(user)]})

    async def _channel_message(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        body = call["json"] or {}
        channel = int(request.match_info["cid"])
        if channel in self.refuse_channels:
            code, message = self.refuse_channels[channel]
            return _reply({"code": code, "message": message}, status=403)
        if self.dm_channels.get(channel) in self.closed_dms:
            return _reply({"code": 50007, "message": "Cannot send messages to this user"}, status=403)
        return _reply(self._message(content=body.get("content", ""), components=body.get("components", []),
                                    channel_id=request.match_info["cid"],
                                    attachments=[{"id": str(next(self._ids)), "filename": name, "size": len(data),
                                                  "url": "", "proxy_url": ""}
                                                 for name, data in call["files"].items()]))

    def _channel_of(self, token: str) -> str:
        return str(self.interaction_channels.get(token, CHANNEL))

    async def _get_message(self, request: web.Request) -> web.Response:
        await self._record(request)
        channel = request.match_info["cid"]
        if int(channel) in self.hidden_channels:
            return _reply({"code": 50001, "message": "Missing Access"}, status=403)
        message = self.messages.get(int(request.match_info["mid"]))
        if message is None or message["channel_id"] != channel:  # a message is read through its own channel
            return _reply({"code": 10008, "message": "Unknown Message"}, status=404)
        return _reply(message)

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        aid = int(request.match_info["aid"])
        data = self.attachments.get(aid)
        if data is None:
            raise web.HTTPNotFound()
        if aid not in self.streamed:
            return web.Response(body=data)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 64 * 1024):
            await response.write(data[start:start + 64 * 1024])
        await response.write_eof()
        return response

    # --- premium apps: entitlements --------------------------------------------------

    async def _list_entitlements(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.refuse_listing:
            status, body = self.refuse_listing.pop(0)
            return _reply(body, status=status)
        query = request.query
        found = sorted(self.entitlements.values(), key=lambda e: int(e["id"]))
        for field in ("user_id", "guild_id"):
            if field in query:
                found = [e for e in found if e.get(field) == query[field]]
        if "sku_ids" in query:
            found = [e for e in found if e["sku_id"] in query["sku_ids"].split(",")]
        if _true(query.get("exclude_ended", "false")):
            now = time.time()
            found = [e for e in found if e["ends_at"] is None
                     or _timestamp(e["ends_at"]) > now]
        if _true(query.get("exclude_deleted", "true")):  # Discord's default: deleted ones left out
            found = [e for e in found if not e["deleted"]]
        limit = int(query.get("limit", 100))
        if "before" in query:  # the `limit` closest before it, still in ascending order
            found = [e for e in found if int(e["id"]) < int(query["before"])][-limit:]
        else:
            found = [e for e in found if int(e["id"]) > int(query.get("after", 0))][:limit]
        return _reply(found)

    def _known(self, request: web.Request) -> dict[str, Any] | None:
        entitlement_id = request.match_info["eid"]
        return self.entitlements.get(int(entitlement_id)) if entitlement_id.isdigit() else None

    async def _get_entitlement(self, request: web.Request) -> web.Response:
        await self._record(request)
        entitlement = self._known(request)
        return _reply(entitlement) if entitlement is not None else _reply(UNKNOWN_ENTITLEMENT, status=404)

    async def _consume(self, request: web.Request) -> web.Response:
        await self._record(request)
        entitlement = self._known(request)
        if entitlement is None:
            return _reply(UNKNOWN_ENTITLEMENT, status=404)
        refusals = self.refuse_consume.get(int(entitlement["id"]))
        if refusals:
            status, body = refusals.pop(0)
            return _reply(body, status=status)
        if int(entitlement["sku_id"]) not in self.consumable_skus:
            return _reply({"code": 40018, "message": "Only consumable SKUs can be consumed"}, status=400)
        if entitlement["consumed"]:
            status, body = self.consumed_again
            return _reply(body, status=status)
        entitlement["consumed"] = True
        self.consumes.append(int(entitlement["id"]))
        return web.Response(status=204)

    async def _create_test_entitlement(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        body = call["json"]
        if int(body["owner_type"]) != USER_OWNER:
            return _reply({"code": 50035, "message": "Invalid Form Body"}, status=400)  # the fake has no servers' ones
        user, sku_id = int(body["owner_id"]), int(body["sku_id"])
        if self._unconsumed(user, sku_id) is not None:
            return _reply({"code": 40074, "message": "An entitlement has already been granted for this resource"},
                          status=400)
        self.consumable_skus.add(sku_id)
        entitlement = self._entitlement(user, sku_id, TEST_MODE_PURCHASE)
        await self.dispatch("ENTITLEMENT_CREATE", entitlement)
        return _reply({k: v for k, v in entitlement.items() if k not in ("starts_at", "ends_at")})

    async def _delete_test_entitlement(self, request: web.Request) -> web.Response:
        await self._record(request)
        entitlement = self._known(request)
        if entitlement is None or entitlement["deleted"]:
            return _reply(UNKNOWN_ENTITLEMENT, status=404)
        if entitlement["type"] != TEST_MODE_PURCHASE:
            return _reply({"code": 40019, "message": "You can only delete sandbox entitlements."}, status=400)
        await self.refund(int(entitlement["id"]))
        return web.Response(status=204)


def _true(value: str) -> bool:
    """A boolean query string as Discord reads it (the spec check refused other words)."""
    return value in spec_check.TRUE_WORDS


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _valid_shard(shard: Any) -> bool:
    """``[shard_id, num_shards]``: two whole numbers, 0 <= shard_id < num_shards."""
    return (isinstance(shard, list) and len(shard) == 2 and all(type(n) is int for n in shard)
            and 0 <= shard[0] < shard[1])
