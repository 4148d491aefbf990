"""The operations listener (``[http] listen``): ``/healthz``, ``/readyz`` and Prometheus
``/metrics``, read as a probe and a scraper would, on SQLite and on PostgreSQL.

The database's figures are read at scrape time, so two processes on one database report
the same totals; this process's own counters (WaveSpeed latency and errors, webhook
deliveries) are compared before and after, as the suite shares one process per worker.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops_http import OpsListener
from bot.wavespeed import AuthError
from tests.backends import on_postgres, process_config, raw_sql
from tests.conftest import effect_request, user
from tests.fake_discord import GUILD, FakeDiscord
from tests.fake_telegram import FakeTelegram
from tests.helpers import settled

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
TG_TOKEN = "515151:OPS-telegram-token-SECRET"
DC_TOKEN = "MTIz.ops-discord-token.SECRET"
START_TIMEOUT = 40
# The figures every process on one database reports alike.
DATABASE_FAMILIES = ("kling_jobs", "kling_queue_depth", "kling_spend_usd", "kling_job_failures",
                     "kling_credits_spent", "kling_credits_reserved", "kling_credits_refunded",
                     "kling_credits_granted")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, str, str]:
    """(status, body, content type) of a GET on the listener."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as resp:
        return resp.status, await resp.text(), resp.headers.get("Content-Type", "")


async def scrape(port: int) -> Samples:
    """/metrics as Prometheus' own parser reads it: (sample name, labels) -> value."""
    status, body, content_type = await _get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), (status, content_type)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def database_figures(samples: Samples) -> Samples:
    return {key: v for key, v in samples.items()
            if any(key[0] == family or key[0] == f"{family}_total" for family in DATABASE_FAMILIES)}


@pytest.fixture
async def ops_of():
    """Start operations listeners on free ports; all stopped after the test."""
    started: list[OpsListener] = []

    async def start(store: Any, checks: dict[str, Any] | None = None) -> int:
        listener = OpsListener("127.0.0.1:0", store, checks)
        started.append(listener)
        return await listener.start()

    yield start
    for listener in started:
        await listener.stop()


async def _run_jobs(engine, courier, simulator) -> list[Any]:
    """One job whose task fails, then two delivered; each one settled."""
    simulator.plan_outcome("failed")
    ended = []
    for n, expected in ((1, "failed"), (2, "delivered"), (3, "delivered")):
        answer = await engine.accept(effect_request(who=user(n)))
        assert (await courier.outcome(answer.job.id))[0] == expected
        ended.append(await settled(engine, answer.job.id))
    return ended


@pytest.fixture
def hooked(settings):
    """Settings with WaveSpeed's webhooks on, the listener on a free loopback port."""
    port = _free_port()
    return settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}")


async def test_metrics_parse_and_count_the_jobs_run(make_engine, hooked, courier, simulator, ops_of):
    engine = await make_engine(hooked)
    port = await ops_of(engine.store)
    before = await scrape(port)
    failed, done, also_done = await _run_jobs(engine, courier, simulator)
    await engine.grant(user(7), 5, by="admin")
    simulator.fail_next("balance", 401, times=1)
    with pytest.raises(AuthError):
        await engine.client.balance()

    after = await scrape(port)
    model = done.model_id
    assert value(after, "kling_jobs", model=model, state="done") == 2
    assert value(after, "kling_jobs", model=model, state="failed") == 1
    assert value(after, "kling_queue_depth") == 0
    assert value(after, "kling_credits_spent_total") == done.cost + also_done.cost
    assert value(after, "kling_credits_refunded_total") == failed.cost
    assert value(after, "kling_credits_reserved") == 0
    assert value(after, "kling_credits_granted_total") == 5
    # The spend rule: the failed (refunded) task costs nothing, the others their quotes.
    assert done.quote_usd and also_done.quote_usd
    assert value(after, "kling_spend_usd", model=model) == pytest.approx(float(done.quote_usd + also_done.quote_usd))
    assert value(after, "kling_database_up") == 1
    # This process's counters moved by what it did meanwhile.
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)
    assert moved("kling_wavespeed_request_seconds_count", endpoint="submit") == 3
    assert moved("kling_wavespeed_request_seconds_count", endpoint="balance") == 1
    assert moved("kling_wavespeed_errors_total", kind="auth") == 1
    assert moved("kling_webhook_deliveries_total", outcome="accepted") == len(simulator.webhooks_sent) == 3
    assert moved("kling_wavespeed_errors_total", kind="connection") == 0


async def test_spend_counts_what_wavespeed_charged_once_known(make_engine, courier, simulator, ops_of):
    engine = await make_engine()
    port = await ops_of(engine.store)
    failed, done, also_done = await _run_jobs(engine, courier, simulator)
    charged = Decimal("0.123456")
    # Written at a job's end by the spend part; here set the way it would be.
    await raw_sql(engine.store, "update jobs set charged_usd = ? where id = ?",
                  [charged if on_postgres(engine.store) else str(charged), done.id])
    samples = await scrape(port)
    assert value(samples, "kling_spend_usd", model=done.model_id) == pytest.approx(
        float(charged + also_done.quote_usd), abs=1e-9)


async def test_two_processes_on_one_database_report_the_same_totals(make_engine, courier, simulator, ops_of,
                                                                     tmp_path, database):
    """A ``kling-bot run`` process and this one, on one database: the jobs this one ran
    are in both scrapes, alike."""
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    other_port = _free_port()
    config = process_config(tmp_path, simulator.base_url, database, extra=_telegram_and_http(telegram, other_port))
    process = await _start_run(config)
    try:
        engine = await make_engine()
        port = await ops_of(engine.store)
        await _run_jobs(engine, courier, simulator)
        here, there = database_figures(await scrape(port)), database_figures(await scrape(other_port))
        assert value(here, "kling_credits_spent_total") > 0
        assert here == there
    finally:
        await _stop(process)
        await telegram.close()


async def test_readyz_names_what_is_missing_and_healthz_answers_meanwhile(make_engine, ops_of, database,
                                                                          request):
    engine = await make_engine()
    connected = {"telegram": True, "discord": True}
    port = await ops_of(engine.store, {name: (lambda name=name: connected[name]) for name in connected})
    assert await _get(port, "/readyz") == (200, "ready", "text/plain; charset=utf-8")
    assert (await _get(port, "/healthz"))[:2] == (200, "ok")

    connected["discord"] = False
    status, body, _ = await _get(port, "/readyz")
    assert status == 503 and "discord: not connected" in body and "telegram" not in body
    connected["discord"] = True

    if on_postgres(database):
        server = request.getfixturevalue("pg_server")
        await server.stop()
        try:
            status, body, _ = await _get(port, "/readyz")
            assert status == 503 and "database: not answering" in body
            assert (await _get(port, "/healthz"))[:2] == (200, "ok")  # alive, only not ready
            assert value(await scrape(port), "kling_database_up") == 0
        finally:
            await server.start()
        assert (await _get(port, "/readyz"))[0] == 200
    else:
        # The file deleted: this connection would still answer, into a file no one opens again.
        Path(database).unlink()
        status, body, _ = await _get(port, "/readyz")
        assert status == 503 and "database: not answering" in body
        assert (await _get(port, "/healthz"))[:2] == (200, "ok")


# --- in `kling-bot run` -----------------------------------------------------------------

def _telegram_and_http(telegram: FakeTelegram, port: int) -> str:
    return (f'[telegram]\nbase_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n'
            f'conflict_check_seconds = 0\n\n[http]\nlisten = "127.0.0.1:{port}"\n')


async def _start_run(config: Path, *args: str, tokens: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    tokens = tokens or {"TELEGRAM_BOT_TOKEN": TG_TOKEN, "DISCORD_BOT_TOKEN": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--config", str(config), *args, cwd=config.parent,
        env={**env, "PYTHONPATH": str(ROOT), **tokens},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    banner = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
    if "kling-bot is running" not in banner:
        process.kill()
        _, err = await process.communicate()
        pytest.fail(f"the bot did not start: {banner}{err.decode()}")
    return process


async def _stop(process: asyncio.subprocess.Process) -> tuple[int | None, str]:
    if process.returncode is None:
        process.terminate()
    try:
        _, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
    return process.returncode, err.decode()


async def _until(check: Any, timeout: float = 30) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.1)
    return found


async def test_run_serves_probes_and_metrics_and_tells_when_telegram_is_gone(tmp_path):
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "bot.sqlite"}"\nvideos_dir = "{tmp_path / "videos"}"\n\n'
                      + _telegram_and_http(telegram, port))
    process = await _start_run(config, "--simulate")
    closed = False
    try:
        assert (await _get(port, "/healthz"))[:2] == (200, "ok")

        async def ready() -> bool:
            return (await _get(port, "/readyz"))[0] == 200
        await _until(ready)
        samples = await scrape(port)
        assert value(samples, "kling_database_up") == 1
        assert ("kling_queue_depth", frozenset()) in samples
        assert value(samples, "kling_wavespeed_errors_total", kind="auth") == 0  # every kind shows, at 0

        await telegram.close()  # Telegram unreachable: the bot keeps trying, but receives nothing
        closed = True

        async def not_ready() -> tuple[int, str, str] | None:
            answer = await _get(port, "/readyz")
            return answer if answer[0] == 503 else None
        status, body, _ = await _until(not_ready, 40)
        assert "telegram: not connected" in body and "database" not in body
        assert (await _get(port, "/healthz"))[:2] == (200, "ok")
    finally:
        code, err = await _stop(process)
        if not closed:
            await telegram.close()
    assert code == 0, err
    assert TG_TOKEN not in err


async def test_run_says_in_one_line_when_the_listener_cannot_listen(tmp_path):
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(f'[storage]\npath = "{tmp_path / "bot.sqlite"}"\n\n' + _telegram_and_http(telegram, port))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters", "run", "--simulate", "--config", str(config), cwd=tmp_path,
                env={**os.environ, "PYTHONPATH": str(ROOT), "TELEGRAM_BOT_TOKEN": TG_TOKEN, "DISCORD_BOT_TOKEN": ""},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
        finally:
            await telegram.close()
    lines = err.decode().strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1, err.decode()
    assert f"cannot listen on 127.0.0.1:{port} ([http] listen)" in lines[0] and "in use" in lines[0]
    assert not telegram.calls_to("getUpdates")  # nothing was started


async def test_run_is_ready_once_the_discord_gateway_is_open_and_not_after_it_closes(tmp_path):
    discord = FakeDiscord(DC_TOKEN)
    await discord.start()
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "bot.sqlite"}"\nvideos_dir = "{tmp_path / "videos"}"\n\n'
                      f'[discord]\napi_base_url = "{discord.api_base_url}"\ngateway_url = "{discord.gateway_url}"\n'
                      f'guild_ids = [{GUILD}]\n\n[http]\nlisten = "127.0.0.1:{port}"\n')
    process = await _start_run(config, "--simulate", tokens={"DISCORD_BOT_TOKEN": DC_TOKEN, "TELEGRAM_BOT_TOKEN": ""})
    closed = False
    try:
        async def ready() -> bool:
            return (await _get(port, "/readyz"))[0] == 200
        await _until(ready)
        assert discord.identify is not None  # ready means logged in on the gateway

        await discord.close()  # the gateway gone: discord.py tries to reconnect meanwhile
        closed = True

        async def not_ready() -> tuple[int, str, str] | None:
            answer = await _get(port, "/readyz")
            return answer if answer[0] == 503 else None
        status, body, _ = await _until(not_ready)
        assert "discord: not connected" in body
    finally:
        code, err = await _stop(process)
        if not closed:
            await discord.close()
    assert code == 0, err
    assert DC_TOKEN not in err
