"""Defects found in review, each proven the way a user, an operator or a server sees it."""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import resource
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from adapters.console import ConsoleChat, ConsoleCourier
from adapters.discord import DiscordAdapter
from adapters.telegram import TelegramAdapter
from bot import messages
from bot.catalog import Params
from bot.config import MediaSettings, load_settings
from bot.engine import Engine
from bot.jobs import Accepted, GenerationRequest, UserRef
from tests.conftest import user
from tests.fake_discord import APP_ID, CHANNEL, GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import audio_bytes, image_bytes
from tests.test_cli import ROOT, kling
from tests.test_discord import ALICE as DC_ALICE
from tests.test_discord import BOB as DC_BOB
from tests.test_discord import TOKEN as DC_TOKEN
from tests.test_discord import _context_menu, _pick, callbacks, feed, until
from tests.test_telegram import ALICE, BOB, GROUP, _texts
from tests.test_telegram import TOKEN as TG_TOKEN

WRONG_TG_TOKEN = "900100:WRONG-telegram-SECRET"
WRONG_DC_TOKEN = "MTIz.WRONG-discord.SECRET"


# --- 1. config errors never echo a secret ------------------------------------------------

@pytest.mark.parametrize("line, key, wanted", [
    ('[telegram]\ntoken = ["900100:SECRET"]\n', "[telegram] token", "a string"),
    ('[discord]\ntoken = {value = "MTIz.SECRET"}\n', "[discord] token", "a string"),
    ('[wavespeed]\napi_key = ["ws-SECRET"]\n', "[wavespeed] api_key", "a string"),
])
def test_config_error_about_a_secret_never_shows_its_value(tmp_path, line, key, wanted):
    (tmp_path / "config.toml").write_text(line)
    done = kling("run", cwd=tmp_path, env={"TELEGRAM_BOT_TOKEN": "", "DISCORD_BOT_TOKEN": ""})
    assert done.returncode == 2
    assert done.stderr == f"kling-bot: config.toml: {key} must be {wanted}.\n"
    assert "SECRET" not in done.stderr + done.stdout


def test_config_error_about_other_keys_still_shows_the_value(tmp_path):
    (tmp_path / "config.toml").write_text('[quota]\ndaily_credits = "ten"\n')
    done = kling("run", cwd=tmp_path)
    assert done.stderr == "kling-bot: config.toml: [quota] daily_credits must be a whole number (got 'ten').\n"


# --- 2. start-up failures: one plain line, exit 2, no token, no traceback ----------------

async def _run_bot_process(tmp_path: Path, config: str, env: dict[str, str], timeout: float = 60):
    (tmp_path / "config.toml").write_text(config + '[storage]\npath = "bot.sqlite"\n')
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": "", "DISCORD_BOT_TOKEN": "", **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--simulate", cwd=tmp_path, env=full_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.terminate()
        stdout, stderr = await process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


def _assert_one_plain_line(stderr: str, *secrets: str) -> None:
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    assert stderr.startswith("kling-bot: ")
    assert "Traceback" not in stderr
    for secret in secrets:
        assert secret not in stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_telegram_token_rejected_at_start_is_one_line_without_the_token(tmp_path):
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    try:
        code, stdout, stderr = await _run_bot_process(
            tmp_path, f'[telegram]\nbase_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n',
            {"TELEGRAM_BOT_TOKEN": WRONG_TG_TOKEN})
    finally:
        await telegram.close()
    assert code == 2
    _assert_one_plain_line(stderr, WRONG_TG_TOKEN, "SECRET")
    assert "Telegram rejected the bot token" in stderr and "TELEGRAM_BOT_TOKEN" in stderr
    assert "is running" not in stdout


async def test_discord_token_rejected_at_start_is_one_line_without_the_token(tmp_path):
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    try:
        code, stdout, stderr = await _run_bot_process(
            tmp_path, f'[discord]\napi_base_url = "{fake.api_base_url}"\ngateway_url = "{fake.gateway_url}"\n'
                      f'guild_ids = [{GUILD}]\n', {"DISCORD_BOT_TOKEN": WRONG_DC_TOKEN})
    finally:
        await fake.close()
    assert code == 2
    _assert_one_plain_line(stderr, WRONG_DC_TOKEN, "SECRET")
    assert "Discord rejected the bot token" in stderr and "DISCORD_BOT_TOKEN" in stderr
    assert "is running" not in stdout


@pytest.mark.parametrize("platform", ["telegram", "discord"])
async def test_chat_api_unreachable_at_start_is_one_line(tmp_path, platform):
    port = _closed_port()
    if platform == "telegram":
        config = f'[telegram]\nbase_url = "http://127.0.0.1:{port}/bot"\n'
        env = {"TELEGRAM_BOT_TOKEN": WRONG_TG_TOKEN}
    else:
        config = f'[discord]\napi_base_url = "http://127.0.0.1:{port}/api/v10"\n'
        env = {"DISCORD_BOT_TOKEN": WRONG_DC_TOKEN}
    code, _, stderr = await _run_bot_process(tmp_path, config, env)
    assert code == 2
    _assert_one_plain_line(stderr, *env.values(), "SECRET")
    assert f"cannot reach {platform.title()} at http://127.0.0.1:{port}" in stderr


def test_demo_with_a_missing_photo_is_one_line(tmp_path):
    done = kling("demo", "missing.jpg", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "kling-bot: cannot read the photo missing.jpg: No such file or directory\n"


# --- 3. audio with cover art is audio ---------------------------------------------------------

@pytest.mark.both_backends  # a job, credits or questions kept in the store
async def test_mp3_with_cover_art_is_accepted_as_audio(engine, simulator, courier):
    song = audio_bytes(2, "mp3", "libmp3lame", 22050, cover_art=True)
    answer = await engine.accept(GenerationRequest(user(), "avatar", image_bytes(), Params(prompt="sing"),
                                                   audio=song, reply_to={"chat": 1}))
    assert isinstance(answer, Accepted), answer.text
    assert answer.text.startswith("Job 1 queued (avatar: sing)")
    await courier.outcome(answer.job.id)
    assert simulator.submissions[0]["model"] == "kwaivgi/kling-v1-ai-avatar-standard"
    assert song in [data for data, _ in simulator.uploads.values()]


async def test_audio_with_a_real_video_stream_is_still_refused(engine, simulator):
    clip = audio_bytes(2, "mp4", "aac", 22050, with_video=True)
    answer = await engine.accept(GenerationRequest(user(), "avatar", image_bytes(), Params(), audio=clip))
    assert answer.text == "That file has video in it. Send the sound alone (MP3, WAV, OGG or M4A)."
    assert simulator.submissions == []


# --- 4. numbers users type are ASCII digits ------------------------------------------------

@pytest.fixture
def tg_settings(settings, telegram):
    return replace(settings, telegram=replace(
        settings.telegram, token=TG_TOKEN, base_url=telegram.base_url,
        base_file_url=telegram.base_file_url, progress_interval=0.0, admins=[ALICE]))


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TG_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_telegram_numbers_in_other_scripts_and_huge_job_numbers(adapter_runner, tg_settings, telegram, simulator):
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    for text in ("/cancel ²", "/cancel 99999999999999999999999", "/cancel ٣"):
        telegram.user_message(ALICE, ALICE, text=text)
    telegram.user_message(ALICE, ALICE, caption="/animate --duration ² a cat dances", photo=image_bytes())
    replies = await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 4 and
                                      _texts(telegram, "sendMessage"))
    assert sorted(replies) == sorted([
        "Usage: /cancel N (/jobs lists yours).", "You have no job 99999999999999999999999.",
        "Usage: /cancel N (/jobs lists yours).", "Duration must be from 3 to 15 seconds (got '²')."])
    await asyncio.sleep(0.3)
    assert len(telegram.calls_to("sendMessage")) == 4 and _texts(telegram) == []
    assert simulator.submissions == [] and (await engine.balance(UserRef("telegram", str(ALICE)))).total == 10


@pytest.mark.both_backends  # a job, credits or questions kept in the store
async def test_telegram_grant_takes_ascii_numbers_of_sane_size(adapter_runner, tg_settings, telegram):
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    bob_said = telegram.user_message(GROUP, BOB, text="hello", push=False)
    for amount in ("²", "99999999999999999999999"):
        telegram.user_message(GROUP, ALICE, text=f"/grant {amount}", reply_to=bob_said)
    replies = await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 2 and
                                      _texts(telegram, "sendMessage"))
    assert replies == ["Reply /grant N to a message of the person to give N credits."] * 2
    assert (await engine.balance(UserRef("telegram", str(BOB)))).total == 10


@pytest.mark.both_backends  # a job, credits or questions kept in the store
async def test_console_numbers_in_other_scripts_and_huge_job_numbers(engine, simulator):
    out = io.StringIO()
    chat = ConsoleChat(engine, ConsoleCourier(out, Path(".")), user(), image_bytes(), out=out)
    for line in ("/cancel ²", "/cancel 99999999999999999999999", "/cancel #7",
                 "/animate --duration ² go", "/animate --guidance ٠.٥ go", "/animate --duration 10s --guidance 2 go"):
        await chat.handle(line)
    assert out.getvalue().splitlines() == [
        "Usage: /cancel JOB_ID (/jobs lists yours).",
        "You have no job 99999999999999999999999.",
        "You have no job 7.",
        "Duration must be from 3 to 15 seconds (got '²').",
        "Guidance must be a number such as 0.5 (got '٠.٥').",
        "Guidance must be between 0 and 1 (got 2); 0.5 is the default.",
    ]
    assert simulator.submissions == []


# --- 5. user media is read up to [media] max_download_mb, never more ---------------------

def _memory_capped() -> None:
    # A read of /dev/zero that is not bounded fails here, not on the test machine.
    resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))


def _kling_capped(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=60, env=env, preexec_fn=_memory_capped)


def test_generate_from_dev_zero_is_refused_at_the_size_limit(tmp_path):
    done = _kling_capped("generate", "/dev/zero", "--effect", "hula", "--simulate", cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr == "kling-bot: The image is 20.0 MB; the bot accepts files up to 20.0 MB.\n"
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    audio = _kling_capped("generate", "cat.jpg", "--audio", "/dev/zero", "--simulate", cwd=tmp_path)
    assert audio.returncode != 0 and audio.stderr.count("\n") == 1 and "The audio is 20.0 MB" in audio.stderr


def test_demo_and_console_paths_are_read_up_to_the_size_limit(tmp_path):
    done = _kling_capped("demo", "/dev/zero", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "kling-bot: The photo is 20.0 MB; the bot accepts files up to 20.0 MB.\n"
    (tmp_path / "me.png").write_bytes(image_bytes(500, 500, "PNG"))
    chat = _kling_capped("demo", cwd=tmp_path, stdin="/photo /dev/zero\n/avatar me.png /dev/zero\n"
                                                     "/effect hula /dev/zero\n/quit\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("is 20.0 MB; the bot accepts files up to 20.0 MB.") == 3
    assert "The photo is 20.0 MB" in chat.stdout and "The audio is 20.0 MB" in chat.stdout


async def test_discord_embed_image_is_read_up_to_the_size_limit(adapter_runner, settings, simulator):
    """An embed's image comes from any server; one that never stops sending is cut off."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        chunk = b"\xff" * 65536
        try:
            while True:
                await response.write(chunk)
                sent += len(chunk)
        except ConnectionError:  # the reader hung up
            return response

    app = web.Application()
    app.router.add_get("/huge.jpg", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/huge.jpg"
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    import discord
    original_base = discord.http.Route.BASE
    try:
        dc = replace(settings, media=MediaSettings(max_download_mb=1.0), discord=replace(
            settings.discord, token=DC_TOKEN, guild_ids=[GUILD], api_base_url=fake.api_base_url,
            progress_interval=0.0))
        engine, adapter = await adapter_runner(dc, DiscordAdapter, launch="prepare")
        target = fake.user_message(DC_BOB, embeds=[{"type": "image", "image": {
            "url": url, "proxy_url": url, "width": 700, "height": 500}}])
        menu = _context_menu(fake, target)
        feed(adapter, menu)
        _, pick = await _pick(fake, adapter, menu, "hula")
        refusal = await until(lambda: [c["json"] for c in fake.to(f"/webhooks/{APP_ID}/{pick['token']}", "POST")
                                       if c["json"] and c["json"].get("flags", 0) & 64], timeout=30)
        # only that it is larger is known: not the bytes read before hanging up, as if its size
        assert refusal[0]["content"] == "The photo is larger than the 1.0 MB the bot accepts. Send a smaller one."
        # The reader hung up after the limit (plus what socket buffers hold), not read on.
        await asyncio.sleep(0.3)
        before = sent
        await asyncio.sleep(0.3)
        assert sent == before and sent < 32 * 1024 * 1024
        assert simulator.submissions == [] and (await engine.balance(UserRef("discord", str(DC_ALICE)))).total == 10
    finally:
        discord.http.Route.BASE = original_base
        await fake.close()
        await runner.cleanup()


# --- 6. generate passes every option, so the model's checks refuse what it does not take -----

@pytest.mark.parametrize("options, refusal", [
    (["--duration", "10"], "Kling Effects makes clips of a fixed length; leave out the duration."),
    (["--guidance", "0.5"], "Kling Effects takes no guidance setting."),
    (["--negative-prompt", "blur"], "Kling Effects takes no negative prompt."),
    (["--end-image", "cat.jpg"], "Only the 'master' or 'v3.0-pro' model takes an end image."),
    (["--avatar-prompt", "smile"], "Kling Effects takes no prompt: the effect decides the motion."),
])
async def test_generate_refuses_options_the_effect_model_does_not_take(tmp_path, options, refusal):
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    done = kling("generate", "cat.jpg", "--effect", "hula", *options, "--simulate", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"kling-bot: {refusal}\n"
    assert not list(tmp_path.glob("kling-*.mp4"))
    settings = load_settings(None, env={})
    settings = replace(settings, storage=replace(settings.storage, path=str(tmp_path / "kling-bot.sqlite")))
    engine = await Engine.from_settings(settings)
    try:
        assert (await engine.balance(UserRef("cli", getpass.getuser()))).total == 10  # nothing charged
        assert await engine.store.job(1) is None  # nothing queued, so nothing submitted
    finally:
        await engine.store.close()


def test_generate_refuses_avatar_options_with_audio_too(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    (tmp_path / "hi.wav").write_bytes(audio_bytes(2))
    done = kling("generate", "cat.jpg", "--audio", "hi.wav", "--duration", "5", "--simulate", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.endswith("makes clips of a fixed length; leave out the duration.\n")


def test_generate_avatar_prompt_belongs_to_audio(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    done = kling("generate", "cat.jpg", "--prompt", "a cat dances", "--avatar-prompt", "smile", "--simulate",
                 cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "kling-bot: --avatar-prompt goes with --audio only.\n"


# --- 7. allow lists hold at every entry point ----------------------------------------------

@pytest.mark.both_backends  # a job, credits or questions kept in the store
async def test_telegram_buttons_and_audio_answers_outside_allowed_chats_start_nothing(
        adapter_runner, tg_settings, telegram, simulator):
    engine, adapter = await adapter_runner(tg_settings, TelegramAdapter)
    photo = telegram.user_message(ALICE, ALICE, photo=image_bytes(), push=False)
    telegram.user_message(ALICE, ALICE, text="/effect", reply_to=photo)
    await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
    menu = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]
    telegram.user_message(ALICE, ALICE, text="/avatar", reply_to=photo)
    await telegram.wait_for(lambda: len(telegram.calls_to("sendMessage")) == 2)
    ask = telegram.messages[(ALICE, max(m for c, m in telegram.messages if c == ALICE))]
    await adapter.stop()
    await engine.stop()  # closed with the test's other engine at the end

    # The operator limits the bot to a group; menus and asks in Alice's private chat remain.
    limited = replace(tg_settings, telegram=replace(tg_settings.telegram, allowed_chats=[GROUP]))
    engine, _ = await adapter_runner(limited, TelegramAdapter)
    telegram.press_button(ALICE, menu, f"fx:{ALICE}:hula")
    telegram.press_button(ALICE, menu, f"fxp:{ALICE}:1")
    telegram.user_message(ALICE, ALICE, voice=audio_bytes(2, "ogg", "libopus", 48000), reply_to=ask)
    telegram.user_message(ALICE, ALICE, caption="/animate a cat dances", photo=image_bytes())
    telegram.user_message(ALICE, ALICE, text="/effect hula", reply_to=photo)
    answers = await telegram.wait_for(lambda: len(telegram.calls_to("answerCallbackQuery")) == 2 and
                                      telegram.calls_to("answerCallbackQuery"))
    assert [a["params"]["text"] for a in answers] == ["I don't make videos in this chat."] * 2
    await asyncio.sleep(0.5)
    assert len(telegram.calls_to("sendMessage")) == 2  # the two answers from before the limit
    assert telegram.calls_to("editMessageText") == [] and telegram.calls_to("editMessageReplyMarkup") == []
    assert simulator.submissions == [] and (await engine.balance(UserRef("telegram", str(ALICE)))).total == 10


@pytest.fixture
async def fake_discord():
    fake = FakeDiscord(DC_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def run_discord(settings, fake_discord, adapter_runner):
    import discord
    original_base = discord.http.Route.BASE
    limited = replace(settings, discord=replace(settings.discord, token=DC_TOKEN, guild_ids=[GUILD],
                                                api_base_url=fake_discord.api_base_url, progress_interval=0.0,
                                                allowed_channels=[CHANNEL]))
    yield lambda: adapter_runner(limited, DiscordAdapter, launch="prepare")
    discord.http.Route.BASE = original_base


def _elsewhere(payload):
    """The same interaction, from a channel outside the allow list."""
    payload = {**payload, "channel_id": "123", "channel": {**payload["channel"], "id": "123"}}
    return payload


async def test_discord_context_menu_outside_allowed_channels_shows_no_menu(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    target = fake_discord.user_message(DC_BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = _elsewhere(_context_menu(fake_discord, target))
    feed(adapter, menu)
    [response] = await until(lambda: callbacks(fake_discord, menu["token"]))
    assert response["type"] == 4 and response["data"]["flags"] & 64
    assert response["data"]["content"] == "I don't make videos in this channel."
    assert not response["data"].get("components")
    assert simulator.submissions == []


async def test_discord_picker_outside_allowed_channels_starts_nothing(run_discord, fake_discord, simulator):
    engine, adapter = await run_discord()
    target = fake_discord.user_message(DC_BOB, attachments=[fake_discord.attachment(image_bytes())])
    menu = _context_menu(fake_discord, target)
    feed(adapter, menu)
    response = await until(lambda: callbacks(fake_discord, menu["token"]))
    select = response[0]["data"]["components"][0]["components"][0]
    pick = _elsewhere(fake_discord.interaction(
        3, {"custom_id": select["custom_id"], "component_type": 3, "values": ["hula"]},
        user=DC_ALICE, message=fake_discord.messages[fake_discord.originals[menu["token"]]]))
    feed(adapter, pick)
    [answer] = await until(lambda: callbacks(fake_discord, pick["token"]))
    # A menu's message is in its own channel: a pick naming it from another channel is
    # forged (tests/test_discord_trust.py) and refused before the allow list is asked.
    assert answer["type"] == 4 and answer["data"]["content"] == messages.DISCORD_PHOTO_GONE
    # The channel leaves the allow list while its menu is open: the real pick is refused.
    adapter.settings = replace(adapter.settings, allowed_channels=[123])
    real = fake_discord.interaction(
        3, {"custom_id": select["custom_id"], "component_type": 3, "values": ["hula"]},
        user=DC_ALICE, message=fake_discord.messages[fake_discord.originals[menu["token"]]])
    feed(adapter, real)
    [answer] = await until(lambda: callbacks(fake_discord, real["token"]))
    assert answer["data"]["content"] == messages.CHANNEL_NOT_ALLOWED
    await asyncio.sleep(0.3)
    for press in (pick, real):
        assert fake_discord.to(f"/webhooks/{APP_ID}/{press['token']}") == []  # no "Checking the photo…"
    assert simulator.submissions == []
    assert (await engine.balance(UserRef("discord", str(DC_ALICE)))).total == 10
