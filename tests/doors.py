"""Several addresses ("doors") of one fake chat server, so a test sees which process made
each request: every door serves the same chats and records; what comes through one is
recorded under its name."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class Doors:
    """Mixed into a fake server that keeps its ``web.AppRunner`` in ``_runner`` and adds
    ``_by_door`` to its application's middlewares."""

    _runner: web.AppRunner | None

    def _init_doors(self) -> None:
        self._doors: dict[int, str] = {}  # port -> the door's name
        self.requests_by_door: dict[str, list[str]] = {}  # name -> the paths requested through it

    async def door(self, name: str) -> str:
        """Another address of this same fake (the same chats, messages and records): what is
        requested through it is recorded as ``name``'s (``requests_by_door``, a call's
        ``door``). Its base, ``http://127.0.0.1:PORT``."""
        assert self._runner is not None, "start() first"
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._doors[port] = name
        return f"http://127.0.0.1:{port}"

    def door_of(self, request: web.Request) -> str:
        return self._doors.get(request.url.port or 0, "")

    @web.middleware
    async def _by_door(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests_by_door.setdefault(self.door_of(request), []).append(request.path)
        return await handler(request)
