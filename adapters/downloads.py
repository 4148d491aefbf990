"""A user's file fetched by URL, read no further than the bot's limit.

A size the far end announces (Content-Length, or a platform's own field) may be missing
or wrong, so the body is read in chunks and refused as soon as it passes the limit: a file
larger than that is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from bot import messages
from bot.catalog import ValidationError

CHUNK = 64 * 1024


async def read_capped(session: aiohttp.ClientSession, url: str, what: str, limit: int, *,
                      check_announced: Callable[[int], None] | None = None) -> bytes:
    """The bytes at ``url``; ValidationError once they pass ``limit`` (as announced, or as
    read). ``check_announced`` refuses an announced size its own way (default: over
    ``limit``). aiohttp's errors (a failed request, an HTTP error status) are left to the
    caller: they name the URL, which may hold a secret."""
    async with session.get(url) as response:
        response.raise_for_status()
        announced = response.content_length
        if announced is not None and check_announced is not None:
            check_announced(announced)
        elif announced is not None and announced > limit:
            raise ValidationError(messages.media_too_large(what, announced, limit))
        data = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) > limit:  # leaving the response unread closes its connection
                raise ValidationError(messages.media_larger_than(what, limit))
        return bytes(data)
