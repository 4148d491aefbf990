"""Small media makers: the demo's sample photo, the simulator's zoom clip and a big clip
of noise for videos over a chat's upload limit (PyAV)."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import threading

import av
from PIL import Image, ImageDraw, ImageOps


def sample_photo(width: int = 768, height: int = 768) -> bytes:
    """A friendly JPEG made on the spot, so the demo needs no file from the user."""
    image = Image.new("RGB", (width, height), (250, 214, 165))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # sky gradient
        draw.line([(0, y), (width, y)], fill=(90 + y * 120 // height, 160, 230 - y * 80 // height))
    draw.ellipse([width * 0.25, height * 0.2, width * 0.75, height * 0.7], fill=(255, 205, 60))
    draw.ellipse([width * 0.37, height * 0.36, width * 0.43, height * 0.42], fill=(40, 40, 40))
    draw.ellipse([width * 0.57, height * 0.36, width * 0.63, height * 0.42], fill=(40, 40, 40))
    draw.arc([width * 0.37, height * 0.4, width * 0.63, height * 0.6], 20, 160, fill=(40, 40, 40), width=8)
    draw.rectangle([0, height * 0.8, width, height], fill=(70, 150, 70))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


# The same photo makes the same clip, and a simulator's jobs mostly share a few photos:
# the last clips are kept (each costs 0.06-0.1 s of CPU to encode; the suite makes thousands).
_ZOOMS_KEPT = 32
_zooms: collections.OrderedDict[tuple[bytes, float, int, int], bytes] = collections.OrderedDict()
_zooms_lock = threading.Lock()  # the simulator renders in threads


def zoom_clip(image_bytes: bytes, *, seconds: float = 2.0, fps: int = 12, width: int = 320) -> bytes:
    """A playable H.264 MP4: a slow zoom into the image, like a minimal Kling clip."""
    key = (hashlib.sha256(image_bytes).digest(), seconds, fps, width)
    with _zooms_lock:
        if (kept := _zooms.get(key)) is not None:
            _zooms.move_to_end(key)
            return kept
    clip = _zoom_mp4(image_bytes, seconds, fps, width)
    with _zooms_lock:
        _zooms[key] = clip
        while len(_zooms) > _ZOOMS_KEPT:
            _zooms.popitem(last=False)
    return clip


def _zoom_mp4(image_bytes: bytes, seconds: float, fps: int, width: int) -> bytes:
    source = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB")
    height = max(2, round(width * source.height / source.width / 2) * 2)
    frames = max(2, int(seconds * fps))
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for index in range(frames):
            zoom = 1 + 0.2 * index / (frames - 1)
            crop_w, crop_h = source.width / zoom, source.height / zoom
            left, top = (source.width - crop_w) / 2, (source.height - crop_h) / 2
            frame_image = source.resize((width, height), Image.Resampling.BILINEAR,
                                        box=(left, top, left + crop_w, top + crop_h))
            frame = av.VideoFrame.from_image(frame_image)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


# Random bytes -> s16 samples of -256, -1, 0 or 255: quiet noise around zero (about -45 dBFS).
_QUIET = bytes((b & 1) * 0xFF for b in range(256))


def noisy_clip(size_bytes: int, *, seconds: float = 10.0, width: int = 1280, height: int = 720,
               fps: int = 24, audio: bool = False) -> bytes:
    """A playable H.264 MP4 of about ``size_bytes`` (±10 %): random pixels in every frame, so
    nothing compresses and the encoder spends the whole bitrate (a video too large to post).
    It cannot exceed about the raw frames' size (``width * height * 1.5`` bytes a frame).

    With ``audio``, a 48 kHz stereo AAC track of quiet noise (128 kbit/s) comes along."""
    frames = max(2, round(seconds * fps))
    audio_rate = 128_000 if audio else 0
    video_rate = max(100_000, int(size_bytes * 8 * 0.95 * fps / frames) - audio_rate)  # ABR overshoots a little
    clip = _noise_mp4(frames, width, height, fps, video_rate, audio_rate)
    if not 0.9 < len(clip) / size_bytes < 1.1:  # x264's rate control misses on short clips: once more
        video_rate = max(100_000, int((video_rate + audio_rate) * size_bytes / len(clip)) - audio_rate)
        clip = _noise_mp4(frames, width, height, fps, video_rate, audio_rate)
    return clip


def _noise_mp4(frames: int, width: int, height: int, fps: int, video_rate: int, audio_rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # a rate buffer of 1 s, or the first frame of noise takes far too much on short clips
        video.bit_rate = video_rate
        video.options = {"preset": "ultrafast", "maxrate": str(video_rate), "bufsize": str(video_rate)}
        sound = container.add_stream("aac", rate=48_000, bit_rate=audio_rate) if audio_rate else None
        samples = 0
        for index in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(os.urandom(plane.buffer_size))
            frame.pts = index
            container.mux(video.encode(frame))
            while sound is not None and samples < (index + 1) * 48_000 / fps:  # keep the tracks interleaved
                container.mux(sound.encode(_noise_frame(samples)))
                samples += 1024
        container.mux(video.encode())
        if sound is not None:
            container.mux(sound.encode())
    return out.getvalue()


def _noise_frame(pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=1024)
    frame.planes[0].update(os.urandom(frame.planes[0].buffer_size).translate(_QUIET))
    frame.rate, frame.pts = 48_000, pts
    return frame
