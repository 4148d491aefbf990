"""A job survives its process being killed: delivered after restart, submitted once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from bot.catalog import Params
from bot.jobs import GenerationRequest, JobState
from tests.backends import on_postgres, query, storage_config
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import image_bytes, settled

pytestmark = pytest.mark.both_backends
ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, base_url: str, database: str) -> Path:
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
{storage_config(database)}
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
    """Wait until ``check()`` (a function, or a coroutine function) gives something true."""
    async with asyncio.timeout(timeout):
        while not (found := await _value(check())):
            await asyncio.sleep(0.05)
    return found


async def _value(result):
    return await result if asyncio.iscoroutine(result) else result


async def _job_state(db: str, job_id: int = 1) -> tuple[str, str] | None:
    rows = await query(db, "select state, settlement from jobs where id = ?", [job_id])
    return tuple(rows[0]) if rows else None


async def _credits(db: str) -> int:
    return sum(have for (have,) in await query(db, "select daily_left + bonus from users"))


async def _ledger_matches_credits(db: str, daily: int = 10) -> bool:
    """Every user's credits are their daily allowance plus what the ledger moved."""
    users = await query(db, "select key, daily_left + bonus from users")
    moved = dict(await query(db, "select user_key, sum(daily_delta + bonus_delta) from ledger group by user_key"))
    return all(have == daily + moved.get(key, 0) for key, have in users)


async def _integrity_ok(db: str) -> bool:
    if on_postgres(db):  # SQLite only: a file a killed process was writing to is checked
        return True
    return (await query(db, "pragma integrity_check"))[0][0] == "ok"


# stage -> (requests made, how the simulator is scripted, when to kill the process)
CRASH_STAGES = ["queued", "submitting", "processing", "downloading", "delivering"]


@pytest.mark.parametrize("kill_while", CRASH_STAGES)
async def test_a_job_killed_at_any_stage_ends_delivered_once_with_one_task(tmp_path, simulator, kill_while,
                                                                           database):
    config, events, db = _config(tmp_path, simulator.base_url, database), tmp_path / "events.jsonl", database
    requests = 2 if kill_while == "queued" else 1  # with one slot, the second one waits in the queue
    simulator.job_seconds = 1.5 if kill_while in ("queued", "processing") else 0.3
    if kill_while == "submitting":  # WaveSpeed creates the task; its answer never arrives
        simulator.fail_next("submit", kind="accept_hang", delay=60)
    if kill_while == "downloading":
        simulator.fail_next("output", kind="stall", delay=60)
    stage_reached = {
        "queued": lambda: simulator.submissions and _job_state_is(db, ("queued", "reserved"), 2),
        "submitting": lambda: simulator.tasks and _job_state_is(db, ("submitting", "reserved")),
        "processing": lambda: _job_state_is(db, ("processing", "reserved")),
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
        await _until(lambda: _all_done(db, requests), timeout=45)
    finally:
        second.kill()
        await second.wait()

    delivered = [e for e in _events(events) if e["event"] == "delivered"]
    assert sorted(e["job"] for e in delivered) == list(range(1, requests + 1))  # each once
    assert all(e["size"] > 1000 for e in delivered)
    assert {e["reply_to"]["message"] for e in delivered} == {1234 + n for n in range(requests)}
    assert len(simulator.submissions) == len(simulator.tasks) == requests  # one paid task each
    assert await _credits(db) == 9 * requests
    assert await _ledger_matches_credits(db) and await _integrity_ok(db)


async def _job_state_is(db: str, wanted: tuple[str, str], job_id: int = 1) -> bool:
    return await _job_state(db, job_id) == wanted


async def _all_done(db: str, requests: int) -> bool:
    return all([await _job_state(db, n) == ("done", "committed") for n in range(1, requests + 1)])


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


async def test_a_stop_right_after_the_delivery_still_commits_it(make_engine, courier, simulator):
    """The chat has the video; the process is stopped at that moment (``generate`` stops
    its engine as soon as its video is saved). The commit that follows the delivery must
    not be cut off by the stop: else the job stays "delivering" with its credit reserved,
    and the next process posts the video a second time. (On SQLite the commit never
    yields to the event loop; on PostgreSQL it waits on the network.)"""
    engine = await make_engine()
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await engine.stop()
    job = await engine.store.job(answer.job.id)
    assert (job.state, (await engine.store.job_row(answer.job.id))["settlement"]) == (JobState.DONE, "committed")
    assert (await engine.balance(user())).total == 9

    again = await make_engine()  # nothing is left for the next process to post again
    await asyncio.sleep(0.5)
    assert len(courier.delivered) == 1 and courier.deliver_calls == 1
    assert (await again.balance(user())).total == 9
