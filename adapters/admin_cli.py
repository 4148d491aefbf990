"""The admins' commands on the command line: ``kling-bot pause|resume``, ``kling-bot users
ban|unban|list``, ``kling-bot credits show|grant|set`` and ``kling-bot payments list``, on the
configured database.

They act for every process sharing that database (a pause holds there within seconds).
Users are named by their key, ``platform:id`` (``telegram:123456``, ``discord:4567…``).
Ledger rows and bans they write say "cli".
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

from adapters import app
from bot import messages
from bot.engine import Engine
from bot.jobs import UserRef

MAX_CREDITS = 1_000_000_000  # credits one grant or set may move; far below the databases' integers
BY = "cli"  # who the command line acts as, in bans, pauses and the ledger
PLATFORMS = ("telegram", "discord", app.CLI_PLATFORM)
# The ids each chat platform gives: Telegram's users (and, negative, the groups and channels
# a message is sent as), Discord's snowflakes. ASCII digits only: int() also reads "٣".
NUMERIC_IDS = {"telegram": (re.compile(r"-?[0-9]{1,20}", re.ASCII), 2**63),
               "discord": (re.compile(r"[0-9]{1,20}", re.ASCII), 2**64)}


def user_from_key(key: str) -> UserRef | None:
    """The user a ``platform:id`` key names; None when it names none (a chat platform's
    id that is no number of it: "telegram:abc" would ban, or credit, no one)."""
    platform, _, user_id = key.strip().partition(":")
    if platform not in PLATFORMS or not user_id or any(ch.isspace() for ch in user_id):
        return None
    if platform in NUMERIC_IDS:
        shape, bound = NUMERIC_IDS[platform]
        if not shape.fullmatch(user_id) or abs(number := int(user_id)) >= bound:
            return None
        user_id = str(number)  # "0042" is user 42, as the chat names them
    return UserRef(platform, user_id)  # no name: the user's row keeps the one their chat gives


def _engine(config: Path | None) -> contextlib.AbstractAsyncContextManager[Engine | None]:
    """An engine on the configured store, which must exist (``app.opened_engine``), or None
    with the reason said."""
    return app.opened_engine(app.settings_from(config), existing=True)


async def run_pause(config: Path | None, reason: str, *, refund: bool) -> int:
    """``kling-bot pause``: every process refuses new requests; with ``refund``, queued jobs
    are cancelled and refunded, their owners told through the chat platforms' HTTP APIs."""
    async with _engine(config) as engine:
        if engine is None:
            return app.EXIT_USAGE
        # A worker's couriers (HTTP only), so each refunded owner hears of it in their chat.
        couriers = app._deliveries(engine.settings, engine) if refund else []
        started = [courier for courier in couriers if await app._start(courier) is None]
        try:
            refunded = await engine.pause(reason, BY, refund=refund)
        finally:
            for courier in started:
                await app._quietly(courier.stop())
        app.say(messages.now_paused(reason.strip(), len(refunded), messages.CLI_RESUME), sys.stdout)
        return 0


async def run_resume(config: Path | None) -> int:
    async with _engine(config) as engine:
        if engine is None:
            return app.EXIT_USAGE
        was = await engine.resume(BY)
        app.say(messages.NOW_RESUMED if was else messages.NOT_PAUSED, sys.stdout)
        return 0


async def run_users(config: Path | None, action: str, key: str | None, reason: str) -> int:
    """``kling-bot users ban|unban ID`` and ``users list``."""
    user = user_from_key(key) if key is not None else None
    if action != "list" and user is None:
        app.fail(messages.CLI_USER_KEY)
        return app.EXIT_USAGE
    async with _engine(config) as engine:
        if engine is None:
            return app.EXIT_USAGE
        if action == "list":
            app.say(messages.bans_list(await engine.bans()), sys.stdout)
        elif action == "ban":
            assert user is not None
            fresh = await engine.ban(user.key, BY, reason)
            app.say(messages.now_banned(user.key, already=not fresh), sys.stdout)
        else:
            assert user is not None
            app.say(messages.now_unbanned(user.key, await engine.unban(user.key)), sys.stdout)
        return 0


async def run_credits(config: Path | None, action: str, key: str, amount: int | None) -> int:
    """``kling-bot credits show ID``, ``credits grant ID N``, ``credits set ID N``."""
    user = user_from_key(key)
    if user is None:
        app.fail(messages.CLI_USER_KEY)
        return app.EXIT_USAGE
    async with _engine(config) as engine:
        if engine is None:
            return app.EXIT_USAGE
        if action == "grant":
            assert amount is not None
            await engine.grant(user, amount, by=BY)
        elif action == "set":
            assert amount is not None
            await engine.set_credits(user, amount, by=BY)
        app.say(await engine.credits_report(user, user.key), sys.stdout)
        return 0


async def run_payments(config: Path | None, days: int, key: str | None, *, as_json: bool) -> int:
    """``kling-bot payments list [--user ID] [--days N] [--json]``: newest first."""
    user = user_from_key(key) if key is not None else None
    if key is not None and user is None:
        app.fail(messages.CLI_USER_KEY)
        return app.EXIT_USAGE
    async with _engine(config) as engine:
        if engine is None:
            return app.EXIT_USAGE
        payments = await engine.payments_list(days, user.key if user else None)
        app.say(json.dumps([payment.as_json() for payment in payments], indent=2) if as_json
                else messages.payments_list_text(payments, days, user.key if user else None), sys.stdout)
        return 0
