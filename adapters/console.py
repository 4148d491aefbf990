"""The terminal as a chat: the demo and ``kling-bot generate`` talk to the engine here.

Commands are the same as in Discord and Telegram; a photo or audio file is named by
its path instead of being attached. A command never waits for its video: commands are
read while jobs run, and each job's progress shows on its own line (on a terminal, a
bar redrawn in place just above the prompt; in a log or pipe, one line per stage).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from adapters.chat import jobs_text
from adapters.text_commands import cancel_job, parse_animate, parse_effect
from adapters.videofiles import save_fresh
from bot import catalog, messages
from bot.catalog import Params, ValidationError
from bot.engine import Engine
from bot.jobs import Accepted, GenerationRequest, Job, Progress, UserRef, Video

PLATFORM = "console"
PROMPT = "> "
WAIT_CHECK = 1.0  # seconds between two looks at whether a job waited for has ended unseen


class Screen:
    """Where the console writes. In a log or pipe: lines, in order. On a terminal: each
    running job has one live line, redrawn in place right above the prompt; lines that
    stay (answers, results, the commands typed) go above the live ones, and the line
    being typed is drawn again after every redraw."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = _isatty(out)
        self.prompt: str | None = None  # shown while a line is being typed (terminal only)
        self._live: dict[int, str] = {}  # job id -> its live line
        self._drawn = 0  # live lines on screen, right above the prompt (or the cursor)
        self._lock = threading.Lock()  # the input thread writes too: when Enter is pressed
        # While input() is printing its prompt, output waits (then it is drawn with the prompt).
        self._opening = False
        self._held: list[str] = []
        self._stale = False
        self.closed = False  # the reader of ``out`` went away (a pipe into `head`)
        self.on_close: Callable[[], None] | None = None  # told once, from any thread

    def say(self, text: str) -> None:
        """A line that stays."""
        with self._lock:
            self._render([text])

    def status(self, job_id: int, text: str) -> None:
        """A job's live line (on a terminal; elsewhere a line that stays)."""
        with self._lock:
            if not self.tty:
                self._render([text])
                return
            self._live[job_id] = text
            self._render([])

    def end(self, job_id: int, text: str | None) -> None:
        """A job ended: its live line goes, ``text`` (if any) stays in its place."""
        with self._lock:
            gone = self._live.pop(job_id, None) is not None
            if text is not None or (gone and self.tty):
                self._render([] if text is None else [text])

    async def read(self, prompt: str) -> str | None:
        """The next line of stdin (None at its end), read in a thread of its own while the
        jobs go on. It is a daemon thread: a read still waiting never holds up the exit."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str | None] = loop.create_future()
        tracked = self.tty and bool(prompt)  # a prompt on this screen: redrawn with it
        if tracked:
            editor = _line_editor()
            with self._lock:
                self._render([])  # the live lines; input() writes the prompt below them
                if editor is not None:  # readline says when the prompt is on screen
                    self._opening = True
                    editor.set_pre_input_hook(lambda: self._opened(prompt))
                else:
                    self.prompt = prompt

        def read() -> None:
            line: str | None
            try:
                line = input(prompt)
            except (EOFError, OSError, ValueError):
                line = None
            if tracked:
                with self._lock:
                    self._entered(line)
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(_settle, answer, line)

        threading.Thread(target=read, name="console-input", daemon=True).start()
        return await answer

    def _opened(self, prompt: str) -> None:
        """input() has printed its prompt (readline's pre-input hook, in the input thread)."""
        with self._lock:
            self._opening = False
            self.prompt = prompt
            held, self._held = self._held, []
            if held or self._stale:
                self._render(held)
            self._stale = False

    def _entered(self, line: str | None) -> None:
        """Enter (or the end of input) was pressed: the typed line stays above the answers."""
        typed = (self.prompt or "") + (line if line is not None else _typed_so_far())
        self.prompt, self._opening, self._stale = None, False, False
        held, self._held = self._held, []
        # After Enter the cursor is at the start of the row below the typed text.
        rows = len(typed) // self._columns() + (line is not None)
        self._render(([typed] if line is not None else []) + held, rows_above=rows)

    def _render(self, lines: list[str], *, rows_above: int | None = None) -> None:
        """Print ``lines`` to stay; on a terminal, redraw the live lines and the prompt."""
        if self.closed:
            return
        if not self.tty:
            self._write("".join(f"{line}\n" for line in lines))
            return
        if self._opening:  # the prompt is being printed: wait for it
            self._held += lines
            self._stale = True
            return
        columns = self._columns()
        typed = self.prompt + _typed_so_far() if self.prompt is not None else ""
        if rows_above is None:  # the cursor sits at the end of the typed text, or below the live lines
            rows_above = len(typed) // columns if self.prompt is not None else 0
        up = self._drawn + rows_above
        parts = ["\r", f"\033[{up}A" if up else "", "\033[J"]  # to the top of the live lines; clear below
        parts += [f"{line}\n" for line in lines]
        live = [text[:columns - 1] for text in self._live.values()]  # one row each, never wrapped
        parts += [f"{text}\n" for text in live]
        self._drawn = len(live)
        parts.append(typed)
        self._write("".join(parts))

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # a closed pipe (its reader quit) or a closed file
            self.closed = True
            silence(self.out)
            if self.on_close is not None:
                self.on_close()

    def _columns(self) -> int:
        try:
            return max(20, os.get_terminal_size(self.out.fileno()).columns)
        except (AttributeError, OSError, ValueError):
            return max(20, shutil.get_terminal_size().columns)


class ConsoleCourier:
    """Shows a job's progress as a bar and saves the finished video to a folder."""

    def __init__(self, out: TextIO, output_dir: Path, *, fallback_dir: Path | None = None):
        self.out = out
        self.screen = Screen(out)
        self.output_dir = output_dir
        self.fallback_dir = fallback_dir  # where a video goes when its own place fails
        self.finished: dict[int, asyncio.Future[Path | None]] = {}
        self._last_stage: dict[int, str] = {}

    def watch(self, job_id: int) -> asyncio.Future[Path | None]:
        return self.finished.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def progress(self, job: Job, update: Progress) -> None:
        text = update.text()
        line = messages.console_line(job.id, f"{_bar(update.fraction, text)}{text}")
        if self.screen.tty:
            self.screen.status(job.id, line)
        elif self._last_stage.get(job.id) != update.stage:  # in a log or pipe, one line per stage
            self._last_stage[job.id] = update.stage
            self.screen.say(line)

    async def deliver(self, job: Job, video: Video) -> None:
        wanted = wanted_path(job, self.output_dir)
        try:
            wanted.parent.mkdir(parents=True, exist_ok=True)
            dest = save_fresh(video.path, wanted)
        except OSError as err:
            dest = self._save_elsewhere(job, video.path, wanted, err)
        self._end(job, messages.console_saved(job.id, shown(dest), video.size, video.nsfw), shown(dest))

    def _save_elsewhere(self, job: Job, video: Path, wanted: Path, err: OSError) -> Path:
        """The video, paid for, saved next to where it was asked for, else in the videos
        folder, else here; the user is told where. OSError only when nowhere takes it."""
        name = f"kling-{job.id}.mp4"
        places = [wanted.parent / name, *([self.fallback_dir / name] if self.fallback_dir else []),
                  Path.cwd() / name]
        for place in places:
            try:
                place.parent.mkdir(parents=True, exist_ok=True)
                dest = save_fresh(video, place)
            except OSError:
                continue
            self.screen.say(messages.saved_elsewhere(job.id, shown(wanted), shown(dest),
                                                     str(err.strerror or err)))
            return dest
        raise err

    async def fail(self, job: Job, reason: str) -> None:
        self._end(job, messages.console_line(job.id, reason), None)

    async def refused(self, job: Job, video: Video, days: int) -> None:
        """The Courier protocol's, never met here: ``deliver`` saves a file and raises no
        ``DeliveryRefused`` (an unwritable place gets the video saved elsewhere, or fails
        the delivery), so nothing is said; should one ever come, the job's line just ends."""
        self._end(job, None, None)

    async def cancelled(self, job: Job, text: str) -> None:
        self._end(job, None, None)  # the /cancel command prints ``text``: one line per cancel

    def _end(self, job: Job, line: str | None, result: Path | None) -> None:
        self._last_stage.pop(job.id, None)
        self.screen.end(job.id, line)
        future = self.watch(job.id)
        if not future.done():
            future.set_result(result)


class ConsoleChat:
    """Turns typed commands into engine requests and prints the answers. A command
    never waits for its video; ``finish`` waits for the jobs still running."""

    def __init__(self, engine: Engine, courier: ConsoleCourier, user: UserRef, photo: bytes,
                 out: TextIO = sys.stdout):
        self.engine = engine
        self.courier = courier
        self.user = user
        self.photo = photo
        self.out = out
        self.screen = courier.screen if out is courier.out else Screen(out)
        self.max_bytes = engine.settings.media.max_download_bytes
        self.started: dict[int, asyncio.Future[Path | None]] = {}  # this chat's jobs -> their end

    def say(self, text: str) -> None:
        self.screen.say(text)

    async def read_command(self) -> str | None:
        """The next line typed (with a prompt on a terminal); None at the end of input."""
        return await self.screen.read(PROMPT if _isatty(sys.stdin) else "")

    async def handle(self, line: str) -> bool:
        """Run one command line; False when the user wants to quit."""
        command, _, rest = line.strip().partition(" ")
        command = command.lower()
        try:
            if command in ("/quit", "/exit"):
                return False
            if command in ("/help", "/start"):
                self.say(messages.console_help(len(catalog.EFFECTS), self.engine.catalog.animate_options(),
                                               self.engine.price_text()))
            elif command == "/models":
                self.say(self.engine.models_text())
            elif command == "/effects":
                self.say(messages.effects_list([catalog.effect_title(e) for e in catalog.EFFECTS]))
            elif command == "/quota":
                self.say((await self.engine.balance(self.user)).text())
            elif command == "/jobs":
                self.say(await jobs_text(self.engine, self.user))
            elif command == "/buy":  # payments happen in the chats that take them
                self.say(messages.BUY_ELSEWHERE)
            elif command == "/stats":  # whoever runs the console runs the bot: an admin
                self.say((await self.engine.stats()).text())
            elif command == "/balance":
                self.say(await self.engine.wavespeed_balance())
            elif command == "/cancel":
                self.say(await self._cancel(rest))
            elif command == "/photo":
                self.photo = self._read(rest.strip(), "photo")
                self.say(messages.using_photo(rest.strip()))
            elif command == "/effect":
                photo, text = self._trailing_photo(rest)
                args = parse_effect(text, self.engine.catalog)
                await self.generate(GenerationRequest(self.user, "effect", photo, args.params, model=args.model))
            elif command == "/animate":
                photo, text = self._leading_photo(rest)
                args = parse_animate(text, self.engine.catalog)
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

    def _trailing_photo(self, text: str) -> tuple[bytes, str]:
        """``/effect NAME [PHOTO]``: a last word that names a file, or looks like a path
        (effect names never do), is the photo; the words before it are the name."""
        words = text.split()
        if len(words) > 1 and (_is_file(words[-1]) or "/" in words[-1] or Path(words[-1]).suffix):
            return self._read(words[-1], "photo"), " ".join(words[:-1])
        return self.photo, text

    def _leading_photo(self, text: str) -> tuple[bytes, str]:
        first, _, rest = text.strip().partition(" ")
        if first and _is_file(first):
            return self._read(first, "photo"), rest
        return self.photo, text

    def _read(self, path: str, what: str) -> bytes:
        try:
            return read_limited(Path(path).expanduser(), self.max_bytes, what)
        except OSError as err:
            raise ValidationError(messages.cannot_read_file(what, path, str(err.strerror or err))) from None

    async def generate(self, request: GenerationRequest) -> Job | None:
        """Submit a request and say what became of it; the courier shows the rest while
        the chat goes on. The job, or None when it was refused."""
        answer = await self.engine.accept(request)
        self.say(answer.text)
        if not isinstance(answer, Accepted):
            return None
        self.started[answer.job.id] = self.courier.watch(answer.job.id)
        return answer.job

    async def finish(self) -> None:
        """Wait for the jobs of this chat still running (at the end of input)."""
        waiting = {job_id: end for job_id, end in self.started.items() if not end.done()}
        if waiting:
            self.say(messages.console_waiting(sorted(waiting)))
        while waiting:
            await asyncio.wait(waiting.values(), timeout=WAIT_CHECK)
            # A job that ended without its courier hearing of it is not waited for forever.
            active = {job.id for job, _ in await self.engine.jobs_of(self.user)}
            waiting = {job_id: end for job_id, end in waiting.items()
                       if not end.done() and job_id in active}
        self.started.clear()

    async def _cancel(self, rest: str) -> str:
        return await cancel_job(self.engine, self.user, rest, messages.CONSOLE_CANCEL_USAGE)


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """A file's bytes, reading at most ``limit`` + 1 of them: a larger file (or an endless
    one such as /dev/zero) is refused, not read into memory. OSError when unreadable."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
        if len(data) > limit:
            size = max(len(data), os.fstat(file.fileno()).st_size)
            raise ValidationError(messages.media_too_large(what, size, limit))
    return data


def _bar(fraction: float | None, text: str, width: int = 20) -> str:
    """``[#####...............] `` before a progress text (with the percentage, unless
    the text says it already); nothing when there is no estimate."""
    if fraction is None:
        return ""
    filled = int(fraction * width)
    percent = f"{fraction:.0%}"
    return f"[{'#' * filled}{'.' * (width - filled)}] " + ("" if percent in text else f"{percent:>4} ")


def wanted_path(job: Job, output_dir: Path) -> Path:
    """Where a job's video should go: what ``generate -o`` asked for (kept with the job,
    so a process that takes the job over saves it there too), else ``output_dir``."""
    asked = job.reply_to.get("save_to")
    if isinstance(asked, str) and asked:
        return Path(asked) / f"kling-{job.id}.mp4" if job.reply_to.get("into_folder") else Path(asked)
    return output_dir / f"job-{job.id}-{_slug(job.label)}.mp4"


def shown(path: Path) -> Path:
    """A path as the user reads it: relative to the current folder when inside it."""
    try:
        return path.relative_to(Path.cwd()) if path.is_absolute() else path
    except ValueError:
        return path


def silence(stream: TextIO) -> None:
    """Send what is still written to ``stream`` to /dev/null: its reader is gone, and the
    exit's flush (or a log line) must not fail on it again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _slug(text: str) -> str:
    kept = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in kept.split("-") if part)[:40] or "video"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _line_editor() -> Any:
    """readline (imported: input() then edits lines, keeps a history and shows the buffer),
    when it can say that the prompt is on screen; else None."""
    try:
        import readline
    except ImportError:
        return None
    return readline if hasattr(readline, "set_pre_input_hook") else None


def _typed_so_far() -> str:
    """What the user has typed at the prompt so far (when input() edits with readline)."""
    editor = sys.modules.get("readline")
    try:
        return str(editor.get_line_buffer()) if editor is not None else ""
    except Exception:
        return ""


def _settle(answer: asyncio.Future[str | None], line: str | None) -> None:
    if not answer.done():
        answer.set_result(line)


def _is_file(word: str) -> bool:
    """Whether a word names an existing file (a word too long for a file name does not)."""
    try:
        return Path(word).expanduser().is_file()
    except (OSError, ValueError):
        return False
