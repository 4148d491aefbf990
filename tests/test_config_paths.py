"""Storage paths in a config file are read against the file's own folder, not the folder
the bot is started in: ``kling-bot run --config /etc/kling-bot/config.toml`` finds the same
database from any working directory (systemd's, a shell's, a container's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent
NO_SECRETS: dict[str, str] = {}


def _config(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(text)
    return path


def test_relative_storage_paths_resolve_against_the_config_files_folder(tmp_path, monkeypatch):
    config = _config(tmp_path / "conf", '[storage]\npath = "data/bot.sqlite"\nvideos_dir = "media"\n')
    monkeypatch.chdir(tmp_path)
    for given in (config, Path("conf/config.toml")):  # an absolute and a relative --config alike
        storage = load_settings(given, env=NO_SECRETS).storage
        assert storage.path == str(tmp_path / "conf" / "data" / "bot.sqlite")
        assert storage.videos_dir == str(tmp_path / "conf" / "media")


def test_a_sqlite_url_resolves_too_and_a_postgresql_one_is_left_alone(tmp_path):
    sqlite = load_settings(_config(tmp_path / "a", '[storage]\nurl = "bot.sqlite"\n'), env=NO_SECRETS)
    assert sqlite.storage.database == str(tmp_path / "a" / "bot.sqlite")
    url = "postgresql://kling:pw@127.0.0.1:5432/kling"
    postgres = load_settings(_config(tmp_path / "b", f'[storage]\nurl = "{url}"\n'), env=NO_SECRETS)
    assert postgres.storage.database == url


def test_absolute_paths_memory_and_the_environment_are_kept_as_given(tmp_path):
    folder = tmp_path / "somewhere"
    config = _config(tmp_path / "c", f'[storage]\npath = ":memory:"\nvideos_dir = "{folder}"\n')
    storage = load_settings(config, env=NO_SECRETS).storage
    assert (storage.path, storage.videos_dir) == (":memory:", str(folder))
    # KLING_DATABASE_URL is not in the file: a relative one is the process's own business.
    assert load_settings(config, env={"KLING_DATABASE_URL": "env.sqlite"}).storage.database == "env.sqlite"


def test_a_url_that_is_neither_still_says_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match=r"\[storage\] url must be a postgresql:// URL"):
        load_settings(_config(tmp_path / "d", '[storage]\nurl = "mysql://kling@db/kling"\n'), env=NO_SECRETS)


def test_without_a_config_file_the_defaults_stay_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = load_settings(None, env=NO_SECRETS).storage
    assert (storage.path, storage.videos_dir) == ("kling-bot.sqlite", "videos")
    # A file that names no path leaves the defaults where they were, too.
    storage = load_settings(_config(tmp_path / "e", "[quota]\ndaily_credits = 3\n"), env=NO_SECRETS).storage
    assert (storage.path, storage.videos_dir) == ("kling-bot.sqlite", "videos")


def test_the_cli_started_in_another_folder_opens_the_database_beside_its_config(tmp_path):
    config = _config(tmp_path / "conf", '[storage]\npath = "bot.sqlite"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "KLING_DATABASE_URL"}
    done = subprocess.run([sys.executable, "-m", "adapters", "jobs", "--config", "../conf/config.toml"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert (config.parent / "bot.sqlite").is_file()
    assert not (elsewhere / "bot.sqlite").exists()
