"""``kling-bot doctor`` run as an operator runs it: a whole process, against the WaveSpeed
simulator and the fake Telegram and Discord servers on 127.0.0.1, on SQLite and on
PostgreSQL. Each problem is named in one line of its own, the exit code says whether all
passed, and no secret (API key, bot tokens, database password) is ever printed."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp import web

from bot.devtools.simulator import Simulator
from bot.store import open_store, pg_migrations, sqlite
from tests.backends import on_postgres
from tests.conftest import API_KEY
from tests.fake_discord import APP_ID, BOT_ID, FakeDiscord
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
TG_TOKEN = "555111:AAdoctorTelegramTokenDoNotLeak_q9"
DC_TOKEN = "MTdoctor.DiscordTokenDoNotLeak.x7Zk"
TG_SECRET = "doctor-webhook-secret-DoNotLeak"
DB_PASSWORD = "pg-password-DoNotLeak-42"
RUN_TIMEOUT = 60  # seconds the doctor may take
PR_CAPBSET_DROP = 24  # prctl(2)


@pytest.fixture
async def telegram() -> Iterator[FakeTelegram]:
    server = FakeTelegram(TG_TOKEN)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def discord() -> Iterator[FakeDiscord]:
    server = FakeDiscord(DC_TOKEN)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder of the test's own (shutil removes it, read-only files and all)."""
    path = Path(tempfile.mkdtemp(prefix="kling-doctor-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def with_password(url: str, password: str) -> str:
    """A PostgreSQL URL with this password (the tests' server trusts 127.0.0.1, so any works)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, f"{user.split(':')[0]}:{password}@{host}", parts.path, parts.query, ""))


def write_config(folder: Path, *, wavespeed: Simulator, database: str, telegram: FakeTelegram | None = None,
                 discord: FakeDiscord | None = None, api_key: str = API_KEY, tg_token: str = TG_TOKEN,
                 dc_token: str = DC_TOKEN, extra: str = "") -> Path:
    storage = f'url = "{database}"' if on_postgres(database) else f'path = "{database}"'
    sections = [f"""
[wavespeed]
base_url = "{wavespeed.base_url}"
api_key = "{api_key}"
webhook_url = "{wavespeed.base_url}/kling"

[storage]
{storage}
videos_dir = "{folder / 'videos'}"
"""]
    if telegram is not None:
        sections.append(f"""
[telegram]
token = "{tg_token}"
base_url = "{telegram.base_url}"
base_file_url = "{telegram.base_file_url}"
webhook_url = "{telegram.base}/telegram-updates"
secret_token = "{TG_SECRET}"
""")
    if discord is not None:
        sections.append(f"""
[discord]
token = "{dc_token}"
api_base_url = "{discord.api_base_url}"
""")
    path = folder / "config.toml"
    path.write_text("".join(sections) + extra)
    path.chmod(0o644)
    return path


async def doctor(config: Path, *args: str, file_modes_bind: bool = False) -> tuple[int, str, str]:
    """Run ``kling-bot doctor --config CONFIG``; (rc, stdout, stderr). ``file_modes_bind``:
    run as root is, but without root's power to write any file whatever its mode."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY", "_DATABASE_URL"))}
    env = {**env, "PYTHONPATH": str(ROOT)}
    bound = {"preexec_fn": _without_file_override} if file_modes_bind and os.geteuid() == 0 else {}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "doctor", "--config", str(config), *args, cwd=config.parent, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **bound)
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _without_file_override() -> None:
    """In the child, before exec: drop the capabilities that let root ignore file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the bounding set, so the
    program it runs is refused a read-only file like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def failing(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


def assert_no_secret(*texts: str, more: tuple[str, ...] = ()) -> None:
    for secret in (API_KEY, TG_TOKEN, DC_TOKEN, TG_SECRET, DB_PASSWORD, *more):
        for text in texts:
            assert secret not in text


async def migrated(database: str, folder: Path) -> str:
    """The test's database, migrated, as the config names it: a SQLite file in ``folder``,
    or the PostgreSQL URL with a password in it (which the doctor must never print)."""
    if on_postgres(database):
        return with_password(database, DB_PASSWORD)
    path = str(folder / "bot.sqlite")
    store = await open_store(path)
    await store.close()
    return path


async def test_all_checks_pass_and_exit_0(simulator, telegram, discord, database, folder):
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder),
                          telegram=telegram, discord=discord)

    rc, out, err = await doctor(config)

    assert rc == 0, out + err
    lines = out.splitlines()
    assert failing(out) == []
    assert lines[-1] == f"All {len(lines) - 1} checks passed."
    by_name = {line.split(": ", 1)[0].split(None, 1)[1]: line for line in lines[:-1]}
    assert "loads" in by_name["config"]
    newest = len(pg_migrations.MIGRATIONS if on_postgres(database) else sqlite.MIGRATIONS)
    assert f"reachable and writable; schema version {newest}, the newest" in by_name["database"]
    assert "balance is $100.00" in by_name["[wavespeed] api_key"]
    assert "@kling_test_bot (id 555111)" in by_name["[telegram] token"]
    assert f"(id {BOT_ID}), application Kling (id {APP_ID})" in by_name["[discord] token"]
    assert "answers from here" in by_name["[wavespeed] webhook_url"]
    assert "answers from here" in by_name["[telegram] webhook_url"]
    assert "libx264 and aac encoders present" in by_name["PyAV"]
    # the platforms were asked, with the tokens configured
    assert [call["method"] for call in telegram.calls] == ["getMe"]
    assert {call["path"] for call in discord.calls} >= {"/api/v10/users/@me", "/api/v10/oauth2/applications/@me"}
    assert_no_secret(out, err)


async def test_a_bad_key_is_one_line_saying_bad_key(telegram, discord, database, folder):
    wavespeed = Simulator(api_key=API_KEY)  # answers 401 to any other key, as WaveSpeed does
    await wavespeed.start()
    wrong = "ws-revoked-key-DoNotLeak-0000"
    try:
        config = write_config(folder, wavespeed=wavespeed, database=await migrated(database, folder),
                              telegram=telegram, discord=discord, api_key=wrong)
        rc, out, err = await doctor(config)
    finally:
        await wavespeed.close()

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [wavespeed] api_key: bad key:") and "WAVESPEED_API_KEY" in line
    assert "no balance" not in out
    assert_no_secret(out, err, more=(wrong,))


async def test_a_401_to_the_balance_call_is_a_bad_key(simulator, database, folder):
    simulator.fail_next("balance", 401, 401, message="Unauthorized: invalid API key")
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder))

    rc, out, err = await doctor(config)

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [wavespeed] api_key: bad key: WaveSpeed refused the API key (HTTP 401)")
    assert_no_secret(out, err)


async def test_an_empty_account_is_no_balance_not_a_bad_key(simulator, database, folder):
    simulator.balance = Decimal("0")
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder))

    rc, out, err = await doctor(config)

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [wavespeed] api_key: no balance: the key works") and "$0.00" in line
    assert "bad key" not in out
    assert_no_secret(out, err)


async def test_a_bad_telegram_token_is_one_line(simulator, telegram, discord, database, folder):
    wrong = "555111:AArevokedTelegramTokenDoNotLeak"
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder),
                          telegram=telegram, discord=discord, tg_token=wrong)

    rc, out, err = await doctor(config)

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [telegram] token: bad token: Telegram refused it") and "@BotFather" in line
    assert_no_secret(out, err, more=(wrong,))


async def test_a_telegram_base_url_with_a_token_placeholder_is_reached_as_the_bot_reaches_it(
        simulator, telegram, database, folder):
    # python-telegram-bot puts the token where base_url says {token} (Telegram's test
    # environment: .../bot{token}/test): doctor must call the same URL, not append the token.
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder), telegram=telegram)
    config.write_text(config.read_text().replace(f'base_url = "{telegram.base_url}"',
                                                 f'base_url = "{telegram.base_url}{{token}}"'))

    rc, out, err = await doctor(config)

    assert not [line for line in failing(out) if "[telegram]" in line], out
    assert any(line.startswith("ok") and "[telegram] token" in line for line in out.splitlines()), out
    assert_no_secret(out, err)


async def test_a_bad_discord_token_is_one_line(simulator, telegram, discord, database, folder):
    wrong = "MTrevoked.DiscordTokenDoNotLeak.0000"
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder),
                          telegram=telegram, discord=discord, dc_token=wrong)

    rc, out, err = await doctor(config)

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [discord] token: bad token: Discord refused it") and "Developer Portal" in line
    assert_no_secret(out, err, more=(wrong,))


async def test_an_unwritable_database_is_one_line(simulator, database, folder):
    """SQLite: the file is read-only (when the tests run as root, the doctor runs without
    root's power to write it anyway); PostgreSQL: a role that may only read the tables."""
    if on_postgres(database):
        role = f"kling_reader_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(database)
        try:
            await admin.execute(f"create role {role} login password '{DB_PASSWORD}'")
            await admin.execute(f"grant select on all tables in schema public to {role}")
        finally:
            await admin.close()
        parts = urlsplit(database)
        location = urlunsplit((parts.scheme, f"{role}:{DB_PASSWORD}@{parts.netloc.rpartition('@')[2]}",
                               parts.path, "", ""))
    else:
        location = await migrated(database, folder)
        Path(location).chmod(0o444)  # its folders stay writable: only the database is read-only
    config = write_config(folder, wavespeed=simulator, database=location)

    rc, out, err = await doctor(config, file_modes_bind=True)

    assert rc == 1, out + err
    (line,) = failing(out)
    assert line.startswith("FAIL  database: the database ") and "cannot be written" in line
    assert ("readonly" in line) if not on_postgres(database) else ("no write privilege on" in line)
    assert_no_secret(out, err)


async def test_an_unreachable_database_and_webhook_each_one_line(simulator, database, folder):
    closed = _closed_port()
    if on_postgres(database):
        parts = urlsplit(with_password(database, DB_PASSWORD))
        location = urlunsplit((parts.scheme, parts.netloc.rpartition(":")[0] + f":{closed}", parts.path, "", ""))
    else:
        location = str(folder / "bot.sqlite")
        Path(location).mkdir()  # a folder where the database file should be
    config = write_config(folder, wavespeed=simulator, database=location,
                          extra=f'\n[telegram]\nwebhook_url = "http://127.0.0.1:{closed}/updates"\n'
                                f'secret_token = "{TG_SECRET}"\n')

    rc, out, err = await doctor(config)

    assert rc == 1
    database_line, webhook_line = failing(out)
    assert database_line.startswith("FAIL  database: cannot open the database")
    assert webhook_line.startswith(f"FAIL  [telegram] webhook_url: http://127.0.0.1:{closed}/updates does not answer")
    assert_no_secret(out, err)


async def test_a_config_that_does_not_load_is_the_one_line(folder):
    config = folder / "config.toml"
    config.write_text(f'[wavespeed]\napi_key = "{API_KEY}"\nmax_concurent = 2\n')

    rc, out, err = await doctor(config)

    assert rc == 1
    assert failing(out) == [f"FAIL  config: {config}: unknown key [wavespeed] max_concurent "
                            "(did you mean 'max_concurrent'?) Nothing else was checked: fix the config first."]
    assert_no_secret(out, err)


async def test_quick_makes_no_network_call(simulator, telegram, database, folder):
    config = write_config(folder, wavespeed=simulator, database=await migrated(database, folder), telegram=telegram)
    asked = len(simulator.requests)

    rc, out, err = await doctor(config, "--quick")

    assert rc == 0, out + err
    assert "[wavespeed]" not in out and "[telegram]" not in out
    assert len(simulator.requests) == asked and telegram.calls == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_video_folder_under_a_file_is_one_line(simulator, folder):
    (folder / "taken").write_text("a file, where the videos' folder should go")
    config = write_config(folder, wavespeed=simulator, database=str(folder / "bot.sqlite"))
    config.write_text(config.read_text().replace(f'videos_dir = "{folder / "videos"}"',
                                                 f'videos_dir = "{folder / "taken" / "videos"}"'))

    rc, out, err = await doctor(config)

    assert rc == 1
    assert failing(out) == [f"FAIL  [storage] videos_dir: the video folder {folder / 'taken' / 'videos'} cannot be "
                            f"written ({folder / 'taken'} is a file, not a folder): make it writable by the user the "
                            "bot runs as (chown/chmod), or point [storage] videos_dir elsewhere."]
    assert f"ok    database: {folder / 'bot.sqlite'} does not exist yet: the bot creates it at start" in out


async def test_a_database_of_a_newer_kling_bot_fails_and_an_older_one_is_migrated_at_start(simulator, folder):
    path = await migrated(str(folder / "bot.sqlite"), folder)
    newest = len(sqlite.MIGRATIONS)
    config = write_config(folder, wavespeed=simulator, database=path)
    for version, ok, said in ((newest + 1, False, f"holds schema version {newest + 1}, newer than this kling-bot "
                                                  f"knows ({newest}): upgrade kling-bot"),
                              (newest - 1, True, f"schema version {newest - 1}, migrated to {newest} when the "
                                                 "bot starts")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {version}")

        rc, out, err = await doctor(config)

        (line,) = [line for line in out.splitlines() if " database: " in line]
        assert (rc == 0) is ok and line.startswith("ok  " if ok else "FAIL") and said in line, out
    with contextlib.closing(sqlite3.connect(path)) as db:  # the doctor migrated nothing
        assert db.execute("PRAGMA user_version").fetchone()[0] == newest - 1


async def test_a_webhook_url_behind_a_proxy_with_no_bot_fails(simulator, folder):
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="502 Bad Gateway")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", bad_gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        config = write_config(folder, wavespeed=simulator, database=str(folder / "bot.sqlite"))
        config.write_text(config.read_text().replace(f'webhook_url = "{simulator.base_url}/kling"',
                                                     f'webhook_url = "{proxy}/kling"'))
        rc, out, err = await doctor(config)
    finally:
        await runner.cleanup()

    assert rc == 1
    assert failing(out) == [f"FAIL  [wavespeed] webhook_url: {proxy}/kling answers HTTP 502 from the proxy in front, "
                            "which does not reach the bot: start the bot, and check the proxy forwards to "
                            "[wavespeed] webhook_listen."]


async def test_an_error_quoting_the_token_in_its_url_shows_it_masked(simulator, telegram, folder):
    """Telegram's URLs carry the token: an error naming the URL must not print it."""
    config = write_config(folder, wavespeed=simulator, database=str(folder / "bot.sqlite"), telegram=telegram)
    config.write_text(config.read_text().replace(f'base_url = "{telegram.base_url}"',
                                                 'base_url = "http://127.0.0.1:99999/bot"'))  # no such port

    rc, out, err = await doctor(config)

    assert rc == 1
    (line,) = failing(out)
    assert line.startswith("FAIL  [telegram] token: cannot reach Telegram at http://127.0.0.1:99999")
    assert "/bot[secret]/getMe" in line
    assert_no_secret(out, err)


async def test_a_bad_key_a_bad_token_and_an_unwritable_database_at_once_are_three_lines(
        telegram, discord, database, folder):
    wavespeed = Simulator(api_key=API_KEY)
    await wavespeed.start()
    wrong_key, wrong_token = "ws-another-key-DoNotLeak-1111", "MTanother.DiscordTokenDoNotLeak.1111"
    if on_postgres(database):
        location = with_password(database, DB_PASSWORD)
        admin = await asyncpg.connect(database)
        try:  # the whole database read-only, as on a standby
            name = urlsplit(database).path[1:]
            await admin.execute(f'alter database "{name}" set default_transaction_read_only = on')
        finally:
            await admin.close()
    else:
        location = await migrated(database, folder)
        Path(location).chmod(0o444)
    try:
        config = write_config(folder, wavespeed=wavespeed, database=location, telegram=telegram,
                              discord=discord, api_key=wrong_key, dc_token=wrong_token)
        rc, out, err = await doctor(config, file_modes_bind=True)
    finally:
        await wavespeed.close()

    assert rc == 1
    database_line, key_line, token_line = failing(out)
    assert database_line.startswith("FAIL  database: the database ") and "cannot be written" in database_line
    assert key_line.startswith("FAIL  [wavespeed] api_key: bad key:")
    assert token_line.startswith("FAIL  [discord] token: bad token:")
    assert_no_secret(out, err, more=(wrong_key, wrong_token))


async def test_without_a_config_file_the_defaults_and_the_environment_are_checked(folder):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "doctor", "--quick", cwd=folder,
        env={**{k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY", "_DATABASE_URL"))},
             "PYTHONPATH": str(ROOT), "WAVESPEED_API_KEY": API_KEY},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = (part.decode() for part in await asyncio.wait_for(process.communicate(), RUN_TIMEOUT))

    assert process.returncode == 0, out + err
    assert out.splitlines()[0].startswith("ok    config: no config file (no --config and no ./config.toml)")
    assert f"ok    database: {folder / 'kling-bot.sqlite'} does not exist yet" in out
    assert not (folder / "kling-bot.sqlite").exists()  # checked, not created
    assert_no_secret(out, err)
