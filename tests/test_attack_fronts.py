"""Issue 15's chat side under attack: the Telegram webhook listener (anyone on the internet
reaches it), the poller's lease against webhook fronts, fronts and workers, Discord shards.

The listener runs over real sockets on loopback (raw connections, aiohttp); fronts are the
real python-telegram-bot against ``tests/fake_telegram.py``; whole ``kling-bot run``
processes where a process's own start, log or exit is what is attacked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import replace
from typing import Any

import pytest

from adapters.telegram import TelegramAdapter
from adapters.telegram.updates import SECRET_HEADER, UpdateListener
from bot.config import load_settings
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import UserRef
from tests import test_roles as roles
from tests.conftest import API_KEY
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes
from tests.test_network_edges import MALFORMED
from tests.test_telegram_webhook import (  # noqa: F401  (fixtures)
    ALICE,
    SECRET,
    fronts,
    nothing_handled,
    photo_update,
    telegram,
    webhook_settings,
)

PATH = "/telegram"
TG_TOKEN = roles.TG_TOKEN
DB_PASSWORD = "db-PASSWORD-never-shown-9q"


@pytest.fixture
async def listener():
    """A bare update listener on a free port; what it was handed is in ``.taken``."""
    taken: list[dict[str, Any]] = []

    async def on_update(data: dict[str, Any]) -> bool:
        taken.append(data)
        return True

    server = UpdateListener("127.0.0.1:0", PATH, SECRET, on_update)
    await server.start()
    server.taken = taken  # type: ignore[attr-defined]
    yield server
    await server.stop()


def _closed(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


async def _status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 5)
    return int(line.split()[1]) if line else 0


def _update_request(body: bytes, secret: str | None = SECRET, *, extra: bytes = b"") -> bytes:
    head = [b"POST /telegram HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json",
            b"Content-Length: %d" % len(body)]
    if secret is not None:
        head.append(f"{SECRET_HEADER}: {secret}".encode())
    return b"\r\n".join(head) + b"\r\n" + extra + b"\r\n" + body


# --- the listener: connections and time ----------------------------------------------------

async def test_a_connection_that_sends_nothing_or_dribbles_its_headers_is_dropped_within_seconds(listener):
    """Either used to be held for as long as the client liked: no deadline at all before
    the handler ran (aiohttp has none for a request's head)."""
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", listener.port)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", listener.port)
    slow_writer.write(b"POST /telegram HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    try:
        while not (_closed(idle_reader) and _closed(slow_reader)):
            if time.monotonic() - started > 20:
                pytest.fail("the listener kept an idle and a dribbling connection for 20 s")
            if not slow_writer.is_closing():
                slow_writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.5)
            with_eof = [reader for reader in (idle_reader, slow_reader) if not _closed(reader)]
            for reader in with_eof:  # a dropped connection reads as EOF or a reset
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(1), 0.01)
    finally:
        idle_writer.close()
        slow_writer.close()
    assert time.monotonic() - started < 15
    assert listener.taken == []


async def test_a_flood_of_slow_connections_is_bounded_and_telegrams_delivery_still_gets_through(
        fronts, telegram, simulator):  # noqa: F811
    """300 connections that never finish their headers (one address, as from behind one
    balancer): the front holds a bounded number of them, and Telegram's delivery of a real
    update meanwhile is answered and handled."""
    [front] = await fronts()
    port = int(front.url.split(":")[2].split("/")[0])
    slow = []
    for _ in range(300):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /telegram HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append((reader, writer))

    async def dribble() -> None:
        while True:
            for reader, writer in slow:
                if not writer.is_closing() and not _closed(reader):
                    writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.3)

    dribbler = asyncio.create_task(dribble())
    try:
        await asyncio.sleep(1.0)
        for reader, _ in slow:  # see the drops: a read on a dropped connection ends at once
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(1), 0.001)
        assert sum(not _closed(reader) for reader, _ in slow) <= 100
        async with asyncio.timeout(10):
            assert await telegram.deliver(photo_update(telegram)) == 200
        await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=30)
    finally:
        dribbler.cancel()
        for _, writer in slow:
            writer.close()


async def test_malformed_requests_to_the_update_listener_leave_no_error_traceback_in_the_log(listener, caplog):
    """Anyone can send these, as often as they like: a log flood if each is an ERROR with a
    traceback."""
    caplog.set_level(logging.INFO)
    for extra in MALFORMED.values():
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"POST /telegram HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\nabc")
        assert await _status(reader) == 400
        writer.close()
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud][:3]
    assert listener.taken == []


# --- the listener: what a sender with the secret may still send wrong ----------------------

@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"update_id": 1, "message": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
], ids=["nested arrays", "nested objects"])
async def test_deeply_nested_json_is_a_400_without_a_traceback(listener, caplog, body):
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(_update_request(body))
    assert await _status(reader) == 400  # was 500 with a RecursionError traceback
    writer.close()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


@pytest.mark.parametrize("update", [
    {"update_id": 1, "message": "text"},
    {"update_id": 1, "message": {"message_id": 1, "date": 10**20, "chat": {"id": 1, "type": "private"}}},
], ids=["a message that is a string", "a date past time_t"])
async def test_an_update_python_telegram_bot_cannot_read_is_a_400_not_a_retried_500(
        fronts, telegram, simulator, update, caplog):  # noqa: F811
    """A 500 tells Telegram to deliver it again (for a day); it will never be readable."""
    [front] = await fronts()
    assert await telegram.deliver(update) == 400
    assert await nothing_handled(telegram, simulator, front.engine)
    assert await telegram.deliver(photo_update(telegram)) == 200
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


@pytest.mark.parametrize(("header", "status"), [
    (SECRET.lower(), 401), (SECRET.upper(), 401), (SECRET + "\x00", 401), (f"{SECRET},{SECRET}", 401),
    ("é" * len(SECRET), 401), (f" {SECRET}\t", 200),  # surrounding blanks are no part of an HTTP field value
], ids=["lower case", "upper case", "a NUL after it", "listed twice", "non-ascii", "blanks around"])
async def test_the_secret_token_header_matches_exactly(listener, header, status):
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    body = json.dumps({"update_id": 5}).encode()
    head = _update_request(body, None, extra=f"{SECRET_HEADER}: ".encode() + header.encode() + b"\r\n")
    writer.write(head)
    assert await _status(reader) in ({status} if status == 200 else {400, 401})
    writer.close()
    assert len(listener.taken) == (1 if status == 200 else 0)


async def test_a_repeated_secret_header_is_judged_by_its_first_value(listener):
    """Telegram sends the header once; a wrong first one is refused whatever follows."""
    body = json.dumps({"update_id": 5}).encode()
    for first, second, status in ((b"wrong", SECRET.encode(), 401), (SECRET.encode(), b"wrong", 200)):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(_update_request(body, None, extra=b"".join(
            f"{SECRET_HEADER}: ".encode() + value + b"\r\n" for value in (first, second))))
        assert await _status(reader) == status
        writer.close()
    assert len(listener.taken) == 1


# --- polling and webhook fronts on one database ---------------------------------------------

async def _start_refused(settings, engines: list[Engine]) -> tuple[TelegramAdapter, str | None]:
    """A Telegram front that must not start: the adapter and the one line it gives."""
    engine = await Engine.from_settings(settings)
    engines.append(engine)
    adapter = TelegramAdapter(settings, engine)
    try:
        await adapter.start()
    except Exception as err:
        return adapter, adapter.start_problem(err)
    finally:
        await adapter.stop()
    return adapter, None


async def _quota_answered(fake: FakeTelegram, deliver: bool) -> None:
    before = len(fake.calls_to("sendMessage"))
    message = fake.user_message(ALICE, ALICE, text="/quota", push=not deliver)
    if deliver:
        assert await fake.deliver(fake.new_update({"message": message})) == 200
    await fake.wait_for(lambda: len(fake.calls_to("sendMessage")) > before)


async def test_a_polling_front_refuses_to_take_the_updates_of_running_webhook_fronts(
        fronts, telegram, webhook_settings):  # noqa: F811
    """It used to delete their webhook and poll: the webhook fronts, still running, got
    nothing more, and said nothing."""
    await fronts(2)
    polling = replace(webhook_settings, telegram=replace(webhook_settings.telegram, webhook_url="",
                                                         conflict_check_seconds=0.0))
    engines: list[Engine] = []
    try:
        _, line = await _start_refused(polling, engines)
    finally:
        for engine in engines:
            await engine.close()
    assert line is not None and "take this bot's updates by webhook" in line, line
    assert telegram.calls_to("deleteWebhook") == [] and telegram.calls_to("getUpdates") == []
    assert telegram.webhook is not None
    await _quota_answered(telegram, deliver=True)  # the webhook fronts carry on


async def test_a_webhook_front_refuses_to_start_while_a_front_polls_on_the_database(
        telegram, webhook_settings, adapter_runner):  # noqa: F811
    """Its setWebhook used to make the poller's every getUpdates a 409 from then on (a
    warning every 30 s, for ever), the poller's lease held all the while."""
    polling = replace(webhook_settings, telegram=replace(webhook_settings.telegram, webhook_url="",
                                                         conflict_check_seconds=0.0))
    await adapter_runner(polling, TelegramAdapter)
    engines: list[Engine] = []
    try:
        _, line = await _start_refused(webhook_settings, engines)
    finally:
        for engine in engines:
            await engine.close()
    assert line is not None and "polls Telegram for this bot" in line and "webhook" in line, line
    assert telegram.calls_to("setWebhook") == [] and telegram.webhook is None
    await _quota_answered(telegram, deliver=False)  # the poller carries on


async def test_a_poller_may_start_once_the_webhook_fronts_are_gone(fronts, telegram, webhook_settings):  # noqa: F811
    """Moving back from webhook mode to polling: the webhook the stopped fronts left is
    deleted by the poller, once their mark lapsed (a lease)."""
    [front] = await fronts()
    await front.adapter.stop()
    await front.engine.close()
    polling = replace(webhook_settings, telegram=replace(webhook_settings.telegram, webhook_url="",
                                                         conflict_check_seconds=0.0))
    await asyncio.sleep(webhook_settings.storage.lease_seconds + 0.2)
    engine = await Engine.from_settings(polling)
    adapter = TelegramAdapter(polling, engine)
    try:
        await engine.start()
        await adapter.start()
        assert telegram.calls_to("deleteWebhook") and telegram.webhook is None
        await _quota_answered(telegram, deliver=False)
    finally:
        await adapter.stop()
        await engine.close()


# --- whole processes: secrets in a verbose log ----------------------------------------------

async def test_a_verbose_front_and_worker_whose_token_is_revoked_mid_job_log_no_secret(tmp_path, pg_url):
    """-v, a database URL with a password, and the bot token revoked while the worker
    follows the job (every upload and edit then answered 401, the front's getUpdates too):
    nothing either process writes holds a secret, and the job ends refunded."""
    simulator = Simulator(job_seconds=2.0, api_key=API_KEY, video_seconds=1.0)
    await simulator.start()
    chat = FakeTelegram(TG_TOKEN)
    await chat.start()
    database = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    started: list[asyncio.subprocess.Process] = []
    try:
        for role in ("front", "worker"):
            door = await chat.door(role)
            config = roles._config(tmp_path, role, simulator.base_url, "", roles._telegram(door))
            config.write_text(config.read_text().replace('url = ""\n', ""))  # the URL comes from the environment
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters", "-v", "run", "--role", role, "--config", str(config),
                cwd=tmp_path, env=roles._env(TELEGRAM_BOT_TOKEN=TG_TOKEN, KLING_DATABASE_URL=database),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            started.append(process)
            assert process.stdout is not None
            banner = await asyncio.wait_for(process.stdout.readline(), roles.START_TIMEOUT)
            assert b"kling-bot is running as a" in banner
        chat.user_message(500, 500, caption="/effect hula", photo=image_bytes())
        await roles.until(lambda: simulator.submissions)
        chat.token = "424242:the-new-token"  # revoked at @BotFather: the old one is 401 everywhere
        engine = await Engine.from_settings(replace(load_settings(None, env={}), storage=replace(
            load_settings(None, env={}).storage, url=database)))
        try:
            [job] = await roles.until(lambda: engine.history(UserRef("telegram", "500")), timeout=90)
            balance = (await engine.balance(UserRef("telegram", "500"))).total
        finally:
            await engine.close()
        assert job.state.value == "failed" and balance == 20  # refunded: nothing was delivered
    finally:
        errors = []
        for process in started:
            if process.returncode is None:
                process.terminate()
            _, err = await asyncio.wait_for(process.communicate(), 30)
            errors.append(err.decode())
        await chat.close()
        await simulator.close()
    text = "\n".join(errors)
    assert "delivery failed" in text  # the worker did log the failures
    for secret in (TG_TOKEN, TG_TOKEN.split(":")[1], API_KEY, DB_PASSWORD):
        assert secret not in text, secret
