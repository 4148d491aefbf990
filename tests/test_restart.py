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
request_timeout = 2
max_concurrent = 1
history_settle = 0.5

[storage]
path = "{tmp_path / 'bot.sqlite'}"
videos_dir = "{tmp_path / 'videos'}"
lease_seconds = 1  # a killed process's jobs are taken over after a second
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


def _job_state(db: Path, job_id: int = 1) -> tuple[str, str] | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("select state, settlement from jobs where id = ?", [job_id]).fetchone()
        except sqlite3.OperationalError:
            return None


def _credits(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return sum(have for (have,) in conn.execute("select daily_left + bonus from users"))


def _ledger_matches_credits(db: Path, daily: int = 10) -> bool:
    """Every user's credits are their daily allowance plus what the ledger moved."""
    with sqlite3.connect(db) as conn:
        users = conn.execute("select key, daily_left + bonus from users").fetchall()
        moved = dict(conn.execute("select user_key, sum(daily_delta + bonus_delta) from ledger"
                                  " group by user_key").fetchall())
    return all(have == daily + moved.get(key, 0) for key, have in users)


def _integrity_ok(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0] == "ok"


# stage -> (requests made, how the simulator is scripted, when to kill the process)
CRASH_STAGES = ["queued", "submitting", "processing", "downloading", "delivering"]


@pytest.mark.parametrize("kill_while", CRASH_STAGES)
async def test_a_job_killed_at_any_stage_ends_delivered_once_with_one_task(tmp_path, simulator, kill_while):
    config, events, db = _config(tmp_path, simulator.base_url), tmp_path / "events.jsonl", tmp_path / "bot.sqlite"
    requests = 2 if kill_while == "queued" else 1  # with one slot, the second one waits in the queue
    simulator.job_seconds = 1.5 if kill_while in ("queued", "processing") else 0.3
    if kill_while == "submitting":  # WaveSpeed creates the task; its answer never arrives
        simulator.fail_next("submit", kind="accept_hang", delay=60)
    if kill_while == "downloading":
        simulator.fail_next("output", kind="stall", delay=60)
    stage_reached = {
        "queued": lambda: _job_state(db, 2) == ("queued", "reserved") and simulator.submissions,
        "submitting": lambda: simulator.tasks and _job_state(db) == ("submitting", "reserved"),
        "processing": lambda: _job_state(db) == ("processing", "reserved"),
        "downloading": lambda: ("output", "stall") in simulator.faults_served,
        "delivering": lambda: any(e["event"] == "delivering" for e in _events(events)),
    }[kill_while]

    first = await _spawn(config, events, "--submit", str(requests),
                         *(["--hang-delivery"] if kill_while == "delivering" else []))
    try:
        await _until(stage_reached)
    finally:
        first.kill()  # SIGKILL: no cleanup, like a crash or power cut
        await first.wait()
    assert not any(e["event"] == "delivered" for e in _events(events))

    second = await _spawn(config, events)
    try:
        await _until(lambda: all(_job_state(db, n) == ("done", "committed") for n in range(1, requests + 1)),
                     timeout=45)
    finally:
        second.kill()
        await second.wait()

    delivered = [e for e in _events(events) if e["event"] == "delivered"]
    assert sorted(e["job"] for e in delivered) == list(range(1, requests + 1))  # each once
    assert all(e["size"] > 1000 for e in delivered)
    assert {e["reply_to"]["message"] for e in delivered} == {1234 + n for n in range(requests)}
    assert len(simulator.submissions) == len(simulator.tasks) == requests  # one paid task each
    assert _credits(db) == 9 * requests and _ledger_matches_credits(db) and _integrity_ok(db)


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
    assert (await engine.store.job(answer.job.id)).state == JobState.QUEUED
