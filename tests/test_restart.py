"""A job survives its process being killed: delivered after restart, submitted once."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.catalog import Params
from bot.jobs import GenerationRequest, JobState
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import image_bytes, settled

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[wavespeed]
base_url = "{base_url}"
api_key = "{API_KEY}"
poll_interval = 0.1

[storage]
path = "{tmp_path / 'bot.sqlite'}"
videos_dir = "{tmp_path / 'videos'}"
""")
    return path


async def _spawn(config: Path, events: Path, *flags: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.engine_process", str(config), str(events), *flags,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL)


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _until(check, timeout: float = 30.0):
    async with asyncio.timeout(timeout):
        while not (found := check()):
            await asyncio.sleep(0.05)
    return found


def _job_state(db: Path) -> tuple[str, str] | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("select state, settlement from jobs where id = 1").fetchone()
        except sqlite3.OperationalError:
            return None


def _credits(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return sum(conn.execute("select daily_left + bonus from users").fetchone())


@pytest.mark.parametrize("kill_while", ["processing", "delivering"])
async def test_job_killed_mid_way_is_delivered_after_restart_without_second_submit(
        tmp_path, simulator, kill_while):
    simulator.job_seconds = 1.5 if kill_while == "processing" else 0.3
    config, events, db = _config(tmp_path, simulator.base_url), tmp_path / "events.jsonl", tmp_path / "bot.sqlite"

    first = await _spawn(config, events, "--submit", *(["--hang-delivery"] if kill_while == "delivering" else []))
    try:
        if kill_while == "processing":
            await _until(lambda: (_job_state(db) or ("",))[0] == "processing" and simulator.submissions)
        else:
            await _until(lambda: any(e["event"] == "delivering" for e in _events(events)))
    finally:
        first.kill()  # SIGKILL: no cleanup, like a crash or power cut
        await first.wait()
    assert not any(e["event"] == "delivered" for e in _events(events))
    assert _job_state(db)[0] == kill_while

    second = await _spawn(config, events)
    try:
        delivered = await _until(lambda: [e for e in _events(events) if e["event"] == "delivered"])
        await _until(lambda: _job_state(db) == ("done", "committed"))  # settled right after
    finally:
        second.kill()
        await second.wait()

    assert delivered[0]["job"] == 1 and delivered[0]["size"] > 1000
    assert delivered[0]["reply_to"] == {"chat": 99, "message": 1234}  # answered in the right place
    assert len(delivered) == 1
    assert len(simulator.submissions) == 1 and len(simulator.tasks) == 1
    assert _credits(db) == 9


async def test_job_accepted_but_never_submitted_is_submitted_after_restart(
        make_engine, courier, simulator):
    before = await make_engine(start=False)  # accepted, then the process stopped
    answer = await before.accept(effect_request())
    await before.stop()
    assert simulator.submissions == []

    after = await make_engine()
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    assert len(simulator.submissions) == 1
    assert (await settled(after, answer.job.id)).state == JobState.DONE


async def test_jobs_of_platforms_without_an_adapter_wait_for_it(make_engine, courier, simulator):
    engine = await make_engine(start=False)
    request = GenerationRequest(user(), "effect", image_bytes(), Params(effect="hula"))
    request.user = type(request.user)("telegram", "5")
    answer = await engine.accept(request)
    await engine.start()
    await asyncio.sleep(0.5)
    assert simulator.submissions == []  # no Telegram adapter here: the job is kept, not run
    assert engine.store.job(answer.job.id).state == JobState.QUEUED
