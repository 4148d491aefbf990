"""Defects a fresh-eyes review of the chat experience (#10) found, one test each.

Each failed before its fix: prompts kept past keep_days in labels, the start-up sweep
deleting photos of a database opened by another path, one job's progress starving
another's in a group, a re-encode outliving its delivery's timeout, a double tap
charged twice, /history in a group showing private prompts, a DM menu that could only
refuse, and free re-posts holding up a paid delivery.
"""

# Fixtures are imported from the platform test modules, so their parameters shadow them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import discord
import pytest

import adapters.chat as chat_module
from adapters.chat import ChatCourier
from adapters.discord import DiscordAdapter
from bot.catalog import Params
from bot.jobs import GenerationRequest, Job, JobState, Progress, Video
from bot.store.sqlite import SqliteStore as Store
from tests.conftest import user
from tests.fake_discord import CHANNEL
from tests.helpers import image_bytes, settled
from tests.test_discord import ALICE as DISCORD_ALICE
from tests.test_discord import callbacks, dc_settings, fake_discord, until  # noqa: F401  (fixtures)
from tests.test_discord_experience import DM_CHANNEL, replies_in
from tests.test_telegram_experience import (  # noqa: F401  (fixtures)
    ALICE,
    BOB,
    GROUP,
    button,
    deliver_one,
    quiet,
    run_bot,
    telegram,
    tg_settings,
    who,
)

# --- privacy: keep_days forgets the photo and "typed prompts", but not the label ---------------

async def test_expire_forgets_the_prompt_everywhere(engine, courier):
    """MediaFiles.expire says it forgets typed prompts; the job's label keeps the prompt
    (and /history prints labels) forever."""
    secret = "my ex-girlfriend Jane Doe crying at 12 Elm Street"
    answer = await engine.accept(GenerationRequest(user(), "animate", image_bytes(), Params(prompt=secret),
                                                   reply_to={"chat": 1}))
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    engine.results.clock = lambda: time.time() + 8 * 86400  # past keep_days
    assert await engine.results.expire() == 1
    job = await engine.store.job(answer.job.id)
    assert "prompt" not in job.inputs  # this part works
    assert "Jane Doe" not in job.label, job.label


# --- sweep: a kept photo deleted because its path is spelled differently -------------------------

async def test_sweep_keeps_files_of_a_database_opened_by_another_spelling(settings, make_engine, tmp_path,
                                                                          monkeypatch):
    """Two processes on one database (supported), one configured with a relative path, the
    other with the absolute one: the second's start-up sweep deletes the photos of the
    first's queued jobs (and every kept photo). Before #10 sweep matched job ids."""
    monkeypatch.chdir(tmp_path)
    relative = replace(settings, storage=replace(settings.storage, path="bot.sqlite"))
    engine = await make_engine(relative, start=False)  # accepts, does not run: the job stays queued
    answer = await engine.accept(GenerationRequest(user(), "effect", image_bytes(), Params(effect="hula"),
                                                   reply_to={}))
    [(stored,)] = engine.store.db.execute("select path from job_media").fetchall()
    assert not os.path.isabs(stored) and Path(stored).exists()

    other = Store(str(tmp_path / "bot.sqlite"))  # the other process's start: Engine.start sweeps
    async with other.transaction():
        await other.files.sweep()
    await other.close()
    assert (await engine.store.job(answer.job.id)).state == JobState.QUEUED
    assert Path(stored).exists(), "sweep deleted the photo of a queued job"


# --- progress: the group gap starves every job but one ------------------------------------------

class _GroupCourier(ChatCourier):
    def __init__(self, clock):
        super().__init__(SimpleNamespace(progress_interval=3.0, nsfw="spoiler"), clock=clock)
        self.edits: list[tuple[int, str]] = []

    def status_key(self, job):
        return job.id

    def chat_key(self, job):
        return "group"

    def chat_gap(self, job):
        return 6.0  # like Telegram's GROUP_PROGRESS_GAP

    async def edit_message(self, job, text):
        self.edits.append((job.id, text))
        return True


def _job(job_id: int) -> Job:
    return Job(id=job_id, user_key="u", platform="telegram", reply_to={}, model_id="m", kind="effect",
               inputs={}, label=f"job {job_id}", cost=1, state=JobState.PROCESSING)


async def test_two_jobs_in_one_group_both_get_progress_edits():
    """Follower ticks every PROGRESS_TICK = 2 s. Job A ticks at even seconds, job B at odd
    ones. B's first "generating" is a stage change (shown at t=1); from then on B always
    finds the group free exactly 6 s after its own last edit, one second before A does,
    so A's message stays at its first percentage for the whole run."""
    now = [0.0]
    courier = _GroupCourier(lambda: now[0])
    a, b = _job(1), _job(2)
    for t in range(0, 61):
        now[0] = float(t)
        job = a if t % 2 == 0 else b
        await courier.progress(job, Progress("generating", elapsed=t, expected=90))
    per_job = {j: [text for job_id, text in courier.edits if job_id == j] for j in (1, 2)}

    assert all(len(texts) > 2 for texts in per_job.values()), {j: len(t) for j, t in per_job.items()}


# --- progress: a slow progress edit holds up the result check ----------------------------------

# --- re-encoding: a cancelled delivery leaks the fitted file and overlaps encodes ----------------

async def test_a_delivery_timeout_during_fit_leaves_no_file_behind(tmp_path, monkeypatch):
    """ChatCourier._fit runs fit_video in a thread; the pipeline's DELIVERY_TIMEOUT (or a
    stop) cancels the await but not the thread, which later writes ``*-fit.mp4`` that
    nobody deletes (nothing sweeps videos_dir), and releases the one-encode semaphore while
    the encode still runs, so the retry encodes the same ``.part`` file concurrently."""
    release = threading.Event()
    running = []

    def slow_fit(source, limit, dest, **kw):
        running.append(dest)
        release.wait(5)
        Path(dest).write_bytes(b"x" * 10)
        return True

    monkeypatch.setattr(chat_module, "fit_video", slow_fit)

    class Courier(ChatCourier):
        def upload_limit(self, job):
            return 100

        async def post(self, job, text, video):
            pass

    courier = Courier(SimpleNamespace(progress_interval=0, nsfw="spoiler"))
    source = tmp_path / "job-1-abcd.mp4"
    source.write_bytes(b"y" * 1000)
    video = Video(path=source, size=1000, nsfw=False, url=None)
    lane = courier._lanes[True]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await courier._fit(video, 98, lane)
    assert lane.locked()  # held while the encode still runs: a retry cannot write beside it
    release.set()
    await asyncio.sleep(0.3)
    assert not lane.locked()
    leaked = list(tmp_path.glob("*-fit*"))
    assert leaked == [], leaked


# --- Telegram: a double press, /history in a group ------------------------------------------------

async def test_a_double_tap_on_again_is_one_job(run_bot, tg_settings, telegram, simulator):
    """Two callback queries for the same button of the same message from the same user a
    moment apart (a double tap, or a tap repeated while the spinner turns) start two paid
    jobs: nothing dedupes presses."""
    engine, _ = await run_bot(quiet(tg_settings))
    video = await deliver_one(telegram, GROUP, ALICE)
    telegram.press_button(BOB, video, button(video, "again:"))
    telegram.press_button(BOB, video, button(video, "again:"))
    await telegram.wait_for(lambda: len(telegram.calls_to("answerCallbackQuery")) == 2)
    await asyncio.sleep(0.3)
    jobs = engine.store.db.execute("select count(*) from jobs where user_key = ?", [who(BOB).key]).fetchone()[0]
    assert jobs == 1 and (await engine.balance(who(BOB))).total == 9, (jobs, (await engine.balance(who(BOB))).total)


async def test_history_in_a_group_does_not_reveal_private_prompts(run_bot, tg_settings, telegram, simulator):
    """/history answers in the chat it was typed in: in a group it lists the user's jobs from
    private chats too, with their labels, i.e. the first 60 characters of every prompt."""
    await run_bot(quiet(tg_settings))
    await deliver_one(telegram, ALICE, ALICE, "/animate my secret birthday surprise for Bob")
    telegram.user_message(GROUP, ALICE, text="/history")
    [listing] = await telegram.wait_for(
        lambda: [c["params"] for c in telegram.calls_to("sendMessage") if c["params"]["chat_id"] == GROUP])
    assert "secret birthday" not in listing["text"], listing["text"]


# --- Discord: a DM gets a priced menu that can only refuse when allowed_channels is set ---------

async def test_no_dm_menu_when_allowed_channels_leaves_dms_out(adapter_runner, dc_settings, fake_discord, simulator):
    """With [discord] allowed_channels set, DMs are not among them: a photo sent in a DM gets
    no menu (each pick would be refused), a listed channel is answered as before."""
    original = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE
    settings = replace(dc_settings, discord=replace(dc_settings.discord, gateway_url=fake_discord.gateway_url,
                                                    allowed_channels=[int(CHANNEL)]))
    try:
        _, adapter = await adapter_runner(settings, DiscordAdapter)
        await until(lambda: adapter.client.is_ready())
        photo = fake_discord.user_message(DISCORD_ALICE, [fake_discord.attachment(image_bytes())],
                                          channel_id=str(DM_CHANNEL))
        await fake_discord.dispatch("MESSAGE_CREATE", photo)
        await asyncio.sleep(1.0)
        assert replies_in(fake_discord, DM_CHANNEL) == []
    finally:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, discord.http.Route.BASE = original


# --- re-encoding: free /history re-posts hold up paid deliveries until they time out -----------

async def test_free_reposts_cannot_push_a_paid_delivery_past_its_timeout(tmp_path, monkeypatch):
    """One re-encode at a time (ChatCourier._fitting), shared by paid deliveries and free,
    unthrottled /history re-posts; the pipeline's DELIVERY_TIMEOUT (600 s) counts the wait
    for that slot. Scaled down: encodes of 1 s, a timeout of 2.5 s, three re-posts queued
    first -> the paid delivery times out (after 3 such attempts: JobFailed, refund, the
    made video deleted)."""
    def slow_fit(source, limit, dest, **kw):
        time.sleep(1.0)
        Path(dest).write_bytes(b"x" * 10)
        return True

    monkeypatch.setattr(chat_module, "fit_video", slow_fit)

    class Courier(ChatCourier):
        def status_key(self, job):
            return None

        def upload_limit(self, job):
            return 100

        async def post(self, job, text, video):
            pass

    courier = Courier(SimpleNamespace(progress_interval=0, nsfw="spoiler"))
    job = replace(_job(1), model_id="kwaivgi/kling-effects")

    def big(name):
        path = tmp_path / name
        path.write_bytes(b"y" * 1000)
        return Video(path=path, size=1000, nsfw=False, url=None)

    reposts = [asyncio.create_task(courier.show(job, big(f"again-1-{i}.mp4"))) for i in range(3)]
    await asyncio.sleep(0.05)
    try:
        async with asyncio.timeout(2.5):  # DELIVERY_TIMEOUT, scaled
            await courier.deliver(job, big("job-2-abcd.mp4"))
    finally:
        await asyncio.gather(*reposts, return_exceptions=True)
