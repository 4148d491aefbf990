"""A submit's media inputs, checked as the real API checks them (same codes, same messages):
reachable, and within the rules their schema descriptions state (size, resolution, aspect ratio)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError
from yarl import URL

from bot.devtools.answers import SimulatedError

Uploads = dict[str, tuple[bytes, str]]  # token -> (bytes, content type)
RATIO = r"\d+(?:\.\d+)?:\d+(?:\.\d+)?"  # "1:2.5"
IMAGE_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}


def check_webhook_url(value: str | None) -> str | None:
    """The ``?webhook=`` URL if it is an absolute http(s) URL (None: no webhook asked)."""
    if value is None:
        return None
    try:
        url = URL(value)
    except ValueError:
        url = URL()
    if not (url.is_absolute() and url.scheme in ("http", "https") and url.host):
        raise SimulatedError(400, 1401, "webhook must be an absolute http(s) URL")
    return value


@dataclass(frozen=True)
class ImageRule:
    """What one image input accepts, as its schema description states it (WaveSpeed's
    general rules where it states nothing: jpg/png, at most 10 MB, at least 300*300 px)."""

    min_side: int = 300
    max_bytes: int = 10 * 1024 * 1024
    aspect: tuple[str, str] | None = None  # e.g. ("1:2.5", "2.5:1"): width/height bounds as written
    formats: tuple[str, ...] = ("JPEG", "PNG")

    @classmethod
    def from_description(cls, description: str) -> ImageRule:
        rule = cls()
        if size := re.search(r"cannot exceed\s*(\d+(?:\.\d+)?)\s*MB", description, re.IGNORECASE):
            rule = replace(rule, max_bytes=int(float(size[1]) * 1024 * 1024))
        if side := re.search(r"not less than\s*(\d+)\s*\*\s*(\d+)\s*px", description, re.IGNORECASE):
            rule = replace(rule, min_side=min(int(side[1]), int(side[2])))
        if aspect := re.search(rf"between\s*({RATIO})\s*~\s*({RATIO})", description):
            rule = replace(rule, aspect=(aspect[1], aspect[2]))
        if listed := re.search(r"formats include\s*([./\w]+)", description, re.IGNORECASE):
            names = {IMAGE_FORMATS.get(ext.strip(".").lower()) for ext in listed[1].split("/")}
            rule = replace(rule, formats=tuple(sorted(name for name in names if name)) or rule.formats)
        return rule


def image_fields(schema: dict[str, Any]) -> list[str]:
    """The schema's image inputs, the first frame ("image") first."""
    names = [name for name in schema.get("properties", {}) if name == "image" or name.endswith("_image")]
    return sorted(names, key=lambda name: name != "image")


async def check_inputs(schema: dict[str, Any], body: dict[str, Any], request: web.Request,
                       uploads: Uploads) -> bytes | None:
    """The image to animate (None: the model was given none), once every media input of a
    schema-valid body is reachable and within its rules; SimulatedError otherwise."""
    properties = schema.get("properties", {})
    image = None
    for name in image_fields(schema):
        if body.get(name):
            data = await fetch_media(body[name], request, uploads)
            check_image(data, ImageRule.from_description(properties[name].get("description", "")), name)
            image = data if name == "image" else image
    for name in ("audio", "video"):
        if name in properties and body.get(name) and not await fetch_media(body[name], request, uploads):
            raise SimulatedError(400, 1402, f"{name} is empty")
    return image


async def fetch_media(ref: Any, request: web.Request, uploads: Uploads) -> bytes:
    """The bytes behind a media input: a data URI, one of our uploads, or any URL."""
    if not isinstance(ref, str):
        raise SimulatedError(400, 1401, "media inputs must be a URL or a data URI")
    if ref.startswith("data:"):
        try:
            return base64.b64decode(ref.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error):
            raise SimulatedError(400, 1401, "malformed data URI") from None
    own = f"{request.url.origin()}/media/"
    if ref.startswith(own):
        token = ref[len(own):].split("/", 1)[0]
        if token in uploads:
            return uploads[token][0]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(ref) as resp:
            if resp.status == 200:
                return await resp.read()
    except (TimeoutError, aiohttp.ClientError, ValueError):
        pass
    raise SimulatedError(400, 1402, "media URL unreachable")


def check_image(data: bytes, rule: ImageRule, name: str) -> None:
    if len(data) > rule.max_bytes:
        raise SimulatedError(400, 1401, f"{name} exceeds {rule.max_bytes // (1024 * 1024)}MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
    except (UnidentifiedImageError, OSError):
        raise SimulatedError(400, 1401, f"{name} is not a readable image") from None
    if fmt not in rule.formats:
        raise SimulatedError(400, 1401, f"{name} must be one of {'/'.join(rule.formats).lower()}")
    if min(w, h) < rule.min_side:
        raise SimulatedError(400, 1401, f"{name} resolution must be at least {rule.min_side}*{rule.min_side}px")
    if rule.aspect and not _ratio(rule.aspect[0]) <= w / h <= _ratio(rule.aspect[1]):
        raise SimulatedError(400, 1401, f"{name} aspect ratio must be between {rule.aspect[0]} and {rule.aspect[1]}")


def _ratio(text: str) -> float:
    width, height = text.split(":")
    return float(width) / float(height)
