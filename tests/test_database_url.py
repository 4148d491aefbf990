"""``[storage] url`` / KLING_DATABASE_URL from the command line: a database that cannot be
opened is one plain line without its password; simulated runs never use it."""

from __future__ import annotations

import pytest

from tests.helpers import image_bytes
from tests.test_cli import kling

UNREACHABLE = "postgresql://kling:s3cr3t-pw@127.0.0.1:1/kling"


@pytest.mark.parametrize("command", [["jobs"], ["run"], ["run", "--role", "front"]])
def test_a_database_that_cannot_be_opened_is_one_line_without_its_password(tmp_path, command):
    done = kling("-v", *command, cwd=tmp_path, env={
        "KLING_DATABASE_URL": UNREACHABLE, "WAVESPEED_API_KEY": "ws-key", "TELEGRAM_BOT_TOKEN": "123:abc"})
    lines = [line for line in done.stderr.strip().splitlines() if "cannot open the database" in line]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("kling-bot: ")
    assert lines[0].endswith("cannot open the database postgresql://kling:***@127.0.0.1:1/kling:"
                             " ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 1)")
    assert "Traceback" not in done.stderr and "s3cr3t-pw" not in done.stderr + done.stdout


def test_a_simulated_run_keeps_to_its_own_sqlite_file_whatever_the_database_url(tmp_path):
    (tmp_path / "me.jpg").write_bytes(image_bytes())
    done = kling("generate", "me.jpg", "--effect", "hula", "--simulate", "-o", "out.mp4", cwd=tmp_path,
                 env={"KLING_DATABASE_URL": UNREACHABLE})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.mp4").stat().st_size > 0
    assert (tmp_path / "kling-bot-simulated.sqlite").exists()


def test_a_url_of_another_scheme_is_refused_not_taken_for_a_sqlite_path(tmp_path):
    """``postgresql+asyncpg://…`` (SQLAlchemy's spelling) would otherwise become a folder
    named after the URL, password included, and each process its own private database."""
    done = kling("jobs", cwd=tmp_path, env={"KLING_DATABASE_URL": "postgresql+asyncpg://kling:s3cr3t-pw@db/kling"})
    assert done.returncode == 2
    assert done.stderr.strip().endswith("[storage] url must be a postgresql:// URL or a SQLite file path.")
    assert "s3cr3t-pw" not in done.stderr and list(tmp_path.iterdir()) == []


def test_the_database_password_is_not_in_the_settings_repr():
    from bot.config import load_settings

    assert "s3cr3t-pw" not in repr(load_settings(None, env={"KLING_DATABASE_URL": UNREACHABLE}))
