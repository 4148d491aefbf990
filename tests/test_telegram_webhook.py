"""Telegram webhook mode and one poller per token: the real python-telegram-bot against the
fake Bot API server (a self-hosted one in --local mode, which may deliver to 127.0.0.1 over
http), fronts in this process or as whole ``kling-bot run`` processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from telegram import Bot
from telegram.error import BadRequest, Conflict

from adapters.telegram import TelegramAdapter
from adapters.telegram.updates import MAX_UPDATE_BYTES, SECRET_HEADER
from bot.config import ConfigError, load_settings
from bot.engine import Engine
from bot.jobs import UserRef
from tests.conftest import API_KEY
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes

TOKEN = "424242:WEBHOOK-test-token-SECRET"
SECRET = "front-door_SECRET-token-42"
ALICE = 1001
USER = UserRef("telegram", str(ALICE))
ROOT = Path(__file__).resolve().parent.parent
BANNER = b"kling-bot is running"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Front:
    engine: Engine
    adapter: TelegramAdapter
    url: str  # where this front's own listener takes deliveries


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN, local=True)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def webhook_settings(settings, telegram):
    """Fronts' settings: the webhook's public address is the first front's listener (the
    "load balancer" of these tests; ``deliver(to=...)`` picks another front)."""
    port = free_port()
    return replace(settings, telegram=replace(
        settings.telegram, token=TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url,
        progress_interval=0.0, webhook_url=f"http://127.0.0.1:{port}/telegram",
        webhook_listen=f"127.0.0.1:{port}", secret_token=SECRET))


@pytest.fixture
def fronts(webhook_settings, adapter_runner):
    """Start Telegram fronts in webhook mode: engine + adapter each, all on one database."""
    started: list[Front] = []

    async def start(count: int = 1) -> list[Front]:
        for _ in range(count):
            listen = webhook_settings.telegram.webhook_listen if not started else f"127.0.0.1:{free_port()}"
            own = replace(webhook_settings, telegram=replace(webhook_settings.telegram, webhook_listen=listen))
            engine, adapter = await adapter_runner(own, TelegramAdapter)
            started.append(Front(engine, adapter, f"http://{listen}/telegram"))
        return started

    return start


def photo_update(telegram: FakeTelegram, caption: str | None = "/effect hula") -> dict[str, Any]:
    message = telegram.user_message(ALICE, ALICE, caption=caption, photo=image_bytes(), push=False)
    return telegram.new_update({"message": message})


async def nothing_handled(telegram: FakeTelegram, simulator, engine: Engine) -> bool:
    answered = [c for c in telegram.calls if c["method"] not in ("getMe", "setMyCommands", "setWebhook")]
    return (answered == [] and simulator.submissions == [] and (await engine.balance(USER)).total == 10
            and await engine.jobs_of(USER) == [] and await engine.history(USER) == [])


# --- webhook mode -------------------------------------------------------------------------

async def test_each_front_sets_the_webhook_with_its_secret_and_update_types(fronts, telegram, caplog):
    caplog.set_level(logging.DEBUG)
    await fronts(2)
    calls = telegram.calls_to("setWebhook")
    assert len(calls) == 2
    for call in calls:
        assert call["params"]["url"] == telegram.webhook["url"]
        assert call["params"]["secret_token"] == SECRET
        assert call["params"]["allowed_updates"] == ["message", "callback_query", "pre_checkout_query"]
        assert call["params"]["drop_pending_updates"] is False
    assert telegram.calls_to("deleteWebhook") == []  # a front never removes the others' webhook
    assert SECRET not in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("secret", [None, "", "wrong-token", SECRET + "x", SECRET[:-1]],
                         ids=["missing", "empty", "wrong", "longer", "shorter"])
async def test_a_delivery_without_the_secret_token_is_refused_and_nothing_is_handled(
        fronts, telegram, simulator, secret):
    [front] = await fronts()
    update = photo_update(telegram)
    assert await telegram.deliver(update, secret_token=secret) == 401
    await asyncio.sleep(0.5)
    assert await nothing_handled(telegram, simulator, front.engine)
    # The refusal marked nothing as seen: Telegram's own delivery of it is handled.
    assert await telegram.deliver(update) == 200
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


async def test_the_same_update_delivered_twice_makes_one_job_charged_once(fronts, telegram, simulator):
    a, b = await fronts(2)
    update = photo_update(telegram)
    # Telegram retrying, and a balancer routing the update to both fronts, all at once.
    statuses = await asyncio.gather(telegram.deliver(update, to=a.url), telegram.deliver(update, to=b.url),
                                    telegram.deliver(update, to=a.url))
    assert statuses == [200, 200, 200]
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert await telegram.deliver(update, to=b.url) == 200  # a retry after the job ended
    await asyncio.sleep(0.5)
    assert len(telegram.calls_to("sendVideo")) == 1
    assert len(simulator.submissions) == 1
    assert (await a.engine.balance(USER)).total == (await b.engine.balance(USER)).total == 9
    assert len(await a.engine.history(USER)) == 1


async def test_a_button_pressed_on_a_message_another_front_sent_works(fronts, telegram, simulator):
    a, b = await fronts(2)
    update = photo_update(telegram, caption=None)  # a bare photo: the effect menu
    assert await telegram.deliver(update, to=a.url) == 200
    [sent] = await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    menu = next(m for m in telegram.messages.values() if m.get("reply_markup") and m["from"]["is_bot"])
    button = menu["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert await telegram.deliver(telegram.press_button(ALICE, menu, button, push=False), to=b.url) == 200
    [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert video["params"]["reply_parameters"]["message_id"] == update["message"]["message_id"]
    [job] = await telegram.wait_for(lambda: b.engine.history(USER))  # settled just after the post
    assert job.owner == b.engine.owner  # front B made and delivered it

    # The result's "again" button, on the video front B sent, pressed through front A.
    posted = next(m for m in telegram.messages.values() if "video" in m)
    again = next(button["callback_data"] for row in posted["reply_markup"]["inline_keyboard"]
                 for button in row if button["callback_data"].startswith("again:"))
    assert await telegram.deliver(telegram.press_button(ALICE, posted, again, push=False), to=a.url) == 200
    await telegram.wait_for(lambda: len(telegram.calls_to("sendVideo")) == 2)
    assert len(simulator.submissions) == 2 and (await a.engine.balance(USER)).total == 8


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
async def test_an_oversized_body_is_refused_and_nothing_is_handled(fronts, telegram, simulator, chunked):
    [front] = await fronts()
    update = photo_update(telegram)
    update["message"]["caption"] += " " + "x" * MAX_UPDATE_BYTES  # past the cap, still a valid update
    body = json.dumps(update).encode()

    async def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    async with aiohttp.ClientSession() as session, session.post(
            front.url, data=chunks() if chunked else body,
            headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"}) as answer:
        assert answer.status == 413
    await asyncio.sleep(0.5)
    assert await nothing_handled(telegram, simulator, front.engine)


async def test_what_is_no_update_is_refused_and_the_front_carries_on(fronts, telegram, simulator):
    [front] = await fronts()
    async with aiohttp.ClientSession() as session:
        for body in (b"not json", b"[1, 2]", b'{"update_id": "7"}', b'{"message": {}}'):
            async with session.post(front.url, data=body, headers={SECRET_HEADER: SECRET}) as answer:
                assert answer.status == 400, body
    assert await nothing_handled(telegram, simulator, front.engine)
    assert await telegram.deliver(photo_update(telegram)) == 200
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))


async def test_updates_pushed_while_the_webhook_is_set_reach_a_front(fronts, telegram, simulator):
    await fronts()
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())  # Telegram delivers it
    await telegram.wait_for(lambda: telegram.calls_to("sendVideo"))
    assert [d["status"] for d in telegram.deliveries] == [200]


# --- what the fake refuses as Telegram does --------------------------------------------------

async def test_the_fake_refuses_what_the_bot_api_refuses_for_webhooks():
    cloud, local = FakeTelegram(TOKEN), FakeTelegram(TOKEN, local=True)
    for fake in (cloud, local):
        await fake.start()
    try:
        bot = Bot(TOKEN, base_url=cloud.base_url)
        async with bot:
            with pytest.raises(BadRequest, match=r"(?i)https url must be provided"):
                await bot.set_webhook("http://127.0.0.1:8443/telegram")
            with pytest.raises(BadRequest, match=r"(?i)ports 80, 88, 443 or 8443"):
                await bot.set_webhook("https://bot.example.com:9000/telegram")
            with pytest.raises(BadRequest, match=r"(?i)secret token contains unallowed characters"):
                await bot.set_webhook("https://bot.example.com/telegram", secret_token="not allowed!")
            cloud.violations.clear()
            assert await bot.set_webhook("https://bot.example.com/telegram", secret_token=SECRET)
            with pytest.raises(Conflict, match="while webhook is active"):
                await bot.get_updates()
            assert (await bot.get_webhook_info()).url == "https://bot.example.com/telegram"
            assert await bot.delete_webhook()
            assert await bot.get_updates() == ()
        async with Bot(TOKEN, base_url=local.base_url) as bot:  # a --local server delivers over http
            assert await bot.set_webhook("http://127.0.0.1:8443/telegram", secret_token=SECRET)
    finally:
        for fake in (cloud, local):
            await fake.close()


async def test_the_fake_ends_an_earlier_get_updates_with_409_like_telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    try:
        async with Bot(TOKEN, base_url=fake.base_url) as first, Bot(TOKEN, base_url=fake.base_url) as second:
            waiting = asyncio.ensure_future(first.get_updates(timeout=5))
            await asyncio.sleep(0.1)
            assert await second.get_updates(timeout=0) == ()
            with pytest.raises(Conflict, match="terminated by other getUpdates request"):
                await waiting
    finally:
        await fake.close()


# --- settings -------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", ["has space", "a" * 257, "ünïcode", "semi;colon"])
def test_a_secret_token_telegram_would_refuse_is_one_line_naming_the_key(tmp_path, secret):
    config = tmp_path / "config.toml"
    config.write_text(f'[telegram]\nwebhook_url = "https://bot.example.com/telegram"\nsecret_token = "{secret}"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(config, env={})
    assert "[telegram] secret_token must be 1-256 characters of A-Z, a-z, 0-9, _ and -" in str(error.value)
    assert secret not in str(error.value) and "\n" not in str(error.value)


def test_webhook_mode_needs_a_secret_token_which_may_come_from_the_environment(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[telegram]\nwebhook_url = "https://bot.example.com/telegram"\n')
    with pytest.raises(ConfigError, match=r"\[telegram\] webhook_url needs a secret_token"):
        load_settings(config, env={})
    settings = load_settings(config, env={"KLING_TELEGRAM_SECRET_TOKEN": SECRET})
    assert settings.telegram.secret_token == SECRET and SECRET in settings.secrets
    assert settings.telegram.webhook_listen == "127.0.0.1:8443"
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(("key", "value", "wanted"), [
    ("webhook_url", "http://bot.example.com/telegram", "[telegram] webhook_url must be an https:// URL"),
    ("webhook_listen", "8443", "[telegram] webhook_listen must be host:port"),
    ("conflict_check_seconds", "-1", "[telegram] conflict_check_seconds cannot be negative"),
])
def test_other_webhook_settings_are_checked(tmp_path, key, value, wanted):
    config = tmp_path / "config.toml"
    quoted = value if key == "conflict_check_seconds" else f'"{value}"'
    config.write_text(f'[telegram]\nsecret_token = "{SECRET}"\n{key} = {quoted}\n')
    with pytest.raises(ConfigError) as error:
        load_settings(config, env={})
    assert wanted in str(error.value)


# --- whole processes ------------------------------------------------------------------------

def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return {**env, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": TOKEN, **extra}


def _config(tmp_path: Path, name: str, simulator, telegram: FakeTelegram, *, database: str = "shared.sqlite",
            telegram_extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f"""
[wavespeed]
base_url = "{simulator.base_url}"
api_key = "{API_KEY}"
poll_interval = 0.2
history_settle = 0.5

[storage]
path = "{tmp_path / database}"
videos_dir = "{tmp_path / 'videos'}"
lease_seconds = 2

[telegram]
base_url = "{telegram.base_url}"
base_file_url = "{telegram.base_file_url}"
progress_interval = 0
{telegram_extra}
""")
    return path


async def _run(config: Path, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--config", str(config), cwd=config.parent,
        env=_env(**env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _refusal(process: asyncio.subprocess.Process, timeout: float = 30) -> list[str]:
    """The lines a process that must not start wrote, once it has ended (code 2)."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert BANNER not in out
    assert process.returncode == 2, err.decode()
    return err.decode().splitlines()


async def _stop(*processes: asyncio.subprocess.Process) -> list[bytes]:
    errors = []
    for process in processes:
        if process.returncode is None:
            process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), 30)
        errors.append(err)
    return errors


async def _answers_quota(telegram: FakeTelegram) -> None:
    before = len(telegram.calls_to("sendMessage"))
    telegram.user_message(ALICE, ALICE, text="/quota")
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) > before, timeout=20)


@pytest.fixture
async def cloud_telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_a_second_polling_front_on_the_same_database_refuses_with_one_line(
        tmp_path, simulator, cloud_telegram):
    telegram = cloud_telegram
    first = await _run(_config(tmp_path, "a.toml", simulator, telegram))
    second = None
    try:
        assert BANNER in await asyncio.wait_for(first.stdout.readline(), 30)
        conflicts = telegram.conflicts
        second = await _run(_config(tmp_path, "b.toml", simulator, telegram))
        [line] = await _refusal(second)
        assert line.startswith("kling-bot: another kling-bot process (") and "already polls Telegram" in line
        assert telegram.conflicts == conflicts  # it never called getUpdates: the first poller was left alone
        await _answers_quota(telegram)  # the first one carries on
    finally:
        [err] = await _stop(first)
    assert TOKEN.encode() not in err


async def test_a_killed_poller_does_not_block_the_next_start(tmp_path, simulator, cloud_telegram):
    telegram = cloud_telegram
    config = _config(tmp_path, "a.toml", simulator, telegram)
    first = await _run(config)
    assert BANNER in await asyncio.wait_for(first.stdout.readline(), 30)
    first.send_signal(signal.SIGKILL)  # its lease stays in the database, no longer renewed
    await first.wait()
    second = await _run(config)
    try:
        assert BANNER in await asyncio.wait_for(second.stdout.readline(), 30)  # once the lease lapsed
        await _answers_quota(telegram)
    finally:
        await _stop(second)


async def test_a_poller_on_another_database_refuses_with_one_line_at_telegrams_409(
        tmp_path, simulator, cloud_telegram):
    telegram = cloud_telegram
    first = await _run(_config(tmp_path, "a.toml", simulator, telegram, database="one.sqlite"))
    try:
        assert BANNER in await asyncio.wait_for(first.stdout.readline(), 30)
        # A loaded machine may delay the first poller's next getUpdates: a longer watch.
        second = await _run(_config(tmp_path, "b.toml", simulator, telegram, database="other.sqlite",
                                    telegram_extra="conflict_check_seconds = 8\n"))
        [line] = await _refusal(second)
        assert line.startswith("kling-bot: another program polls Telegram for this bot's updates")
        assert "terminated by other getUpdates request" in line
        await _answers_quota(telegram)  # the first one carries on
    finally:
        [err] = await _stop(first)
    assert b"Traceback" not in err and TOKEN.encode() not in err


async def test_kling_bot_run_in_webhook_mode_takes_updates_at_its_listener(tmp_path, simulator, telegram):
    port = free_port()
    extra = f'webhook_url = "http://127.0.0.1:{port}/hook"\nwebhook_listen = "127.0.0.1:{port}"\n'
    process = await _run(_config(tmp_path, "a.toml", simulator, telegram, telegram_extra=extra),
                         KLING_TELEGRAM_SECRET_TOKEN=SECRET)
    try:
        assert BANNER in await asyncio.wait_for(process.stdout.readline(), 30)
        assert telegram.webhook["url"] == f"http://127.0.0.1:{port}/hook"
        telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
        await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=40)
        assert await telegram.deliver(photo_update(telegram), secret_token="forged") == 401
    finally:
        [err] = await _stop(process)
    assert SECRET.encode() not in err and TOKEN.encode() not in err


async def test_kling_bot_run_with_a_bad_secret_token_is_one_line(tmp_path, simulator, telegram):
    extra = 'webhook_url = "https://bot.example.com/hook"\n'
    config = _config(tmp_path, "a.toml", simulator, telegram, telegram_extra=extra)
    [line] = await _refusal(await _run(config, KLING_TELEGRAM_SECRET_TOKEN="no spaces allowed"))
    assert "[telegram] secret_token must be 1-256 characters" in line
    assert "no spaces allowed" not in line
    assert telegram.calls == []


async def test_a_webhook_port_in_use_is_one_line(tmp_path, simulator, telegram):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = f'webhook_url = "http://127.0.0.1:{port}/hook"\nwebhook_listen = "127.0.0.1:{port}"\n'
        config = _config(tmp_path, "a.toml", simulator, telegram, telegram_extra=extra)
        [line] = await _refusal(await _run(config, KLING_TELEGRAM_SECRET_TOKEN=SECRET))
    assert line.startswith(f"kling-bot: cannot listen for Telegram's updates on 127.0.0.1:{port}")
    assert telegram.calls_to("setWebhook") == []


async def test_a_webhook_telegram_refuses_is_one_line(tmp_path, simulator, cloud_telegram):
    port = free_port()  # api.telegram.org delivers over https only: it refuses an http URL
    extra = f'webhook_url = "http://127.0.0.1:{port}/hook"\nwebhook_listen = "127.0.0.1:{port}"\n'
    config = _config(tmp_path, "a.toml", simulator, cloud_telegram, telegram_extra=extra)
    [line] = await _refusal(await _run(config, KLING_TELEGRAM_SECRET_TOKEN=SECRET))
    assert line.lower() == ("kling-bot: telegram refused to start the bot: bad webhook: "
                            "https url must be provided for webhook")


async def test_a_poller_that_stalled_past_its_lease_stops_polling_for_the_one_that_took_over(
        tmp_path, simulator, cloud_telegram):
    telegram = cloud_telegram
    config = _config(tmp_path, "a.toml", simulator, telegram)
    first = await _run(config)
    second = None
    try:
        assert BANNER in await asyncio.wait_for(first.stdout.readline(), 30)
        first.send_signal(signal.SIGSTOP)  # frozen: it renews nothing, and polls nothing
        second = await _run(config)
        assert BANNER in await asyncio.wait_for(second.stdout.readline(), 30)  # the lease lapsed
        first.send_signal(signal.SIGCONT)  # its next renewal finds the lease taken
        await asyncio.sleep(3)
        conflicts = telegram.conflicts
        await asyncio.sleep(3)
        assert telegram.conflicts == conflicts  # no two pollers fighting over getUpdates
        await _answers_quota(telegram)
    finally:
        if first.returncode is None:
            first.send_signal(signal.SIGCONT)
        errors = await _stop(first, *([second] if second else []))
    assert b"was taken over by" in errors[0]
