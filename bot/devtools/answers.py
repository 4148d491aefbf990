"""How the simulator answers: WaveSpeed's envelope, and the broken answers faults give."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from bot.devtools.faults import HANGING_KINDS, Fault


class SimulatedError(Exception):
    """A refusal the API answers with an error envelope (HTTP status and WaveSpeed code)."""

    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def answer(self) -> web.Response:
        return envelope(None, self.status, self.code, self.message)


def envelope(data: dict[str, Any] | None, status: int = 200, code: int = 200,
             message: str = "success", headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": data},
                             status=status, headers=headers)


def unauthorised() -> web.Response:
    return envelope(None, 401, 401, "Unauthorized: invalid API key")


def malformed() -> web.Response:
    """HTTP 200 whose JSON body breaks off, like an answer cut short by a proxy."""
    return web.Response(body=b'{"code": 200, "message": "success", "data": {"id": ',
                        content_type="application/json")


async def drop_connection(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Close the connection without (finishing) an answer.

    The request body is read first, so the client is waiting for the answer and sees
    a clean ServerDisconnectedError rather than a failed write. aiohttp then fails to
    send the returned response on the closed transport and drops it quietly.
    """
    with contextlib.suppress(Exception):
        await request.read()
    if response is not None:
        response.force_close()
    transport = request.transport
    if transport is not None:
        transport.close()
    return response if response is not None else web.Response(status=204)


async def hang(request: web.Request, seconds: float) -> None:
    """Wait ``seconds``, or less if the client closes the connection first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(left, 0.02))


async def fault_answer(fault: Fault | None, request: web.Request, late: tuple[str, ...] = (),
                       *, full_delay: bool = False) -> web.StreamResponse | None:
    """The answer a fault gives before the endpoint does its work (None: carry on).

    Kinds in ``late`` are left to the caller, which applies them after its work.
    The fault's delay ends early if the client leaves, unless ``full_delay``.
    """
    if fault is None or fault.kind in HANGING_KINDS:
        return None
    if full_delay:
        await asyncio.sleep(fault.delay)
    else:
        await hang(request, fault.delay)
    if fault.kind in late:
        return None
    if fault.kind == "reset":
        return await drop_connection(request)
    if fault.kind == "malformed":
        return malformed()
    if fault.kind != "status" or not fault.status:
        return None
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
    return envelope(None, fault.status, fault.code or fault.status, fault.message, headers)
