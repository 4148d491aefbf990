"""Test media makers and a recording courier: the chat a test reads from."""

from __future__ import annotations

import asyncio
import inspect
import io
import math
from dataclasses import dataclass, field

import av
from PIL import Image

from bot.jobs import Job, Progress, Video


def image_bytes(width: int = 640, height: int = 480, fmt: str = "JPEG", *,
                mode: str = "RGB", noise: bool = False, exif_orientation: int | None = None) -> bytes:
    if noise:
        image = Image.frombytes(mode, (width, height), _noise(width * height * len(mode)))
    else:
        image = Image.new(mode, (width, height), (200, 120, 40, 255)[:len(mode)])
        for x in range(0, width, 40):  # some structure so encoders have work to do
            image.paste((20, 80, 200, 255)[:len(mode)], (x, 0, x + 10, height))
    out = io.BytesIO()
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def _noise(size: int) -> bytes:
    import random
    rng = random.Random(7)
    return rng.randbytes(size)


def audio_bytes(seconds: float = 2.0, fmt: str = "wav", codec: str = "pcm_s16le",
                rate: int = 16000, with_video: bool = False, cover_art: bool = False) -> bytes:
    """A sine tone in the given container, made with PyAV; ``cover_art`` adds an attached
    picture (album art: a one-frame MJPEG stream marked attached_pic), as MP3s often have."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if with_video:
            video = container.add_stream("libx264", rate=10)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        if cover_art:
            picture = container.add_stream("mjpeg", rate=1)
            picture.width, picture.height, picture.pix_fmt = 64, 64, "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
        frame_size = stream.codec_context.frame_size or 1024
        total = int(seconds * rate)
        sample_fmt = stream.codec_context.format.name
        pts = 0
        while pts < total:
            n = min(frame_size, total - pts)
            if stream.codec_context.frame_size and n < frame_size:
                n = frame_size
            frame = _tone_frame(pts, n, rate, sample_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
            pts += n
        if with_video:
            img = Image.new("RGB", (64, 64), (10, 200, 10))
            for i in range(int(seconds * 10)):
                vf = av.VideoFrame.from_image(img)
                vf.pts = i
                for packet in video.encode(vf):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if cover_art:
            art = av.VideoFrame.from_image(Image.new("RGB", (64, 64), (200, 40, 40)))
            art.pts = 0
            for packet in [*picture.encode(art), *picture.encode()]:
                container.mux(packet)
    return out.getvalue()


def _tone_frame(start: int, n: int, rate: int, sample_fmt: str) -> av.AudioFrame:
    import numpy as np

    t = (np.arange(start, start + n) / rate).astype("float64")
    wave = 0.3 * np.sin(2 * math.pi * 440 * t)
    if sample_fmt.startswith("s16"):
        data = (wave * 32767).astype("int16").reshape(1, -1)
    elif sample_fmt.startswith("s32"):
        data = (wave * 2**31 * 0.9).astype("int32").reshape(1, -1)
    else:
        data = wave.astype("float32").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout="mono")
    frame.sample_rate = rate
    frame.pts = start
    return frame


async def settled(engine, job_id: int, timeout: float = 10.0):
    """The job once it has ended: settlement follows the courier's last call."""
    async with asyncio.timeout(timeout):
        while not (await engine.store.job(job_id)).state.finished:
            await asyncio.sleep(0.01)
    return await engine.store.job(job_id)


def mp4_info(data: bytes) -> tuple[str, int, int, int]:
    """(codec, width, height, frames) of an MP4, or an error if PyAV cannot open it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, stream.width, stream.height, frames


@dataclass
class RecordingCourier:
    """What a chat would show, recorded per job; tests await a job's last word."""

    progress_log: list[tuple[int, Progress]] = field(default_factory=list)
    delivered: dict[int, bytes] = field(default_factory=dict)
    delivered_videos: dict[int, Video] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    cancellations: dict[int, str] = field(default_factory=dict)
    fail_deliveries: int = 0  # make the next N deliver calls raise, like a flaky chat API
    deliver_calls: int = 0
    _ends: dict[int, asyncio.Future] = field(default_factory=dict)

    def _future(self, job_id: int) -> asyncio.Future:
        return self._ends.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def progress(self, job: Job, update: Progress) -> None:
        self.progress_log.append((job.id, update))

    async def deliver(self, job: Job, video: Video) -> None:
        self.deliver_calls += 1
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("chat API unavailable")
        self.delivered[job.id] = video.path.read_bytes()
        self.delivered_videos[job.id] = video
        self._future(job.id).set_result(("delivered", self.delivered[job.id]))

    async def fail(self, job: Job, reason: str) -> None:
        self.failures[job.id] = reason
        future = self._future(job.id)
        if not future.done():
            future.set_result(("failed", reason))

    async def cancelled(self, job: Job, text: str) -> None:
        self.cancellations[job.id] = text

    async def refused(self, job: Job, video: Video, days: int) -> None:
        self.failures[job.id] = f"refused, kept {days} days"

    async def outcome(self, job_id: int, timeout: float = 20.0) -> tuple[str, object]:
        return await asyncio.wait_for(asyncio.shield(self._future(job_id)), timeout)

    def stages(self, job_id: int) -> list[str]:
        return [p.stage for j, p in self.progress_log if j == job_id]


async def checked(value):
    """A waiter's check may be a plain value or an awaitable (an async store read)."""
    return await value if inspect.isawaitable(value) else value


async def job_in_state(engine, job_id: int, state: str):
    """The job once it is in ``state`` (else None): for a waiter's check."""
    job = await engine.store.job(job_id)
    return job if job is not None and job.state.value == state else None


async def finished_job(engine, job_id: int):
    """The job once it has ended (else None): for a waiter's check."""
    job = await engine.store.job(job_id)
    return job if job is not None and job.state.finished else None
