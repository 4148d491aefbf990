"""Attacks on the money and process guarantees after #14: audio that lies in other
containers, and the command line killed or pointed at odd places. Each case failed
before its fix."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from bot import messages
from bot.catalog import Params
from bot.jobs import GenerationRequest, Rejected
from bot.media import prepare_audio
from tests.backends import query, storage_config
from tests.conftest import PLATFORM, user
from tests.helpers import audio_bytes, image_bytes, mp4_info
from tests.test_cli_edges import _config, _ended, _generate_until, akling

# The engine and command-line tests about jobs and money run on both backends.
pytestmark = pytest.mark.both_backends
ROOT = Path(__file__).resolve().parent.parent


def _config_on(tmp_path: Path, base_url: str, database: str) -> Path:
    """tests/test_cli_edges.py's config, its database this test's (either backend)."""
    config = _config(tmp_path, base_url)
    config.write_text(config.read_text().replace(f'path = "{tmp_path / "real.sqlite"}"', storage_config(database)))
    return config


async def _credits_left(database: str) -> int:
    [(daily, bonus)] = await query(database, "select daily_left, bonus from users")
    return daily + bonus

# --- item 5: an M4A whose every duration field lies -----------------------------------------


def _boxes(data: bytearray, start: int, end: int):
    while start < end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start, start + size
        start += size


def _scale(data: bytearray, offset: int, wide: bool, factor: int) -> None:
    fmt = ">Q" if wide else ">I"
    width = 8 if wide else 4
    value = struct.unpack(fmt, data[offset:offset + width])[0]
    data[offset:offset + width] = struct.pack(fmt, max(1, value // factor))


def lying_m4a(real: float, factor: int) -> bytes:
    """An AAC M4A holding ``real`` seconds whose movie, track and media durations and whose
    time-to-sample table (every packet's duration) all say ``factor`` times less: FFmpeg's
    demuxer believes it, a decoder still puts out every frame's 1024 samples."""
    data = bytearray(audio_bytes(real, fmt="mp4", codec="aac", rate=44100))

    def walk(start: int, end: int) -> None:
        for kind, box, box_end in _boxes(data, start, end):
            wide = data[box + 8] == 1  # version 1: 64-bit times
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                walk(box + 8, box_end)
            elif kind in (b"mvhd", b"mdhd"):  # version/flags, created, modified, timescale, duration
                _scale(data, box + 12 + (16 if wide else 8) + 4, wide, factor)
            elif kind == b"tkhd":  # ..., track id, reserved, duration
                _scale(data, box + 12 + (16 if wide else 8) + 8, wide, factor)
            elif kind == b"stts":
                for entry in range(struct.unpack(">I", data[box + 12:box + 16])[0]):
                    _scale(data, box + 16 + 8 * entry + 4, False, factor)

    walk(0, len(data))
    with av.open(io.BytesIO(bytes(data))) as container:  # the lie works on FFmpeg's demuxer
        assert container.duration / av.time_base < real / factor + 0.5
        stream = container.streams.audio[0]
        spans = sum(p.duration or 0 for p in container.demux(stream)) * float(stream.time_base)
        assert spans < real / factor + 0.5
    return bytes(data)


def test_an_m4a_whose_durations_say_2_s_is_measured_by_what_it_decodes_to():
    body = lying_m4a(20.0, 10)
    started = time.process_time()  # this process's CPU: the suite's other workers do not move it
    media = prepare_audio(body, max_seconds=30, max_input_bytes=10 * 1024 * 1024)
    assert 19 < media.seconds < 21.5
    assert time.process_time() - started < 3.0  # generous: the bound tells "stops early" from "decodes all"


async def test_an_m4a_that_says_2_s_but_holds_62_s_is_refused_before_any_credit(engine, simulator):
    answer = await engine.accept(GenerationRequest(user(), "avatar", image_bytes(),
                                                   audio=lying_m4a(62.0, 31), reply_to={"chat": 42}))
    assert isinstance(answer, Rejected)
    assert answer.text == messages.audio_over_limit(30.0)
    assert simulator.submissions == [] and simulator.uploads == {}
    assert (await engine.balance(user())).total == 10


def test_a_30_mb_clip_is_measured_in_well_under_a_second():
    clip = audio_bytes(600.0, fmt="wav", rate=24000)  # 28.8 MB of PCM
    lying = bytearray(clip)
    data = lying.find(b"data")
    lying[data + 4:data + 8] = lying[4:8] = b"\xff\xff\xff\xff"  # "size unknown", as a stream writes
    for body in (clip, bytes(lying)):
        started = time.process_time()
        try:
            prepare_audio(body, max_seconds=30, max_input_bytes=40 * 1024 * 1024)
        except Exception as err:
            assert "30 s" in str(err)
        assert time.process_time() - started < 3.0  # generous, as above


# --- item 15: a video being written when the process is killed -----------------------------

def test_a_copy_killed_halfway_leaves_no_truncated_video_under_the_asked_name(tmp_path):
    """``generate`` killed (SIGKILL, a power cut) while it writes the video: the name asked
    for must hold the whole video or nothing, since the next run saves it under a fresh name
    and a truncated ``out.mp4`` would pass for the video."""
    source = tmp_path / "source"
    os.mkfifo(source)  # the video arrives as slowly as the test likes
    wanted = tmp_path / "out" / "clip.mp4"
    wanted.parent.mkdir()
    copier = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from adapters.videofiles import save_fresh;"
                               " save_fresh(Path(sys.argv[1]), Path(sys.argv[2]))", str(source), str(wanted)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        with source.open("wb") as feed:
            feed.write(b"\0" * (1 << 20))
            feed.flush()
            deadline = time.monotonic() + 20
            while not any(p.stat().st_size for p in wanted.parent.iterdir()):
                assert time.monotonic() < deadline, "the copy never started"
                time.sleep(0.02)
            copier.kill()
            copier.wait(timeout=10)
    finally:
        if copier.poll() is None:
            copier.kill()
    assert not wanted.exists()
    assert not [p for p in wanted.parent.iterdir() if not p.name.startswith(".")]


# --- item 6: two stopped generates must not lock the next one out --------------------------

async def test_after_two_generates_stopped_at_wavespeed_the_next_one_still_makes_its_video(
        tmp_path, simulator, database):
    """Two kills after submit leave two jobs at WaveSpeed, the per-user limit (2). The next
    ``generate`` finishes both; its own request must then run too, not be refused as "You
    already have 2 jobs" by the very jobs it is finishing."""
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    _config_on(tmp_path, simulator.base_url, database)
    simulator.job_seconds = 12.0  # both still running when stopped, even on a loaded machine
    stopped = [await _generate_until(tmp_path, lambda n=n: len(simulator.submissions) > n, "-o", f"{name}.mp4")
               for n, name in enumerate(("a", "b"))]
    for process in stopped:
        process.send_signal(signal.SIGTERM)
        await _ended(process)
    assert await query(database, "select state from jobs") == [("processing",)] * 2
    simulator.job_seconds = 0.3
    code, stdout, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                        "-o", "c.mp4", cwd=tmp_path)
    assert code == 0, stderr
    assert stdout.strip() == "c.mp4"
    assert "already have" not in stderr
    for name in ("a", "b", "c"):
        assert mp4_info((tmp_path / f"{name}.mp4").read_bytes())[0] == "h264"
    assert len(simulator.submissions) == 3
    assert await query(database, "select state, settlement from jobs") == [("done", "committed")] * 3
    assert await _credits_left(database) == 7


async def test_a_generate_of_another_user_leaves_a_stopped_job_to_its_own_user(tmp_path, simulator, database):
    """Two command-line users share a database: bob's generate never finishes (nor saves)
    alice's stopped job; alice's next generate does, where she asked for it."""
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    _config_on(tmp_path, simulator.base_url, database)
    simulator.job_seconds = 4.0
    alice = {"USER": "alice", "LOGNAME": "alice"}
    process = await _generate_until(tmp_path, lambda: simulator.submissions, "-o", "alice.mp4", env=alice)
    for _ in range(200):  # the task is WaveSpeed's, and the job says so (not a submit still unanswered)
        if await query(database, "select state from jobs") == [("processing",)]:
            break
        await asyncio.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    await _ended(process)
    simulator.job_seconds = 0.3
    code, _, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                   "-o", "bob.mp4", cwd=tmp_path, env={"USER": "bob", "LOGNAME": "bob"})
    assert code == 0, stderr
    assert "alice.mp4" not in stderr and not (tmp_path / "alice.mp4").exists()
    assert await query(database, "select user_key, state from jobs order by id") == [
        ("cli:alice", "processing"), ("cli:bob", "done")]
    code, _, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                   "-o", "again.mp4", cwd=tmp_path, env=alice)
    assert code == 0, stderr
    assert mp4_info((tmp_path / "alice.mp4").read_bytes())[0] == "h264"
    assert len(simulator.submissions) == 3  # alice's first job followed, never submitted twice


async def test_a_stopped_generate_settles_its_job_before_any_other_process_can_take_it(make_engine, simulator):
    """``stop(withdraw=…)`` settles the job while it is still this process's: a rival that
    takes over jobs at the moment they are handed over finds nothing to take (it used to
    get the job and submit it, charged, although its user had stopped it)."""
    engine = await make_engine(start=False)
    answer = await engine.accept(GenerationRequest(user(), "effect", image_bytes(), Params(effect="hula")))
    job_id = answer.job.id
    release = engine.store.claims.release
    taken: list[int] = []

    async def release_then_rival_looks(owner: str) -> None:  # a rival's renewal lands right after
        await release(owner)
        taken.extend(job.id for job in await engine.store.claims.take_over(
            "rival:1:abcd", [PLATFORM], time.time() + 60, time.time()))

    engine.store.claims.release = release_then_rival_looks
    withdrawn = await engine.stop(withdraw=[job_id])
    assert withdrawn[job_id].state.value == "cancelled" and taken == []
    assert (await engine.balance(user())).total == 10 and simulator.submissions == []


async def test_a_stopped_simulated_generate_refunds_its_job_at_once(tmp_path):
    """SQLite only: a simulated run keeps its own SQLite file beside the configured one.
    The simulator of a --simulate run ends with it, and every task in it: a run stopped
    while its job generates cancels and refunds it instead of leaving it to a next run
    that could only find no such task."""
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    _config(tmp_path, "http://127.0.0.1:9")  # never used: --simulate starts its own
    simulated = tmp_path / "real-simulated.sqlite"

    def generating() -> bool:
        if not simulated.exists():
            return False
        with sqlite3.connect(simulated) as conn:
            try:
                return conn.execute("select count(*) from jobs where state = 'processing'").fetchone()[0] == 1
            except sqlite3.OperationalError:  # the run is still creating its tables
                return False

    process = await _generate_until(tmp_path, generating, "--simulate")
    process.send_signal(signal.SIGTERM)
    _, stderr = await _ended(process)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr
    assert messages.job_cancelled(1, 1) in stderr
    with sqlite3.connect(simulated) as conn:
        assert conn.execute("select state, settlement from jobs").fetchall() == [("cancelled", "refunded")]
        assert sum(conn.execute("select daily_left + bonus from users").fetchone()) == 10
