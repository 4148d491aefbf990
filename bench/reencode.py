"""Re-encoding a 10 s 1080p clip to fit a 10 MiB Discord channel, as the bot does it.

    python bench/reencode.py [--runs 3] [--seconds 10] [--width 1920 --height 1080] [--fps 24]

What it measures, in this one process:

1. It makes the source clip (not timed): ``--seconds`` of ``--width`` x ``--height`` at
   ``--fps``, a textured scene (shapes, lines, a fixed fine texture) that the camera pans
   across, six discs moving over it, fresh sensor-like grain in every frame (±3 levels),
   and a 48 kHz stereo AAC track (a tone plus noise, 128 kbit/s), encoded with x264 at
   CRF 20: about 17 MiB for the defaults, so it must be re-encoded to be posted. It
   refuses to go on when the clip is not larger than the limit.
2. ``--runs`` times, it calls the bot's own ``bot.videofit.fit_video`` on it with the
   limit the Discord courier passes for a server without boosts: 10 MiB
   (``adapters.discord.courier.DEFAULT_UPLOAD_LIMIT``) x ``adapters.chat.FIT_MARGIN``.
   Each run's figure is the wall-clock time of that call (the bot runs it in a worker
   thread; here the main thread calls it, at the same cost) and the CPU seconds of the
   whole process over it (user + system, every thread: the encoder's threads too).
   It prints each run, then the median and the best, next to the goal (<= 5 s).
3. It checks what a user would get from the last run's file, by decoding all of it
   with PyAV: its size against the limit, video codec and pixel format (H.264 yuv420p),
   dimensions, frames and duration against the source's, audio codec and duration,
   the MP4's top-level boxes (``moov`` before ``mdat``: faststart, so it plays while it
   downloads), and a quality figure: the luma PSNR against the source over every 8th
   frame (the output scaled back to the source's size, so a smaller picture costs
   what it costs).

The cores printed are ``os.cpu_count()`` and the ones this process may run on
(``os.sched_getaffinity``), with the load average before the first run: on a shared
machine the wall times depend on what else runs, the CPU seconds much less.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from adapters.chat import FIT_MARGIN
from adapters.discord.courier import DEFAULT_UPLOAD_LIMIT
from bot.videofit import fit_video

GOAL_SECONDS = 5.0
MIB = 1024 * 1024
AUDIO_RATE = 48_000


# --- the source clip -------------------------------------------------------------------

def _scene(width: int, height: int) -> np.ndarray:
    """An RGB picture larger than a frame: gradients, discs, lines, lightly blurred, and a
    fixed fine texture (what a camera pans across)."""
    rng = random.Random(1)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(90 + 120 * y // height, 160, 230 - 80 * y // height))
    for _ in range(120):
        cx, cy, r = rng.randrange(width), rng.randrange(height), rng.randrange(20, 300)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r],
                     fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(400):
        x, y, grey = rng.randrange(width), rng.randrange(height), rng.randrange(256)
        draw.line([(x, y), (x + rng.randrange(-200, 200), y + rng.randrange(-200, 200))],
                  fill=(grey, grey, grey), width=rng.randrange(1, 6))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5))).astype(np.int16)
    texture = np.random.default_rng(1).normal(0, 12, (height, width, 1))
    return np.clip(pixels + texture, 0, 255).astype(np.uint8)


def make_clip(path: Path, *, seconds: float, width: int, height: int, fps: int) -> None:
    """Write the source clip described in the module docstring to ``path``."""
    pan_x, pan_y = width * 5 // 12, height * 5 // 18  # how far the camera travels
    scene = _scene(width + pan_x, height + pan_y)
    grain_rng, audio_rng = np.random.default_rng(2), np.random.default_rng(3)
    frames = round(seconds * fps)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "20"}
        audio = out.add_stream("aac", rate=AUDIO_RATE, bit_rate=128_000)
        samples = 0
        for index in range(frames):
            progress = index / frames
            x, y = int(pan_x * progress), int(pan_y * (0.5 - 0.5 * np.cos(np.pi * progress)))
            picture = Image.fromarray(scene[y:y + height, x:x + width])
            draw = ImageDraw.Draw(picture)
            t, r = index / fps, height // 18
            for disc in range(6):
                cx = (width * (0.15 + 0.14 * disc) + width * 0.1 * np.sin(t * (1 + 0.3 * disc))) % width
                cy = height * (0.5 + 0.32 * np.sin(t * (0.7 + 0.2 * disc) + disc))
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255 - 30 * disc, 40 * disc, 120))
            grain = grain_rng.integers(-3, 4, size=(height, width, 1), dtype=np.int16)
            rgb = np.clip(np.asarray(picture).astype(np.int16) + grain, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
            while samples < (index + 1) * AUDIO_RATE / fps:  # keep the tracks interleaved
                at = (np.arange(1024) + samples) / AUDIO_RATE
                wave = 0.2 * np.sin(2 * np.pi * 220 * at) + 0.05 * audio_rng.standard_normal(1024)
                sound = av.AudioFrame.from_ndarray(np.stack([wave, wave]).astype(np.float32),
                                                   format="fltp", layout="stereo")
                sound.rate, sound.pts = AUDIO_RATE, samples
                out.mux(audio.encode(sound))
                samples += 1024
        out.mux(video.encode())
        out.mux(audio.encode())


# --- what a user gets ------------------------------------------------------------------

def top_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    boxes, pos, data = [], 0, path.read_bytes()
    while pos + 8 <= len(data):
        size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        boxes.append(kind)
        pos += size or len(data)
    return boxes


def played(path: Path) -> dict[str, object]:
    """Decode every frame and sample of ``path``: what a player shows of it."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames, end, samples = 0, 0.0, 0
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                frames += 1
                end = max(end, float((frame.pts or 0) * frame.time_base) + float(1 / video.average_rate))
            else:
                samples += frame.samples
        return {"video": video.codec_context.name, "pix_fmt": video.codec_context.pix_fmt,
                "profile": video.codec_context.profile, "width": video.width, "height": video.height,
                "frames": frames, "seconds": end,
                "audio": audio.codec_context.name if audio else None,
                "audio_seconds": samples / audio.rate if audio else None}


def luma_psnr(source: Path, output: Path, *, every: int = 8) -> float:
    """PSNR of the output's luma against the source's, over every ``every``-th frame, the
    output scaled (bicubic) to the source's size."""
    def lumas(path: Path, size: tuple[int, int]):
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every == 0:
                    yield frame.reformat(width=size[0], height=size[1], format="gray",
                                         interpolation="BICUBIC").to_ndarray().astype(np.float64)
    with av.open(str(source)) as container:
        size = container.streams.video[0].width, container.streams.video[0].height
    errors = [float(np.mean((a - b) ** 2)) for a, b in zip(lumas(source, size), lumas(output, size), strict=True)]
    return 10 * float(np.log10(255 ** 2 / statistics.mean(errors)))


# --- the run ---------------------------------------------------------------------------

def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed re-encodes (default 3; the median is the figure)")
    parser.add_argument("--seconds", type=float, default=10.0, help="source clip length (default 10)")
    parser.add_argument("--width", type=int, default=1920, help="source width (default 1920)")
    parser.add_argument("--height", type=int, default=1080, help="source height (default 1080)")
    parser.add_argument("--fps", type=int, default=24, help="source frame rate (default 24)")
    parser.add_argument("--limit-mib", type=float, default=DEFAULT_UPLOAD_LIMIT / MIB,
                        help="the chat's upload limit in MiB (default 10: Discord without boosts)")
    parser.add_argument("--keep", type=Path, help="a folder to keep the source and the output in")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="reencode-"))
    folder.mkdir(parents=True, exist_ok=True)
    source, output = folder / "source.mp4", folder / "fitted.mp4"
    limit = int(args.limit_mib * MIB * FIT_MARGIN)

    started = time.perf_counter()
    make_clip(source, seconds=args.seconds, width=args.width, height=args.height, fps=args.fps)
    before = played(source)
    print(f"source: {source.stat().st_size / MIB:.1f} MiB, {before['width']}x{before['height']}, "
          f"{before['frames']} frames, {before['seconds']:.2f} s, {before['video']} + {before['audio']} "
          f"(made in {time.perf_counter() - started:.1f} s)")
    if source.stat().st_size <= args.limit_mib * MIB:
        raise SystemExit(f"the source is not larger than {args.limit_mib:g} MiB: nothing to re-encode")

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores: os.cpu_count() = {os.cpu_count()}, sched_getaffinity = {affinity}; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"limit: {limit} bytes ({args.limit_mib:g} MiB x FIT_MARGIN {FIT_MARGIN})")

    walls, cpus = [], []
    for run in range(1, args.runs + 1):
        output.unlink(missing_ok=True)
        wall, cpu = time.perf_counter(), cpu_seconds()
        fits = fit_video(source, limit, output)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        if not fits:
            raise SystemExit(f"run {run}: fit_video could not fit the clip under {limit} bytes")
        walls.append(wall)
        cpus.append(cpu)
        print(f"run {run}: {wall:.2f} s wall, {cpu:.2f} s CPU, {output.stat().st_size} bytes")

    after = played(output)
    boxes = top_boxes(output)
    faststart = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    size = output.stat().st_size
    median = statistics.median(walls)
    print(f"re-encode to fit {args.limit_mib:g} MiB: median {median:.2f} s, best {min(walls):.2f} s wall "
          f"(goal <= {GOAL_SECONDS:g} s: {'met' if median <= GOAL_SECONDS else 'NOT met'}); "
          f"CPU median {statistics.median(cpus):.2f} s")
    print(f"output: {size} bytes = {size / MIB:.2f} MiB ({'under' if size < limit else 'OVER'} the limit), "
          f"{after['width']}x{after['height']}, {after['video']} {after['profile']} {after['pix_fmt']} + "
          f"{after['audio']}, {after['frames']} of {before['frames']} frames, {after['seconds']:.2f} s video "
          f"(source {before['seconds']:.2f}), {after['audio_seconds'] or 0:.2f} s audio "
          f"(source {before['audio_seconds'] or 0:.2f}), faststart {'yes' if faststart else 'NO'} ({' '.join(boxes)})")
    print(f"quality: luma PSNR {luma_psnr(source, output):.2f} dB against the source (every 8th frame)")


if __name__ == "__main__":
    main()
