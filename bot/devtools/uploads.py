"""The simulator's media routes, both ways WaveSpeed takes a file:

* ``POST /api/v3/media/upload/binary`` (multipart field ``file``): keeps it and answers, as
  the docs say, ``{type: image|video|audio, download_url, filename, size}``;
* ``POST /api/v3/media/uploads`` (JSON ``{filename, size, content_type?}``, what the official
  SDK 2.x sends): answers the same fields plus an upload instruction ``{method: "PUT", url,
  headers}``; the bytes are then PUT to that URL (no API key: it is a storage URL, written
  once, of exactly the announced size), and only then is the download URL served.

Kept files are in ``sim.uploads`` and served at ``GET /media/{token}/{name}``.
"""

from __future__ import annotations

import mimetypes
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from bot.devtools.answers import envelope, fault_answer, unauthorised

if TYPE_CHECKING:
    from bot.devtools.simulator import Simulator

MEDIA_TYPES = ("image", "video", "audio")  # what WaveSpeed takes; its answer's ``type``
UNSUPPORTED = 1401  # invalid parameter: the code of a file WaveSpeed does not take


def media_type(content_type: str, filename: str) -> str | None:
    """``image``, ``video`` or ``audio`` from the file's content type (else its name); None
    for anything else, which WaveSpeed refuses."""
    for mime in (content_type, mimetypes.guess_type(filename)[0] or ""):
        kind = mime.split("/", 1)[0].lower()
        if kind in MEDIA_TYPES:
            return kind
    return None


def add_upload_routes(app: web.Application, sim: Simulator) -> None:
    tickets: dict[str, dict[str, Any]] = {}  # token -> {filename, size, mime}, until its bytes are PUT

    def described(request: web.Request, token: str, kind: str, filename: str, size: int) -> dict[str, Any]:
        return {"type": kind, "download_url": f"{request.url.origin()}/media/{token}/{quote(filename)}",
                "filename": filename, "size": size}

    async def upload(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if fault := await fault_answer(sim.take_fault("upload"), request):
            return fault
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = await part.read()
                name = part.filename or "file"
                mime = part.headers.get("Content-Type", "application/octet-stream")
                kind = media_type(mime, name)
                if kind is None:
                    return envelope(None, 400, UNSUPPORTED, f"unsupported file type: {mime}")
                token = secrets.token_hex(8)
                sim.uploads[token] = (bytes(data), mime)
                return envelope(described(request, token, kind, name, len(data)))
        return envelope(None, 400, 1400, "missing multipart field: file")

    async def ticket(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if fault := await fault_answer(sim.take_fault("upload"), request):
            return fault
        try:
            body = await request.json()
        except ValueError:
            return envelope(None, 400, 1400, "the body is not JSON")
        if not isinstance(body, dict):
            return envelope(None, 400, 1400, "filename and size are required")
        name, size = body.get("filename"), body.get("size")
        if not isinstance(name, str) or not name or type(size) is not int or size < 0 \
                or not isinstance(body.get("content_type", ""), str):
            return envelope(None, 400, 1400, "filename and size are required")
        mime = body.get("content_type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        kind = media_type(mime, name)
        if kind is None:
            return envelope(None, 400, UNSUPPORTED, f"unsupported file type: {mime}")
        token = secrets.token_hex(8)
        tickets[token] = {"filename": name, "size": size, "mime": mime}
        instruction = {"method": "PUT", "url": f"{request.url.origin()}/_storage/{token}",
                       "headers": {"Content-Type": mime, "If-None-Match": "*"}}
        return envelope({**described(request, token, kind, name, size), "upload": instruction})

    async def store(request: web.Request) -> web.Response:
        """The storage URL of a ticket: one write of exactly the announced size."""
        token = request.match_info["token"]
        if token in sim.uploads:
            return web.Response(status=412, text="PreconditionFailed: the object exists")
        wanted = tickets.get(token)
        if wanted is None:
            return web.Response(status=403, text="AccessDenied: no such upload")
        data = await request.read()
        if len(data) != wanted["size"]:
            return web.Response(status=400, text=f"BadDigest: {len(data)} bytes, {wanted['size']} announced")
        del tickets[token]
        sim.uploads[token] = (data, wanted["mime"])
        return web.Response(status=200)

    async def media(request: web.Request) -> web.Response:
        data, mime = sim.uploads.get(request.match_info["token"], (None, ""))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type=mime)

    app.router.add_post("/api/v3/media/upload/binary", upload)
    app.router.add_post("/api/v3/media/uploads", ticket)
    app.router.add_put("/_storage/{token}", store)
    app.router.add_get("/media/{token}/{name}", media)
