"""A submit's inputs, checked as the real API checks them (same codes, same messages)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError
from yarl import URL

from bot import catalog
from bot.devtools.answers import SimulatedError

Uploads = dict[str, tuple[bytes, str]]  # token -> (bytes, content type)


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


async def check_inputs(model: catalog.Model, body: dict[str, Any], request: web.Request,
                       uploads: Uploads) -> bytes:
    """The image to animate, once every input is valid; SimulatedError otherwise."""
    for name in sorted(model.required):
        if body.get(name) in (None, ""):
            raise SimulatedError(400, 1400, f"missing required parameter: {name}")
    if model.kind == "effect" and body["effect_scene"] not in catalog.EFFECTS:
        raise SimulatedError(400, 1401, f"effect_scene must be one of the {len(catalog.EFFECTS)} scenes")
    for name in ("prompt", "negative_prompt"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > catalog.PROMPT_MAX_CHARS):
            raise SimulatedError(400, 1401, f"{name} must be text of at most {catalog.PROMPT_MAX_CHARS} characters")
    if "guidance_scale" in body:
        g = body["guidance_scale"]
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 1:
            raise SimulatedError(400, 1401, "guidance_scale must be a number from 0 to 1")
    if "duration" in body and body["duration"] not in [str(d) for d in model.durations]:
        raise SimulatedError(400, 1401, "duration must be \"5\" or \"10\"")
    image = await fetch_media(body["image"], request, uploads)
    check_image(image, model.image, "image")
    if body.get("end_image"):
        check_image(await fetch_media(body["end_image"], request, uploads), catalog.ImageRule(), "end_image")
    if "audio" in model.required and not await fetch_media(body["audio"], request, uploads):
        raise SimulatedError(400, 1402, "audio is empty")
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


def check_image(data: bytes, rule: catalog.ImageRule, name: str) -> None:
    if len(data) > rule.max_bytes:
        raise SimulatedError(400, 1401, f"{name} exceeds 10MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = img.format, img.size
    except (UnidentifiedImageError, OSError):
        raise SimulatedError(400, 1401, f"{name} is not a readable image") from None
    if fmt not in ("JPEG", "PNG"):
        raise SimulatedError(400, 1401, f"{name} must be jpg/jpeg/png")
    if min(w, h) < rule.min_side:
        raise SimulatedError(400, 1401, f"{name} resolution must be at least 300*300px")
    if rule.aspect and not rule.aspect[0] <= w / h <= rule.aspect[1]:
        raise SimulatedError(400, 1401, f"{name} aspect ratio must be between 1:2.5 and 2.5:1")
