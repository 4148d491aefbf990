"""Defects of the front and worker roles on one PostgreSQL (issue #15): jobs a front
accepted were never told their place in line as slots freed (only a job's owner said it,
and a front's jobs have none); a worker that stopped cleanly left its queued jobs for the
others' next poll; an accept whose COMMIT answer was lost told the user an error although
the job was queued (and charged), inviting a second, paid, try.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import replace
from pathlib import Path

from bot import messages
from bot.jobs import JobState, Rejected
from tests.conftest import API_KEY, PLATFORM, effect_request, user
from tests.fake_telegram import FakeTelegram
from tests.helpers import RecordingCourier, image_bytes
from tests.test_roles import Processes, _telegram, until

TG_TOKEN = "424242:DEFECTS-telegram-token-SECRET"


def _config(tmp_path: Path, name: str, simulator_url: str, database: str, door: str, *, slots: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[wavespeed]
base_url = "{simulator_url}"
api_key = "{API_KEY}"
poll_interval = 0.2
history_settle = 0.5
max_concurrent = {slots}

[storage]
url = "{database}"
videos_dir = "{tmp_path / f'{name}-videos'}"
lease_seconds = 30

[quota]
daily_credits = 20
max_jobs_per_user = 20
{_telegram(door)}""")
    return path


# --- 1. places in line of a front's jobs ------------------------------------------------------

async def test_jobs_a_front_queued_are_told_their_place_in_line_once_each_as_the_jobs_ahead_start(
        tmp_path, simulator, pg_url):
    """Three photos at the front while no worker runs; a worker with one slot, then a
    second one, start them one after the other. Each waiting job's status message is
    edited to its new place as a job ahead starts: by a worker (the front drives nothing),
    once per place, never a place older than one shown."""
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    processes = Processes()
    try:
        front_door = await telegram.door("front")
        await processes.start(_config(tmp_path, "front", simulator.base_url, pg_url, front_door, slots=1),
                              "front", TELEGRAM_BOT_TOKEN=TG_TOKEN)
        status: dict[int, int] = {}  # job id -> its status message
        for n in range(3):
            telegram.user_message(500, 500, caption="/effect hula", photo=image_bytes())
            [edit] = await until(lambda n=n: [c for c in telegram.calls_to("editMessageText")
                                              if f"Job {n + 1} queued" in c["params"]["text"]])
            status[n + 1] = int(edit["params"]["message_id"])
        for n in (1, 2):  # two workers of one slot each: each claims, each may announce
            door = await telegram.door(f"worker{n}")
            await processes.start(_config(tmp_path, f"worker{n}", simulator.base_url, pg_url, door, slots=1),
                                  "worker", TELEGRAM_BOT_TOKEN=TG_TOKEN)
        await until(lambda: len(telegram.calls_to("sendVideo")) == 3)
    finally:
        ended = await processes.stop()
        await telegram.close()
    assert [code for code, _ in ended] == [0, 0, 0], ended

    def places(job_id: int) -> list[tuple[str, str]]:
        return [(c["door"], c["params"]["text"].split(": ", 1)[1]) for c in telegram.calls_to("editMessageText")
                if int(c["params"]["message_id"]) == status[job_id] and "Queued" in c["params"]["text"]]

    assert places(1) == []
    # Job 2 goes from 2nd (the front's answer) to next as job 1 starts; job 3 from 3rd to
    # 2nd to next as jobs 1 and 2 start. Each place is told once, by whichever worker
    # changed the line (both at once: job 3 was next at once, told once).
    nxt, second = messages.progress("queued", position=1), messages.progress("queued", position=2)
    assert [text for _, text in places(2)] == [nxt]
    assert [text for _, text in places(3)] in ([second, nxt], [nxt])
    assert {door for job in (2, 3) for door, _ in places(job)} <= {"worker1", "worker2"}


# --- 2. a worker stopped cleanly hands its queued jobs over at once ------------------------------

def _long_leases(settings, pg_url):
    """Leases of 60 s: the safety poll (a third of one) comes 20 s after a worker starts, so
    only a wake-up can explain a job started within a few seconds."""
    return replace(settings, storage=replace(settings.storage, url=pg_url, lease_seconds=60.0))


async def test_a_worker_stopped_cleanly_hands_its_queued_jobs_to_an_idle_worker_at_once(
        make_engine, settings, pg_url, simulator):
    shared = _long_leases(settings, pg_url)
    first_courier, second_courier = RecordingCourier(), RecordingCourier()
    first = await make_engine(shared.with_wavespeed(max_concurrent=1), start=False)
    first.couriers.register(PLATFORM, first_courier)
    await first.start()
    second = await make_engine(shared, start=False)
    second.couriers.register(PLATFORM, second_courier)
    await second.start()
    await asyncio.sleep(0.3)  # the second's first look found nothing: it sleeps until woken
    answers = [await first.accept(effect_request(who=user(n))) for n in range(3)]
    ids = [a.job.id for a in answers]
    async with asyncio.timeout(10):  # the first's one slot holds job 1; jobs 2 and 3 wait, its own
        while (await first.store.job(ids[0])).state == JobState.QUEUED:
            await asyncio.sleep(0.02)
    assert [(await first.store.job(i)).owner for i in ids[1:]] == [first.owner] * 2

    await first.close()  # a clean stop (SIGTERM)
    for job_id in ids[1:]:  # long before the second's poll: the release woke it
        assert (await second_courier.outcome(job_id, timeout=8))[0] == "delivered"
    assert [(await second.store.job(i)).owner for i in ids[1:]] == [second.owner] * 2
    assert not set(ids[1:]) & set(first_courier.delivered)


# --- 3. an accept whose commit's answer is lost ---------------------------------------------

class CutCommits:
    """A TCP proxy in front of PostgreSQL that can lose the answer to the write that queues
    the next job: the server commits it (its "ready, idle" answer, after the job's insert,
    says so: a COMMIT's or an autocommitted statement's), and the client's connection is cut
    before it hears so. ``down`` refuses every new connection (the database unreachable)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.cut_next_accept = False
        self.down_after_cut = False
        self.down = False
        self.commits_cut = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in list(self._links):
            writer.close()
        if self._server is not None:
            self._server.close()

    async def _link(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.down:
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(self.host, self.port)
        self._links.update((client_writer, server_writer))
        accepting = asyncio.Event()

        async def upstream() -> None:
            while data := await client_reader.read(65536):
                if self.cut_next_accept and b"INSERT INTO JOBS" in data.upper():
                    self.cut_next_accept = False
                    accepting.set()
                server_writer.write(data)
                await server_writer.drain()

        async def downstream() -> None:
            while data := await server_reader.read(65536):
                if accepting.is_set() and b"Z\x00\x00\x00\x05I" in data:  # committed: the answer is lost
                    self.commits_cut += 1
                    if self.down_after_cut:  # and every other connection with it
                        self.down = True
                        for writer in list(self._links):
                            writer.close()
                    return
                client_writer.write(data)
                await client_writer.drain()

        with contextlib.suppress(Exception):
            _, pending = await asyncio.wait([asyncio.create_task(upstream()), asyncio.create_task(downstream())],
                                            return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        for writer in (client_writer, server_writer):
            writer.close()
            self._links.discard(writer)


async def _proxied(pg_url: str) -> tuple[CutCommits, str]:
    match = re.match(r"postgresql://([^/]*@)?([^:/]+):(\d+)/(.*)", pg_url)
    assert match, pg_url
    proxy = CutCommits(match.group(2), int(match.group(3)))
    port = await proxy.start()
    return proxy, f"postgresql://{match.group(1) or ''}127.0.0.1:{port}/{match.group(4)}"


async def _front_behind(proxy_url: str, make_engine, settings):
    on_proxy = replace(settings, storage=replace(settings.storage, url=proxy_url))
    front = await make_engine(on_proxy, start=False)
    await front.start(drive=False)
    return front


async def test_an_accept_whose_commit_answer_is_lost_is_told_queued_and_charged_once(
        make_engine, settings, pg_url, simulator):
    """The connection is cut after the server committed the accept: the user used to be
    told an error for a job that was queued and paid for. Now the front looks for the job
    once the database answers again and says it is queued, as any accept does."""
    proxy, proxy_url = await _proxied(pg_url)
    front = await _front_behind(proxy_url, make_engine, settings)
    try:
        proxy.cut_next_accept = True
        answer = await front.accept(effect_request())
        assert proxy.commits_cut == 1
        assert not isinstance(answer, Rejected), answer
        assert answer.credits_left == 9 and answer.position == 1
        [(job, position)] = await front.jobs_of(user())
        assert job.id == answer.job.id and job.state == JobState.QUEUED and position == 1
        assert (await front.balance(user())).total == 9  # charged once
    finally:
        proxy.down = False
        await front.close()  # before its database's door closes
        await proxy.close()


async def test_an_accept_whose_outcome_cannot_be_learnt_says_it_may_have_gone_through(
        make_engine, settings, pg_url, simulator):
    """The database stays away past the front's looks for the job: the user is told the
    request may have gone through and to check /jobs before sending it again, never an
    error that invites a second paid try; once it is back, /jobs lists the one job."""
    proxy, proxy_url = await _proxied(pg_url)
    front = await _front_behind(proxy_url, make_engine, settings)
    try:
        proxy.cut_next_accept = proxy.down_after_cut = True
        answer = await front.accept(effect_request())
        assert proxy.commits_cut == 1
        assert isinstance(answer, Rejected) and answer.reason == messages.ACCEPT_OUTCOME_UNKNOWN
        assert "/jobs" in answer.reason
        proxy.down = False
        [(job, _)] = await front.jobs_of(user())
        assert job.state == JobState.QUEUED and (await front.balance(user())).total == 9
    finally:
        proxy.down = False
        await front.close()  # before its database's door closes
        await proxy.close()
