"""An engine in its own process, for the restart tests: ``python -m tests.engine_process``.

Its courier appends one JSON line per event to a file, the way a chat adapter would
post messages; the test kills the process and starts it again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from pathlib import Path

from bot.catalog import Params
from bot.config import load_settings
from bot.devtools.clips import sample_photo
from bot.engine import Engine
from bot.jobs import GenerationRequest, Job, Progress, UserRef, Video

PLATFORM = "proc"


class FileCourier:
    def __init__(self, path: Path, hang_delivery: bool):
        self.path = path
        self.hang_delivery = hang_delivery

    def _write(self, **event) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(event) + "\n")

    async def progress(self, job: Job, update: Progress) -> None:
        self._write(event="progress", job=job.id, stage=update.stage, reply_to=job.reply_to)

    async def deliver(self, job: Job, video: Video) -> None:
        if self.hang_delivery:
            self._write(event="delivering", job=job.id)
            await asyncio.Event().wait()  # like an upload that never finishes
        data = video.path.read_bytes()
        self._write(event="delivered", job=job.id, size=len(data), reply_to=job.reply_to,
                    sha256=hashlib.sha256(data).hexdigest())

    async def fail(self, job: Job, reason: str) -> None:
        self._write(event="failed", job=job.id, reason=reason)

    async def cancelled(self, job: Job, text: str) -> None:
        self._write(event="cancelled", job=job.id, text=text)

    async def alert_admins(self, text: str) -> None:
        self._write(event="alert", text=text)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("events", type=Path)
    parser.add_argument("--submit", type=int, default=0, help="how many requests to make at start")
    parser.add_argument("--hang-delivery", action="store_true")
    parser.add_argument("--at-once-at", type=float, default=0.0,
                        help="make the requests all at once, at this Unix time (several processes in step)")
    args = parser.parse_args()
    engine = await Engine.from_settings(load_settings(args.config))
    engine.register(PLATFORM, FileCourier(args.events, args.hang_delivery))
    await engine.start()
    requests = [GenerationRequest(UserRef(PLATFORM, str(7 + n)), "effect", sample_photo(), Params(effect="hula"),
                                  reply_to={"chat": 99, "message": 1234 + n}) for n in range(args.submit)]
    if args.at_once_at:
        await asyncio.sleep(max(0.0, args.at_once_at - time.time()))
        for answer in await asyncio.gather(*(engine.accept(request) for request in requests)):
            print(answer.text, flush=True)
    for request in requests if not args.at_once_at else []:
        print((await engine.accept(request)).text, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
