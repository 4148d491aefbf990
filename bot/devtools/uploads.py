"""The simulator's media routes: ``POST /api/v3/media/upload/binary`` keeps a file in
``sim.uploads`` and answers the URL it is served from, ``GET /media/{token}/{name}``."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, web

from bot.devtools.answers import envelope, fault_answer, unauthorised

if TYPE_CHECKING:
    from bot.devtools.simulator import Simulator


def add_upload_routes(app: web.Application, sim: Simulator) -> None:
    async def upload(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if fault := await fault_answer(sim.take_fault("upload"), request):
            return fault
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = await part.read()
                token = secrets.token_hex(8)
                name = part.filename or "file"
                sim.uploads[token] = (data, part.headers.get("Content-Type", "application/octet-stream"))
                return envelope({"download_url": f"{request.url.origin()}/media/{token}/{name}",
                                 "type": sim.uploads[token][1], "size": len(data)})
        return envelope(None, 400, 1400, "missing multipart field: file")

    async def media(request: web.Request) -> web.Response:
        data, mime = sim.uploads.get(request.match_info["token"], (None, ""))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type=mime)

    app.router.add_post("/api/v3/media/upload/binary", upload)
    app.router.add_get("/media/{token}/{name}", media)
