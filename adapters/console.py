"""The terminal as a chat: the demo and ``kling-bot generate`` talk to the engine here.

Commands are the same as in Discord and Telegram; a photo or audio file is named by
its path instead of being attached.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TextIO

from adapters.chat import jobs_text
from adapters.text_commands import cancel_job, parse_animate
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.engine import Engine
from bot.jobs import Accepted, GenerationRequest, Job, Progress, Rejected, UserRef, Video

PLATFORM = "console"


class ConsoleCourier:
    """Shows a job's progress as a bar and saves the finished video to a folder."""

    def __init__(self, out: TextIO, output_dir: Path, *, target: Path | None = None):
        self.out = out
        self.output_dir = output_dir
        self.target = target  # exact file for `generate -o`
        self.finished: dict[int, asyncio.Future[Path | None]] = {}
        self._last_stage: dict[int, str] = {}

    def watch(self, job_id: int) -> asyncio.Future[Path | None]:
        return self.finished.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def progress(self, job: Job, update: Progress) -> None:
        line = messages.console_line(job.id, f"{_bar(update.fraction)}{update.text()}")
        tty = self.out.isatty()
        if not tty and self._last_stage.get(job.id) == update.stage:
            return  # in a log or pipe, one line per stage is enough
        self._last_stage[job.id] = update.stage
        self.out.write(f"\r\033[K{line}" if tty else f"{line}\n")
        self.out.flush()

    async def deliver(self, job: Job, video: Video) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = f"job-{job.id}-{_slug(job.label)}.mp4"
        dest = self.target or self.output_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video.path, dest)
        self._end(job, messages.console_saved(job.id, dest, video.size, video.nsfw), dest)

    async def fail(self, job: Job, reason: str) -> None:
        self._end(job, messages.console_line(job.id, reason), None)

    def _end(self, job: Job, line: str, result: Path | None) -> None:
        self.out.write(("\r\033[K" if self.out.isatty() else "") + line + "\n")
        self.out.flush()
        future = self.watch(job.id)
        if not future.done():
            future.set_result(result)


class ConsoleChat:
    """Turns typed commands into engine requests and prints the answers."""

    def __init__(self, engine: Engine, courier: ConsoleCourier, user: UserRef, photo: bytes,
                 out: TextIO = sys.stdout):
        self.engine = engine
        self.courier = courier
        self.user = user
        self.photo = photo
        self.out = out
        self.max_bytes = max_bytes(engine.settings.media.max_download_mb)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def handle(self, line: str) -> bool:
        """Run one command line; False when the user wants to quit."""
        command, _, rest = line.strip().partition(" ")
        command = command.lower()
        try:
            if command in ("/quit", "/exit"):
                return False
            if command in ("/help", "/start"):
                self.say(messages.console_help(len(catalog.EFFECTS), catalog.animate_options()))
            elif command == "/effects":
                self.say(messages.effects_list(catalog.EFFECTS))
            elif command == "/quota":
                self.say(self.engine.balance(self.user).text())
            elif command == "/jobs":
                self.say(jobs_text(self.engine, self.user))
            elif command == "/cancel":
                self.say(await self._cancel(rest))
            elif command == "/photo":
                self.photo = self._read(rest.strip(), "photo")
                self.say(messages.using_photo(rest.strip()))
            elif command == "/effect":
                words = rest.split()
                photo = self._read(words[1], "photo") if len(words) > 1 else self.photo
                await self.generate(GenerationRequest(self.user, "effect", photo,
                                                      Params(effect=words[0] if words else "")))
            elif command == "/animate":
                photo, text = self._leading_photo(rest)
                args = parse_animate(text)
                await self.generate(GenerationRequest(self.user, "animate", photo, args.params,
                                                      model=args.model))
            elif command == "/avatar":
                words = shlex.split(rest)
                if len(words) < 2:
                    raise ValidationError(messages.AVATAR_USAGE)
                await self.generate(GenerationRequest(
                    self.user, "avatar", self._read(words[0], "photo"),
                    Params(prompt=" ".join(words[2:]) or None), audio=self._read(words[1], "audio")))
            elif command:
                self.say(messages.unknown_command(command))
        except ValidationError as err:
            self.say(str(err))
        return True

    def _leading_photo(self, text: str) -> tuple[bytes, str]:
        first, _, rest = text.strip().partition(" ")
        if first and Path(first).expanduser().is_file():
            return self._read(first, "photo"), rest
        return self.photo, text

    def _read(self, path: str, what: str) -> bytes:
        try:
            return read_limited(Path(path).expanduser(), self.max_bytes, what)
        except OSError as err:
            raise ValidationError(messages.cannot_read_file(what, path, str(err.strerror or err))) from None

    async def generate(self, request: GenerationRequest) -> Path | None:
        """Submit a request and wait for its video, as a chat user watching would."""
        answer = await self.engine.accept(request)
        if isinstance(answer, Rejected):
            self.say(answer.text)
            return None
        assert isinstance(answer, Accepted)
        self.say(answer.text)
        return await self.courier.watch(answer.job.id)

    async def _cancel(self, rest: str) -> str:
        return await cancel_job(self.engine, self.user, rest, messages.CONSOLE_CANCEL_USAGE)


def max_bytes(max_download_mb: float) -> int:
    """``[media] max_download_mb`` in bytes: the most of a user's file the bot reads."""
    return int(max_download_mb * 1024 * 1024)


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """A file's bytes, reading at most ``limit`` + 1 of them: a larger file (or an endless
    one such as /dev/zero) is refused, not read into memory. OSError when unreadable."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
        if len(data) > limit:
            size = max(len(data), os.fstat(file.fileno()).st_size)
            raise ValidationError(messages.media_too_large(what, size, limit))
    return data


def _bar(fraction: float | None, width: int = 20) -> str:
    if fraction is None:
        return ""
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}% "


def _slug(text: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in kept.split("-") if part)[:40] or "video"
