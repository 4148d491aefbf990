"""Shared pieces of the bench scripts: media, settings, a simulator process, a stall meter.

    python bench/harness.py serve [--job-seconds S] [--video-mb MB | --video-file PATH]

runs the WaveSpeed simulator as its own process (so its CPU and memory are not the
bot's), serving every output as one prepared MP4 (of the given size, or that file), and prints one
JSON line ``{"base_url": ...}`` once it listens. It stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from bot.config import QuotaSettings, Settings, WaveSpeedSettings, load_settings
from bot.devtools.clips import sample_photo, zoom_clip
from bot.devtools.simulator import Simulator

EFFECT_MODEL = "kwaivgi/kling-effects"  # what every bench job runs (a fixed 5 s clip)


# --- media ----------------------------------------------------------------------------

def phone_photo(width: int = 4000, height: int = 3000, noise: float = 10.0) -> bytes:
    """A JPEG like a phone's (12 MP: ~4 MB): gradients and shapes, blurred, plus sensor noise.
    Pillow only, so making it leaves no numpy-sized mark on the peak RSS."""
    rng = random.Random(1)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # sky to ground
        draw.line([(0, y), (width, y)], fill=(90 + 120 * y // height, 160, 230 - 80 * y // height))
    for _ in range(60):
        cx, cy, r = rng.randrange(width), rng.randrange(height), rng.randrange(50, 600)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(3))
    grain = Image.effect_noise((width, height), noise)  # grey noise around 128
    image = Image.merge("RGB", [ImageChops.add(band, grain, offset=-128) for band in image.split()])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def padded_mp4(size: int) -> bytes:
    """A playable MP4 of exactly ``size`` bytes (when larger than the clip): the simulator's
    zoom clip followed by a top-level ``free`` box of random bytes, which players skip."""
    clip = zoom_clip(sample_photo(), seconds=2.0)
    pad = size - len(clip)
    if pad < 8:
        return clip
    return clip + struct.pack(">I", pad) + b"free" + os.urandom(pad - 8)


def serve_prepared_video(video: bytes) -> None:
    """Make every simulator in this process serve ``video`` instead of rendering a clip
    (rendering is the simulator's cost, not a client's, and cannot reach 5 MB)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("bot.devtools") and hasattr(module, "zoom_clip"):
            module.zoom_clip = lambda *args, **kwargs: video  # type: ignore[attr-defined]


# --- settings ---------------------------------------------------------------------------

def has_webhooks() -> bool:
    """Whether this engine has the ``[wavespeed] webhook_url`` setting yet."""
    return "webhook_url" in {f.name for f in fields(WaveSpeedSettings)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_settings(secret: str = "") -> dict[str, object]:
    """[wavespeed] settings for a webhook listener on a free local port (secret "": the engine asks)."""
    port = free_port()
    return {"webhook_url": f"http://127.0.0.1:{port}", "webhook_listen": f"127.0.0.1:{port}",
            "webhook_secret": secret}


def bench_settings(base_url: str, workdir: Path, **wavespeed: object) -> Settings:
    """Defaults, except: the simulator, a database in ``workdir``, and credits enough for anything."""
    settings = load_settings(None, env={}).with_wavespeed(base_url=base_url, api_key="bench", **wavespeed)
    return replace(settings,
                   storage=replace(settings.storage, path=str(workdir / "bot.sqlite"),
                                   videos_dir=str(workdir / "videos")),
                   quota=QuotaSettings(daily_credits=1_000_000, max_jobs_per_user=1_000_000))


# --- a courier that records -------------------------------------------------------------

class Recorder:
    """A courier that notes when each job's video is handed over (progress is ignored).

    ``expect(job_id)`` is a future of ``(task id, time.monotonic() at delivery)``; it
    fails with the job's reason if the job fails.
    """

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[tuple[str, float]]] = {}

    def expect(self, job_id: int) -> asyncio.Future[tuple[str, float]]:
        return self.waiting.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def progress(self, job, update) -> None:
        pass

    async def deliver(self, job, video) -> None:
        future = self.expect(job.id)
        if not future.done():
            future.set_result((job.prediction_id or "", time.monotonic()))

    async def fail(self, job, reason) -> None:
        future = self.expect(job.id)
        if not future.done():
            future.set_exception(RuntimeError(f"job {job.id} failed: {reason}"))

    async def cancelled(self, job, text) -> None:
        await self.fail(job, text)


# --- measuring --------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def system_cpu_seconds() -> float:
    """The kernel's part of ``cpu_seconds()`` (copying bytes through sockets, files, fsync)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


class StallMeter:
    """A task that sleeps ``tick`` seconds at a time and records how late it wakes:
    the longest overshoot is the longest the event loop was blocked."""

    def __init__(self, tick: float = 0.010):
        self.tick = tick
        self.worst = 0.0
        self.worst_at = 0.0  # seconds after start() when the worst stall ended
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            late = loop.time() - before - self.tick
            if late > self.worst:
                self.worst, self.worst_at = late, loop.time() - started

    def start(self) -> None:
        self.worst = self.worst_at = 0.0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.worst


# --- the simulator as a separate process ------------------------------------------------

@contextlib.contextmanager
def simulator_process(job_seconds: float, video_mb: float = 0.0, video_file: Path | None = None) -> Iterator[str]:
    """Run ``harness.py serve`` as a child process; yields its base URL."""
    child = subprocess.Popen(
        [sys.executable, __file__, "serve", "--job-seconds", str(job_seconds), "--video-mb", str(video_mb),
         *(["--video-file", str(video_file)] if video_file else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the simulator process did not start")
        yield json.loads(line)["base_url"]
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the child's cue to stop
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


async def _serve(job_seconds: float, video_mb: float, video_file: str = "") -> None:
    if video_file:
        serve_prepared_video(Path(video_file).read_bytes())
    elif video_mb > 0:
        serve_prepared_video(padded_mp4(int(video_mb * 1024 * 1024)))
    sim = Simulator(job_seconds=job_seconds)
    base = await sim.start()
    print(json.dumps({"base_url": base}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await sim.close()
    # The parent may read how busy the simulator was from stderr.
    print(f"simulator: {len(sim.tasks)} tasks, {len(sim.requests)} requests, "
          f"{cpu_seconds():.1f} s CPU", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--job-seconds", type=float, default=0.0)
    parser.add_argument("--video-mb", type=float, default=0.0, help="serve an MP4 of this size (0: the zoom clip)")
    parser.add_argument("--video-file", default="", help="serve this MP4 file for every task")
    args = parser.parse_args()
    asyncio.run(_serve(args.job_seconds, args.video_mb, args.video_file))
