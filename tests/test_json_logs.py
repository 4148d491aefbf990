"""``[log] format = "json"``: every line a bot process logs is one JSON object; each line
about a job carries its ``job_id``; secrets stay masked, as in the text log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import API_KEY
from tests.fake_telegram import FakeTelegram
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "616161:JSON-LOG-telegram-token-SECRET"
ALICE = 616


def _config(tmp_path: Path, telegram: FakeTelegram, base_url: str, log: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[wavespeed]
base_url = "{base_url}"
api_key = "{API_KEY}"
poll_interval = 0.2

[telegram]
base_url = "{telegram.base_url}"
base_file_url = "{telegram.base_file_url}"
progress_interval = 0
conflict_check_seconds = 0

[storage]
path = "bot.sqlite"

[log]
{log}
""")
    return config


async def _run_one_job(config: Path, telegram: FakeTelegram, *options: str) -> tuple[int | None, str]:
    """A bot process (``kling-bot -v run``) that makes one video; its exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "-v", "run", *options, "--config", str(config), cwd=config.parent,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert b"kling-bot is running" in await asyncio.wait_for(process.stdout.readline(), 40)
        telegram.user_message(ALICE, ALICE, caption="/effect hula", photo=image_bytes())
        await telegram.wait_for(lambda: telegram.calls_to("sendVideo"), timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, stderr.decode()


async def test_every_line_of_a_json_log_parses_and_each_job_line_names_its_job(tmp_path, simulator):
    # Two retries while the job is driven: lines of the WaveSpeed client, which names no job.
    simulator.fail_next("upload", 503)
    simulator.fail_next("result", 503)
    telegram = FakeTelegram(TOKEN)
    await telegram.start()
    try:
        code, stderr = await _run_one_job(_config(tmp_path, telegram, simulator.base_url, 'format = "json"'),
                                          telegram)
    finally:
        await telegram.close()
    assert code == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert TOKEN not in stderr and API_KEY not in stderr
    retries = [line for line in lines if "retrying" in line["message"]]
    assert [line["logger"] for line in retries] == ["bot.wavespeed"] * 2
    assert all(line["job_id"] == 1 for line in retries)  # the job being driven, though unnamed
    about_the_job = [line for line in lines if "job 1" in line["message"]]
    for step in ("job 1 accepted", "job 1 submitted", "job 1 delivered"):
        assert any(line["message"].startswith(step) for line in about_the_job), step
    assert all(line["job_id"] == 1 for line in about_the_job)
    # A line about no job carries none.
    assert any(line["message"].startswith("models on offer") and "job_id" not in line for line in lines)


def test_secrets_are_masked_in_every_field_of_a_json_line(tmp_path):
    """The token in a message and a traceback, and a database password with characters JSON
    escapes (``"`` and ``\\``): masked before the line is encoded, so none survives."""
    password = 'p"w\\x'
    (tmp_path / "config.toml").write_text(
        f'[telegram]\ntoken = "{TOKEN}"\n[storage]\nurl = "postgresql://kling:p%22w%5Cx@127.0.0.1:1/kling"\n'
        '[log]\nformat = "json"\n')
    script = (
        "import logging\n"
        "from adapters import app\n"
        "app.configure_logging(False)\n"
        "app.settings_from(None)\n"
        "def fetch():\n"
        f"    raise ConnectionError('GET https://api.telegram.org/file/bot{TOKEN}/photos/1.jpg failed')\n"
        "try:\n"
        "    fetch()\n"
        "except ConnectionError:\n"
        f"    logging.getLogger('telegram.ext').exception('download failed with %s', {password!r})\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["message"] == "download failed with [secret]"
    assert "ConnectionError" in line["exception"] and "/file/bot[secret]/photos" in line["exception"]
    assert TOKEN not in done.stderr and "p\\\"w" not in done.stderr


async def test_a_start_failure_is_a_json_line_too(tmp_path):
    """What the command prints itself (why it cannot start) reads like the log's lines."""
    config = tmp_path / "config.toml"
    config.write_text('[log]\nformat = "json"\n')
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--config", str(config), cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    [line] = [json.loads(text) for text in stderr.decode().splitlines()]
    assert line["level"] == "ERROR" and "token" in line["message"].lower()


async def test_the_text_log_stays_the_default(tmp_path, simulator):
    telegram = FakeTelegram(TOKEN)
    await telegram.start()
    try:
        code, stderr = await _run_one_job(_config(tmp_path, telegram, simulator.base_url, ""), telegram)
    finally:
        await telegram.close()
    assert code == 0, stderr
    assert " INFO bot.engine" in stderr and not stderr.lstrip().startswith("{")
    assert TOKEN not in stderr
