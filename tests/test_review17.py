"""#17 review: what the README, config.example.toml and the help texts promise the operator
holds, run as the operator runs it (the CLI as a subprocess)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from adapters.telegram import TelegramAdapter
from bot import messages
from bot.config import HttpSettings, LogSettings, ModerationSettings, SpendSettings, load_settings
from bot.store import open_store
from tests.helpers import image_bytes
from tests.test_bans_and_allowances import (  # noqa: F401  (fixtures)
    ALICE,
    BOB,
    D_ALICE,
    D_BOB,
    GROUP,
    MANAGE,
    dc_settings,
    fake_discord,
    run_discord,
    telegram,
    tg_settings,
)
from tests.test_cli import kling
from tests.test_discord import callbacks, effect_payload, feed, until
from tests.test_telegram import _texts

ROOT = Path(__file__).resolve().parent.parent


def test_demo_help_names_the_admin_commands_the_console_answers(tmp_path):
    """The console answers /stats and /balance (README: "Console (`kling-bot demo`)"):
    its /help says so, or nobody trying the demo finds them."""
    done = kling("demo", cwd=tmp_path, stdin="/help\n/stats\n/balance\n/quit\n")
    assert done.returncode == 0, done.stderr
    help_text = done.stdout.split("> /stats")[0]
    assert "/stats" in help_text and "/balance" in help_text
    assert "Today: 0 jobs" in done.stdout and "WaveSpeed balance: $" in done.stdout


def _operating_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Operating the bot")
    return readme[start:readme.index("\n## ", start + 1)]


def test_every_operator_key_is_in_the_readme_and_the_example_config():
    """Done when: the README's "Operating the bot" names every [spend], [moderation],
    [http] and [log] key, and config.example.toml documents each with its section."""
    section = _operating_section()
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    example_text = (ROOT / "config.example.toml").read_text()
    for table, settings in (("spend", SpendSettings), ("moderation", ModerationSettings),
                            ("http", HttpSettings), ("log", LogSettings)):
        assert f"[{table}]" in section and table in example, table
        for field in dataclasses.fields(settings):
            assert f"`{field.name}`" in section, (table, field.name)
            assert re.search(rf"^#? ?{field.name} = ", example_text, re.MULTILINE), (table, field.name)


def test_the_readmes_operator_toml_blocks_load(tmp_path):
    """Each TOML example of "Operating the bot" is a config the bot accepts as written."""
    blocks = re.findall(r"```toml\n(.*?)```", _operating_section(), re.DOTALL)
    assert len(blocks) >= 4
    for number, block in enumerate(blocks):
        path = tmp_path / f"block-{number}.toml"
        path.write_text(block)
        load_settings(path)


async def test_the_wavespeed_listener_takes_a_bracketed_ipv6_address():
    """``[wavespeed] webhook_listen = "[::1]:8080"`` passes the config check, as it does for
    ``[http] listen`` and ``[telegram] webhook_listen``, whose listeners serve it: so must
    WaveSpeed's (it asked the resolver for a host named "[::1]" and could not start)."""
    import aiohttp

    from bot.webhooks import PATH, WebhookListener

    async def nothing(*_: object) -> None:
        raise AssertionError("an unsigned delivery is never handed on")

    listener = WebhookListener("[::1]:0", "secret", nothing)
    port = await listener.start()
    try:
        url = f"http://[::1]:{port}{PATH.replace('{job_id}', '1')}"
        async with aiohttp.ClientSession() as session, session.post(url, data=b"{}") as answer:
            assert answer.status == 401
    finally:
        await listener.stop()


# --- /pause and /resume as the admins type them (README "Pausing the bot") -------------------

PAUSED_FOR_DB = ("The bot is paused by its admins (db upgrade). No video can be started right now;"
                 " please try again later.")


async def test_a_telegram_admins_pause_refuses_the_others_until_resume(tg_settings, adapter_runner, telegram,  # noqa: F811
                                                                       simulator):
    engine, _ = await adapter_runner(tg_settings, TelegramAdapter)
    telegram.user_message(GROUP, ALICE, text="/pause db upgrade")
    await telegram.wait_for(lambda: messages.now_paused("db upgrade", 0) in _texts(telegram, "sendMessage"))
    telegram.user_message(GROUP, BOB, caption="/effect hula", photo=image_bytes())
    await telegram.wait_for(lambda: PAUSED_FOR_DB in _texts(telegram, "sendMessage"))
    assert telegram.calls_to("getFile") == [] and simulator.submissions == []
    telegram.user_message(GROUP, ALICE, text="/resume")
    await telegram.wait_for(lambda: messages.NOW_RESUMED in _texts(telegram, "sendMessage"))
    assert await engine.paused() is None


async def test_a_discord_managers_pause_and_resume_answer_privately(dc_settings, run_discord, fake_discord,  # noqa: F811
                                                                    simulator):
    engine, adapter = await run_discord(dc_settings)

    async def answer_to(payload):
        feed(adapter, payload)
        [response] = await until(lambda: callbacks(fake_discord, payload["token"]))
        return response["data"]

    paused = await answer_to(fake_discord.slash("pause", [{"name": "reason", "type": 3, "value": "db upgrade"}],
                                                user=D_ALICE, permissions=MANAGE))
    assert paused["content"] == messages.now_paused("db upgrade", 0) and paused["flags"] & 64
    refused = await answer_to(effect_payload(fake_discord, user=D_BOB))
    assert refused["content"] == PAUSED_FOR_DB and fake_discord.to("/attachments/") == []
    resumed = await answer_to(fake_discord.slash("resume", [], user=D_ALICE, permissions=MANAGE))
    assert resumed["content"] == messages.NOW_RESUMED and await engine.paused() is None
    assert simulator.submissions == []


async def test_a_credits_grant_too_large_is_a_usage_line_not_a_traceback(tmp_path):
    """`kling-bot credits grant ID N` takes what Telegram's /grant takes (at most a billion
    either way): a larger N is one usage line, exit 2, and nothing changes."""
    await (await open_store(str(tmp_path / "kling-bot.sqlite"))).close()  # the bot's database, made by its first run
    for amount in ("99999999999999999999", "-1000000001", "lots"):
        done = kling("credits", "grant", "telegram:1", "--", amount, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "amount" in done.stderr
    assert kling("credits", "grant", "telegram:1", "1000000000", cwd=tmp_path).returncode == 0
    shown = kling("credits", "show", "telegram:1", cwd=tmp_path)
    assert shown.stdout.strip() == "telegram:1 has 1000000010 credits (1000000000 bonus), with a daily allowance of 10."


def test_an_operator_command_run_where_no_database_is_says_so_and_makes_none(tmp_path):
    """Run from the wrong folder (no --config, no database here), `kling-bot pause` must not
    make an empty database and answer "Paused" while the bot runs on the real one; nor may
    a ban, a credit or the figures land in (or come from) a new empty database."""
    for command in (("pause", "db upgrade"), ("resume",), ("users", "ban", "telegram:1"), ("users", "list"),
                    ("credits", "show", "telegram:1"), ("credits", "grant", "telegram:1", "5"),
                    ("stats", "--json")):
        done = kling(*command, cwd=tmp_path)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, (command, done.stderr)
        assert "no database at" in done.stderr and "kling-bot.sqlite" in done.stderr
    assert list(tmp_path.iterdir()) == []
