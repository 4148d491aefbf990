"""Small media makers: the demo's sample photo and the simulator's zoom clip (PyAV)."""

from __future__ import annotations

import io

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


def zoom_clip(image_bytes: bytes, *, seconds: float = 2.0, fps: int = 12, width: int = 320) -> bytes:
    """A playable H.264 MP4: a slow zoom into the image, like a minimal Kling clip."""
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
