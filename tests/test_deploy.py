"""The files in deploy/ (systemd units, example settings) are what the README says: each
example loads, each unit starts a real ``kling-bot run --role`` command line and passes
``systemd-analyze verify`` where systemd is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.cli import build_parser
from bot.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SECRETS = {"KLING_DATABASE_URL": "postgresql://kling:pw@127.0.0.1:5432/kling", "WAVESPEED_API_KEY": "ws-key",
           "TELEGRAM_BOT_TOKEN": "1:tg", "DISCORD_BOT_TOKEN": "dc", "KLING_TELEGRAM_SECRET_TOKEN": "s3cr3t_tok"}
INSTALLED = "/opt/kling-bot/.venv/bin/kling-bot"  # where the units expect the bot


def test_the_example_settings_load_as_two_fronts_and_workers_that_fit_on_one_machine():
    fronts = [load_settings(DEPLOY / f"front-{n}.example.toml", env=SECRETS) for n in (0, 1)]
    assert [(f.discord.shard_count, f.discord.shard_ids) for f in fronts] == [(2, [0]), (2, [1])]
    assert all(f.telegram.webhook_url and f.telegram.secret_token == "s3cr3t_tok" for f in fronts)
    worker = load_settings(DEPLOY / "worker.example.toml", env=SECRETS)
    # Every worker instance reads one file: it must not listen, or the second could not bind.
    assert worker.wavespeed.webhook_listen == ""
    ports = [f.wavespeed.webhook_listen for f in fronts] + [f.telegram.webhook_listen for f in fronts]
    assert len(set(ports)) == len(ports)
    for settings in (*fronts, worker):
        assert settings.storage.database == SECRETS["KLING_DATABASE_URL"]
        assert settings.wavespeed.webhook_url == "https://bot.example.com"
    env_keys = {line.split("=", 1)[0] for line in (DEPLOY / "kling-bot.env.example").read_text().splitlines()
                if line and not line.startswith("#")}
    assert env_keys == set(SECRETS)


def _exec_start(unit: Path) -> list[str]:
    [line] = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


@pytest.mark.parametrize(("unit", "role"), [("kling-bot-front@.service", "front"),
                                            ("kling-bot-worker@.service", "worker")])
def test_each_unit_runs_its_role(unit, role, tmp_path):
    path = DEPLOY / "systemd" / unit
    command = _exec_start(path)
    assert command[0] == INSTALLED
    arguments = build_parser().parse_args([arg.replace("%i", "0") for arg in command[1:]])
    assert (arguments.command, arguments.role) == ("run", role)
    if shutil.which("systemd-analyze") is None:
        return  # no systemd here: the command line above is what is checked
    # The unit as installed, with the bot where this checkout has it.
    local = tmp_path / unit
    local.write_text(path.read_text().replace(INSTALLED, str(Path(sys.executable).with_name("kling-bot"))))
    done = subprocess.run(["systemd-analyze", "verify", str(local).replace("@.", "@0.")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
