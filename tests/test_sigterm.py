"""SIGTERM stops ``kling-bot run`` cleanly, within ``[storage] lease_seconds``: the job it
was making is handed over, and the next process on the same database delivers it once
(one video posted through the fake Telegram server, one charge in the ledger).

Two WaveSpeeds: the test's simulator, which outlives the bot as WaveSpeed does (the task
goes on; the next process follows it), and ``run --simulate``'s own, which ends with the
process and every task in it (the next run makes the job afresh, charging it once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.backends import query, storage_config
from tests.conftest import API_KEY
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes, mp4_info

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "515151:SIGTERM-telegram-token-SECRET"
ALICE = 515
LEASE_SECONDS = 6


def _config(tmp_path: Path, telegram: FakeTelegram, storage: str, wavespeed: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[telegram]
base_url = "{telegram.base_url}"
base_file_url = "{telegram.base_file_url}"
progress_interval = 0
conflict_check_seconds = 0

[storage]
{storage}
lease_seconds = {LEASE_SECONDS}
{wavespeed}
""")
    return config


async def _run(config: Path, *options: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", *options, "--config", str(config), cwd=config.parent,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    banner = await asyncio.wait_for(process.stdout.readline(), 40)
    assert b"kling-bot is running" in banner, banner
    return process


async def _stop_mid_job(process: asyncio.subprocess.Process, database: str, telegram: FakeTelegram) -> None:
    """Ask for a video, SIGTERM the process while WaveSpeed makes it, check it stopped
    cleanly within lease_seconds."""
    telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
    async with asyncio.timeout(40):
        while await query(database, "select state from jobs") != [("processing",)]:
            await asyncio.sleep(0.05)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    took = time.monotonic() - stopped_at
    assert process.returncode == 0, stderr.decode()
    assert took < LEASE_SECONDS, f"{took:.1f}s to stop"
    assert b"Traceback" not in stderr and TOKEN.encode() not in stderr
    assert telegram.calls_to("sendVideo") == []


async def _delivered_once(process: asyncio.subprocess.Process, database: str, telegram: FakeTelegram) -> None:
    try:
        [video] = await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=60)
        assert mp4_info(video["files"]["video"])[0] == "h264"
        await asyncio.sleep(1.0)  # a second delivery would have come by now
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 60)
    assert len(telegram.calls_to("sendVideo")) == 1
    assert await query(database, "select state, settlement from jobs") == [("done", "committed")]
    # One charge: the credit reserved at accept is committed once, never refunded nor taken twice.
    assert await query(database, "select entry, daily_delta + bonus_delta from ledger order by id") == [
        ("reserve", -1), ("commit", 0)]


@pytest.fixture
async def telegram():
    fake = FakeTelegram(TOKEN)
    await fake.start()
    yield fake
    await fake.close()


async def test_sigterm_mid_job_hands_it_over_and_the_next_process_delivers_it_once(
        tmp_path, telegram, simulator, database):
    simulator.job_seconds = 6.0  # still making the video when the first process stops
    wavespeed = f'[wavespeed]\nbase_url = "{simulator.base_url}"\napi_key = "{API_KEY}"\npoll_interval = 0.2\n'
    config = _config(tmp_path, telegram, storage_config(database), wavespeed)
    await _stop_mid_job(await _run(config), database, telegram)
    await _delivered_once(await _run(config), database, telegram)
    assert len(simulator.submissions) == 1  # followed by the next process, never submitted again


async def test_sigterm_mid_job_of_a_simulated_run_then_a_restart_delivers_it_once(tmp_path, telegram):
    """The run's simulator ended with it: the restart makes the job afresh, charging it once
    (it used to poll a task no simulator knew until the job timed out)."""
    config = _config(tmp_path, telegram, 'path = "bot.sqlite"')
    database = str(tmp_path / "bot-simulated.sqlite")  # where --simulate keeps its jobs and credits
    await _stop_mid_job(await _run(config, "--simulate"), database, telegram)
    await _delivered_once(await _run(config, "--simulate"), database, telegram)


class HangingTelegram(FakeTelegram):
    """A Bot API server whose answers to ``hanging`` methods never come (a server in trouble)."""

    def __init__(self, token: str):
        super().__init__(token)
        self.hanging: set[str] = set()
        self.answer = asyncio.Event()  # set: the hanging calls are answered at last

    async def _m_sendMessage(self, params, files):
        if "sendMessage" in self.hanging:
            await self.answer.wait()
        return super()._m_sendMessage(params, files)


async def test_sigterm_while_telegram_hangs_still_stops_within_lease_seconds(tmp_path):
    """A reply stuck on a server that stopped answering does not hold the stop past
    lease_seconds (after which another process would take the jobs over anyway)."""
    telegram = HangingTelegram(TOKEN)
    await telegram.start()
    try:
        config = _config(tmp_path, telegram, 'path = "bot.sqlite"')
        process = await _run(config, "--simulate")
        telegram.hanging.add("sendMessage")
        telegram.user_message(ALICE, ALICE, text="/quota")
        await telegram.wait_for(lambda: telegram.calls_to("sendMessage"))
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        took = time.monotonic() - stopped_at
        assert took < LEASE_SECONDS, f"{took:.1f}s to stop"
        assert process.returncode == 0 and b"Traceback" not in stderr, stderr.decode()
    finally:
        telegram.answer.set()
        await telegram.close()
