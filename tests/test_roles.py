"""Roles: ``kling-bot run --role front`` receives the chats and queues jobs, ``--role worker``
makes and delivers them through the platforms' HTTP APIs, each a whole process on one
PostgreSQL database.

Each fake chat server is reached by the two processes through two doors of its own
(``door()``), so the tests see which process made every request: the worker never
polls Telegram nor opens the Discord gateway, and every video is its upload.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot import messages
from tests.conftest import API_KEY
from tests.fake_discord import APP_ID, CHANNEL, GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import checked, image_bytes, mp4_info

ROOT = Path(__file__).resolve().parent.parent
TG_TOKEN = "424242:ROLES-telegram-token-SECRET"
DC_TOKEN = "MTIz.roles-discord-token.SECRET"
ALICE, BOB = 111111111111111111, 222222222222222222
OTHER_CHANNEL = 700000000000000077
START_TIMEOUT, DELIVERY_TIMEOUT = 40, 60
# What only a process that receives Telegram updates asks for.
RECEIVING = ("getUpdates", "getWebhookInfo", "setWebhook", "deleteWebhook")


def _env(**tokens: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return {**env, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": "", "DISCORD_BOT_TOKEN": "", **tokens}


def _config(tmp_path: Path, name: str, simulator_url: str, database: str, chat: str) -> Path:
    """One process's settings: the shared database and simulator, its own videos folder,
    its own door of the fake chat server (``chat``)."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[wavespeed]
base_url = "{simulator_url}"
api_key = "{API_KEY}"
poll_interval = 0.2
history_settle = 0.5

[storage]
url = "{database}"
videos_dir = "{tmp_path / f'{name}-videos'}"
lease_seconds = 2

[quota]
daily_credits = 20
max_jobs_per_user = 20
{chat}
""")
    return path


def _telegram(door: str) -> str:
    return (f'[telegram]\nbase_url = "{door}/bot"\nbase_file_url = "{door}/file/bot"\n'
            "progress_interval = 0\nconflict_check_seconds = 0\n")


def _discord(door: str) -> str:
    return (f'[discord]\napi_base_url = "{door}/api/v10"\ngateway_url = "{door.replace("http", "ws")}/gateway"\n'
            f"guild_ids = [{GUILD}]\nprogress_interval = 0\n")


class Processes:
    """``kling-bot run`` processes of one test, stopped (and checked) at its end."""

    def __init__(self) -> None:
        self.running: list[asyncio.subprocess.Process] = []

    async def start(self, config: Path, role: str, **tokens: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "adapters", "run", "--role", role, "--config", str(config),
            cwd=config.parent, env=_env(**tokens), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self.running.append(process)
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
        assert f"kling-bot is running as a {role}" in banner, banner + await _stderr(process)
        return process

    async def stop(self) -> list[tuple[int | None, str]]:
        """Each process's exit code and stderr, after SIGTERM."""
        ended = []
        for process in self.running:
            if process.returncode is None:
                process.terminate()
            try:
                _, err = await asyncio.wait_for(process.communicate(), 30)
            except TimeoutError:
                process.kill()
                _, err = await process.communicate()
            ended.append((process.returncode, err.decode()))
        return ended


async def _stderr(process: asyncio.subprocess.Process) -> str:
    process.kill()
    _, err = await process.communicate()
    return err.decode()


async def until(check: Any, timeout: float = DELIVERY_TIMEOUT) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := await checked(check())):
            await asyncio.sleep(0.05)
    return found


# --- Telegram -------------------------------------------------------------------------------

async def test_a_telegram_photo_sent_to_the_front_is_made_and_delivered_by_the_worker(tmp_path, simulator, pg_url):
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    processes = Processes()
    try:
        front_door, worker_door = await telegram.door("front"), await telegram.door("worker")
        await processes.start(_config(tmp_path, "front", simulator.base_url, pg_url, _telegram(front_door)),
                              "front", TELEGRAM_BOT_TOKEN=TG_TOKEN)
        photo = telegram.user_message(500, 500, caption="/effect hula", photo=image_bytes())
        # The front answers and queues the job; alone, it makes nothing of it.
        accepted = await until(lambda: [c for c in telegram.calls_to("editMessageText") if c["door"] == "front"])
        await asyncio.sleep(1.5)
        assert telegram.calls_to("sendVideo") == [] and simulator.submissions == []

        await processes.start(_config(tmp_path, "worker", simulator.base_url, pg_url, _telegram(worker_door)),
                              "worker", TELEGRAM_BOT_TOKEN=TG_TOKEN)
        [video] = await until(lambda: telegram.calls_to("sendVideo"))
        assert video["door"] == "worker" and mp4_info(video["files"]["video"])[0] == "h264"
        assert int(video["params"]["reply_parameters"]["message_id"]) == photo["message_id"]
        status = int(accepted[0]["params"]["message_id"])
        progress = [c for c in telegram.calls_to("editMessageText") if int(c["params"]["message_id"]) == status
                    and c["at"] > accepted[0]["at"]]
        assert progress and {c["door"] for c in progress} == {"worker"}  # the progress edits are the worker's

        # A result button pressed at the front: the front answers it, the worker delivers the new job.
        message = next(m for m in telegram.messages.values() if "video" in m)
        assert "again:1" in str(message["reply_markup"])
        telegram.press_button(501, message, "again:1")
        videos = await until(lambda: len(telegram.calls_to("sendVideo")) == 2 and telegram.calls_to("sendVideo"))
        assert {c["door"] for c in videos} == {"worker"}
        assert {c["door"] for c in telegram.calls_to("answerCallbackQuery")} == {"front"}
        await asyncio.sleep(0.5)
    finally:
        ended = await processes.stop()
        await telegram.close()
    assert [code for code, _ in ended] == [0, 0], ended
    assert all(TG_TOKEN not in err for _, err in ended)
    assert len(simulator.submissions) == 2  # one WaveSpeed task per job
    worker_paths = telegram.requests_by_door["worker"]
    assert not [p for p in worker_paths if p.endswith(RECEIVING)]  # the worker receives nothing
    assert any(p.endswith("/getUpdates") for p in telegram.requests_by_door["front"])


# --- Discord --------------------------------------------------------------------------------

def _effect(discord_: FakeDiscord, *, user: int = ALICE, **kw: Any) -> dict[str, Any]:
    attachment = discord_.attachment(image_bytes(640, 480))
    return discord_.slash("effect", [{"name": "scene", "type": 3, "value": "hula"},
                                     {"name": "image", "type": 11, "value": attachment["id"]}],
                          user=user, attachments=[attachment], **kw)


def _uploads(discord_: FakeDiscord, path: str) -> list[dict[str, Any]]:
    return [c for c in discord_.to(path, "POST") if c["files"]]


async def test_discord_commands_at_the_front_are_delivered_by_a_worker_without_a_gateway(
        tmp_path, simulator, pg_url):
    discord_ = FakeDiscord(DC_TOKEN)
    await discord_.start()
    discord_.guild(GUILD)
    processes = Processes()
    try:
        front_door, worker_door = await discord_.door("front"), await discord_.door("worker")
        await processes.start(_config(tmp_path, "front", simulator.base_url, pg_url, _discord(front_door)),
                              "front", DISCORD_BOT_TOKEN=DC_TOKEN)
        await until(lambda: discord_._sockets, START_TIMEOUT)
        # Three commands while no worker runs: each is answered (its job queued), none made.
        by_webhook = _effect(discord_)
        by_channel = _effect(discord_, user=BOB)
        by_dm = _effect(discord_, channel=OTHER_CHANNEL)
        for payload in (by_webhook, by_channel, by_dm):
            await discord_.dispatch("INTERACTION_CREATE", payload)
            await until(lambda p=payload: [c for c in discord_.to(f"/webhooks/{APP_ID}/{p['token']}/messages/",
                                                                   "PATCH") if c["door"] == "front"])
        await asyncio.sleep(1.5)
        assert simulator.submissions == [] and not [c for c in discord_.calls if c["files"]]
        # Past their tokens' lifetime, two can no longer be answered through the interaction;
        # one channel refuses the bot, so its video goes to the user's DMs.
        discord_.webhook_tokens_expire(by_channel["token"])
        discord_.webhook_tokens_expire(by_dm["token"])
        discord_.refuse_channels[OTHER_CHANNEL] = (50013, "Missing Permissions")

        await processes.start(_config(tmp_path, "worker", simulator.base_url, pg_url, _discord(worker_door)),
                              "worker", DISCORD_BOT_TOKEN=DC_TOKEN)
        [webhook] = await until(lambda: _uploads(discord_, f"/webhooks/{APP_ID}/{by_webhook['token']}"))
        [channel] = await until(lambda: _uploads(discord_, f"/channels/{CHANNEL}/messages"))
        dm = await until(lambda: [c for c in discord_.calls if c["files"] and c["path"].startswith("/api/v10/channels/")
                                  and int(c["path"].split("/")[4]) in discord_.dm_channels])
        assert [c["door"] for c in (webhook, channel, *dm)] == ["worker"] * 3
        assert mp4_info(webhook["files"]["kling-1.mp4"])[0] == "h264"
        assert int(channel["json"]["message_reference"]["channel_id"]) == CHANNEL
        assert channel["json"]["content"].startswith(f"<@{BOB}>")
        assert discord_.dm_channels[int(dm[0]["path"].split("/")[4])] == ALICE
        progress = [c for c in discord_.to(f"/webhooks/{APP_ID}/{by_webhook['token']}/messages/", "PATCH")
                    if c["door"] == "worker"]
        assert progress  # the worker edits the status message as the job moves

        # The Again button under the first video, pressed at the front: a new job, made by the worker.
        message = next(m for m in discord_.messages.values()
                       if any(a["filename"] == "kling-1.mp4" for a in m["attachments"]))
        press = discord_.interaction(3, {"custom_id": "kling:again:1", "component_type": 2}, user=BOB,
                                     message=message)
        await discord_.dispatch("INTERACTION_CREATE", press)
        [again] = await until(lambda: _uploads(discord_, f"/webhooks/{APP_ID}/{press['token']}"))
        assert again["door"] == "worker" and "kling-4.mp4" in again["files"]
        assert {c["door"] for c in discord_.to(f"/interactions/{press['id']}/")} == {"front"}
        await asyncio.sleep(0.5)
    finally:
        ended = await processes.stop()
        await discord_.close()
    assert [code for code, _ in ended] == [0, 0], ended
    assert all(DC_TOKEN not in err for _, err in ended)
    assert len(simulator.submissions) == 4
    worker_paths = discord_.requests_by_door["worker"]
    assert not [p for p in worker_paths if "gateway" in p]  # never asked for, never opened
    assert len(discord_.identifies) == 1  # the front's one gateway session
    assert not [c for c in discord_.calls if c["door"] == "worker" and "/commands" in c["path"]]


# --- start-up -------------------------------------------------------------------------------

def _kling(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env=_env())


def test_a_worker_without_a_chat_token_says_so_in_one_line(tmp_path):
    for simulate in ([], ["--simulate"]):
        done = _kling("run", "--role", "worker", *simulate, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        [line] = done.stderr.splitlines()
        assert line.startswith("kling-bot: a worker delivers to the chat platforms whose bot tokens it has")


def test_run_help_names_the_roles(tmp_path):
    done = _kling("run", "--help", cwd=tmp_path)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--role {all,front,worker}" in text
    assert "front: receive chat events" in text and "worker: make and deliver the queued jobs" in text
    readme = (ROOT / "README.md").read_text()
    assert "kling-bot run --role front" in readme and "kling-bot run --role worker" in readme


async def test_a_worker_whose_token_is_refused_says_so_in_one_line(tmp_path, simulator):
    telegram, discord_ = FakeTelegram(TG_TOKEN), FakeDiscord(DC_TOKEN)
    await telegram.start()
    await discord_.start()
    try:
        for chat, tokens, expected in (
                (_telegram(telegram.base), {"TELEGRAM_BOT_TOKEN": "424242:WRONG-token"},
                 messages.TELEGRAM_TOKEN_REJECTED),
                (_discord(discord_.base), {"DISCORD_BOT_TOKEN": "MTIz.wrong.token"},
                 messages.DISCORD_TOKEN_REJECTED)):
            config = _config(tmp_path, "worker", simulator.base_url, str(tmp_path / "bot.sqlite"), chat)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters", "run", "--role", "worker", "--config", str(config),
                cwd=tmp_path, env=_env(**tokens), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
            assert process.returncode == 2 and out == b""
            assert err.decode().splitlines() == [f"kling-bot: {' '.join(expected.split())}"]
    finally:
        await telegram.close()
        await discord_.close()
