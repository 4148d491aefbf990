"""Several bot processes on one database: each drives only its own jobs, one task each."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.backends import process_config, query
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.both_backends

ROOT = Path(__file__).resolve().parent.parent
# Twelve colours far apart, one per run: each output video must show its own run's photo.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
           (128, 0, 0), (0, 128, 0), (0, 0, 128), (255, 255, 255), (0, 0, 0), (128, 128, 128)]


def _photo(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def _first_frame_colour(path: Path) -> tuple[int, ...]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).to_image().convert("RGB")
    return tuple(frame.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))  # the mean colour


def _nearest(colour: tuple[int, ...]) -> int:
    return min(range(len(COLOURS)), key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], colour, strict=True)))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


async def test_twelve_generate_runs_on_one_database_each_get_their_own_video(tmp_path, simulator, database):
    config = process_config(tmp_path, simulator.base_url, database)
    for n, colour in enumerate(COLOURS):
        (tmp_path / f"photo{n}.jpg").write_bytes(_photo(colour))
    runs = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "generate", f"photo{n}.jpg", "--effect", "hula",
        "--config", str(config), "-o", f"out{n}.mp4", cwd=tmp_path, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for n in range(len(COLOURS))]
    try:
        results = await asyncio.wait_for(asyncio.gather(*(run.communicate() for run in runs)), 120)
    finally:
        for run in runs:  # a hung run must not outlive the test
            if run.returncode is None:
                run.kill()

    assert [run.returncode for run in runs] == [0] * len(COLOURS), [err.decode()[-300:] for _, err in results]
    assert [_nearest(_first_frame_colour(tmp_path / f"out{n}.mp4")) for n in range(len(COLOURS))] == \
        list(range(len(COLOURS)))  # nobody got another run's video
    assert len(simulator.submissions) == len(simulator.tasks) == len(COLOURS)  # one paid task each
    states = await query(database, "select state, settlement, count(*) from jobs group by 1, 2")
    assert states == [("done", "committed", len(COLOURS))]


async def test_two_chat_bot_processes_on_one_database_drive_only_their_own_jobs(tmp_path, simulator, database):
    """Two Telegram bots (two tokens, two processes) share a database and a WaveSpeed key."""
    bots = [FakeTelegram(f"10000{n}:TOKEN-{n}-SECRET") for n in range(2)]
    processes = []
    for bot in bots:
        await bot.start()
    try:
        config = process_config(tmp_path, simulator.base_url, database, "[telegram]\nprogress_interval = 0\n")
        for n, bot in enumerate(bots):
            text = config.read_text() + f'base_url = "{bot.base_url}"\nbase_file_url = "{bot.base_file_url}"\n'
            own = tmp_path / f"bot{n}.toml"
            own.write_text(text)
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapters", "run", "--config", str(own), cwd=tmp_path,
                env=_env(TELEGRAM_BOT_TOKEN=bot.token), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            processes.append(process)
            assert b"kling-bot is running" in await asyncio.wait_for(process.stdout.readline(), 30)
        for n, bot in enumerate(bots):
            for user in range(3):
                bot.user_message(500 + user, 500 + user, caption="/effect hula", photo=_photo(COLOURS[n]))
        for bot in bots:
            await bot.wait_for(lambda bot=bot: len(bot.calls_to("sendVideo")) == 3, timeout=60)
        await asyncio.sleep(0.5)
    finally:
        for process in processes:
            process.terminate()
        outputs = [await process.communicate() for process in processes]
        for bot in bots:
            await bot.close()
    for n, bot in enumerate(bots):
        videos = bot.calls_to("sendVideo")
        assert len(videos) == 3  # each bot delivered its own three, and nothing of the other's
        assert all(_nearest(_video_colour(v["files"]["video"], tmp_path)) == n for v in videos)
    assert len(simulator.submissions) == len(simulator.tasks) == 6
    assert all(bot.token.encode() not in err for bot in bots for _, err in outputs)


def _video_colour(data: bytes, tmp_path: Path) -> tuple[int, ...]:
    path = tmp_path / "sent.mp4"
    path.write_bytes(data)
    return _first_frame_colour(path)
